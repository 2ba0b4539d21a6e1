package protocol

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// inForce is the SSA in force of the revision tests: the meet of the example request and
// offer at t0, approved.
func inForce(t *testing.T) *SSA {
	t.Helper()
	s, conflicts := Meet(exampleRequest(t, t0), exampleOffer(t, t0), FromTime(t0))
	if conflicts != nil {
		t.Fatal(conflicts)
	}
	s.Status, s.Expires = StatusApproval, 0
	return s
}

// TestRevisionTerms builds revisions from templates and sets over the SSA in force: what is
// given replaces what is in force, path by path; everything else stays.
func TestRevisionTerms(t *testing.T) {
	later := t0.Add(48 * time.Hour)
	cases := []struct {
		name     string
		template string
		sets     []string
		check    func(t *testing.T, old, got *SSA)
		err      error
		errText  string
	}{
		{name: "partial template: one handling value", template: "policy:\n  handling:\n    retention: 30d\n",
			check: func(t *testing.T, old, got *SSA) {
				h := got.Policy.Handling
				if h.Retention != 30*86400 || h.TLP != old.Policy.Handling.TLP || h.Redistribution != old.Policy.Handling.Redistribution {
					t.Errorf("handling %+v, want retention 30d and the rest as in force %+v", h, old.Policy.Handling)
				}
				if changed := Changed(old, got); !slices.Equal(changed, []string{"policy.handling"}) {
					t.Errorf("changed %v, want only policy.handling", changed)
				}
			}},
		{name: "set with a short path, lower case TLP and a relative end", sets: []string{"handling.tlp=red", "schedule.end=now+30d"},
			check: func(t *testing.T, old, got *SSA) {
				if got.Policy.Handling.TLP != TLPRed || got.Schedule.End != FromTime(later.Add(30*24*time.Hour)) || got.Schedule.Start != old.Schedule.Start {
					t.Errorf("handling %+v schedule %+v", got.Policy.Handling, got.Schedule)
				}
			}},
		{name: "start: now is read at now", template: "schedule:\n  start: now\n",
			check: func(t *testing.T, old, got *SSA) {
				if got.Schedule.Start != FromTime(later) || got.Schedule.End != old.Schedule.End {
					t.Errorf("schedule %+v, want start %s and the end in force", got.Schedule, later)
				}
			}},
		{name: "the request template, with its ID, status and participants, as a revision", template: string(ExampleRequester) +
			"id: ssa-other-id\nstatus: proposal\nversion: 7\n",
			check: func(t *testing.T, old, got *SSA) {
				if got.ID != old.ID || got.Version != old.Version || got.Status != old.Status || got.Participants != old.Participants {
					t.Errorf("the template's ID, version, status or participants were taken: %s v%d %s %+v", got.ID, got.Version, got.Status, got.Participants)
				}
				if len(got.Information) != 2 || got.Policy.Handling.TLP != TLPGreen {
					t.Errorf("the template's terms were not taken: %+v %+v", got.Information, got.Policy.Handling)
				}
			}},
		{name: "a list replaces the one in force", sets: []string{"method.security=[tls]", "other.ticket=CERT-2", "filtering=[]"},
			check: func(t *testing.T, old, got *SSA) {
				if !slices.Equal(got.Method.Security, []string{"tls"}) || !slices.Equal(got.Method.Protocols, old.Method.Protocols) {
					t.Errorf("method %+v", got.Method)
				}
				if got.Policy == nil || len(got.Policy.Filtering) != 0 || len(got.Policy.Masking) == 0 {
					t.Errorf("policy %+v: want no filter and the masking in force", got.Policy)
				}
				if !slices.Equal(Changed(old, got), []string{"policy.filtering", "method.security", "other.ticket"}) {
					t.Errorf("changed %v", Changed(old, got))
				}
			}},
		{name: "an empty value clears the path", sets: []string{"schedule.end=", "other.ticket=", "handling.tlp= "},
			check: func(t *testing.T, old, got *SSA) {
				if got.Schedule.End != 0 || got.Schedule.Start != old.Schedule.Start || len(got.Other) != 0 || got.Policy.Handling.TLP != "" ||
					got.Policy.Handling.Retention != old.Policy.Handling.Retention {
					t.Errorf("schedule %+v other %v handling %+v; want an open end, no other component, no TLP", got.Schedule, got.Other, got.Policy.Handling)
				}
			}},
		{name: "unknown path", sets: []string{"handling.colour=red"}, err: ErrRevisionPath, errText: "policy.handling.tlp"},
		{name: "no value", sets: []string{"handling.tlp"}, err: ErrTemplate, errText: "path=value"},
		{name: "bad TLP", sets: []string{"handling.tlp=purple"}, err: ErrInvalidSSA, errText: "unknown TLP \"PURPLE\""},
		{name: "bad duration", sets: []string{"handling.retention=soon"}, err: ErrTemplate, errText: "handling.retention"},
		{name: "schedule ends before it starts", sets: []string{"schedule.end=now-1d", "schedule.start=now"}, err: ErrInvalidSSA, errText: "ends"},
		{name: "unknown template key", template: "policy:\n  handlin:\n    tlp: RED\n", err: ErrTemplate, errText: "handlin"},
		{name: "template with nothing negotiable", template: "id: ssa-x\n", err: ErrTemplate, errText: "nothing to revise"},
		{name: "nothing at all", err: ErrTemplate, errText: "needs a template or a value"},
		{name: "no information left", sets: []string{"information=[]"}, err: ErrInvalidSSA, errText: "shares no information"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := inForce(t)
			keep := old.Clone()
			got, err := RevisionTerms(old, []byte(tc.template), tc.sets, later)
			if !reflectEqual(old, keep) {
				t.Error("RevisionTerms changed the SSA in force")
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err %v, want %v containing %q", err, tc.err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, old, got)
		})
	}
}

func reflectEqual(a, b *SSA) bool {
	x, err1 := a.Encode()
	y, err2 := b.Encode()
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// TestMeetRevision meets revisions with the offer as requests are met: one the offer allows
// has no reasons; one that conflicts, or that is weaker than the offer requires, has a
// reason naming each component, and speaks of a revision.
func TestMeetRevision(t *testing.T) {
	offer := exampleOffer(t, t0)
	cases := []struct {
		name       string
		sets       []string
		components []string
	}{
		{"allowed: shorter retention, start now", []string{"handling.retention=30d", "schedule.start=now"}, nil},
		{"information not offered", []string{"information=[{type: blacklist, format: syslog}]"}, []string{"information"}},
		{"weaker TLP than the offer", []string{"handling.tlp=green"}, []string{"policy.handling"}},
		{"unmasked public IPs", []string{"masking=[{scope: public-ip, method: none}]"}, []string{"policy.masking"}},
		{"schedule already over", []string{"schedule.end=now-1h", "schedule.start=now-2h"}, []string{"schedule"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rev, err := RevisionTerms(inForce(t), nil, tc.sets, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range MeetRevision(rev, offer, FromTime(t0.Add(time.Hour))) {
				got = append(got, r.Component)
				if strings.Contains(r.Text, "proposal") {
					t.Errorf("a reason about a revision speaks of a proposal: %s", r)
				}
			}
			if !slices.Equal(got, tc.components) {
				t.Errorf("reasons name %v, want %v", got, tc.components)
			}
		})
	}
}

// TestRevisionSatisfies judges a received revision against a template only in the components
// it changes: a schedule starting now (inside the template's window) is accepted, a longer
// one is refused naming the schedule, and a component the template no longer allows but the
// revision leaves as agreed is not held against it.
func TestRevisionSatisfies(t *testing.T) {
	req := exampleRequest(t, t0)
	now := t0.Add(24 * time.Hour)
	cases := []struct {
		name       string
		sets       []string
		template   func(*SSA)
		components []string
	}{
		{"start now", []string{"schedule.start=now"}, nil, nil},
		{"stricter TLP", []string{"handling.tlp=red"}, nil, nil},
		{"end beyond the template's", []string{"schedule.end=now+365d"}, nil, []string{"schedule"}},
		{"fewer filters", []string{"filtering=[]"}, nil, []string{"policy.filtering"}},
		{"unchanged component the template now refuses", []string{"handling.tlp=red"},
			func(s *SSA) { s.Other = Extensions{"ticket": []byte{0x61, 0x78}} }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old := inForce(t)
			rev, err := RevisionTerms(old, nil, tc.sets, now)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := req.Clone()
			if tc.template != nil {
				tc.template(tmpl)
			}
			var got []string
			for _, r := range RevisionSatisfies(rev, old, tmpl) {
				got = append(got, r.Component)
				if !strings.Contains(r.Text, "revision") {
					t.Errorf("reason %s does not name the revision", r)
				}
			}
			if !slices.Equal(got, tc.components) {
				t.Errorf("reasons name %v, want %v", got, tc.components)
			}
		})
	}
}

// FuzzRevisionTerms: no template or set an operator writes makes RevisionTerms panic, and
// whatever it returns is a valid SSA that shares something and keeps the identity in force.
func FuzzRevisionTerms(f *testing.F) {
	f.Add([]byte("policy:\n  handling:\n    retention: 30d\n"), "handling.tlp=amber")
	f.Add(ExampleRequester, "schedule.end=now+30d")
	f.Add([]byte("other:\n  a.b: 1\n"), "information=[{type: incident, format: iodef}]")
	f.Add([]byte{}, "masking=[{scope: fields, fields: [user.name], method: hmac}]")
	f.Fuzz(func(t *testing.T, template []byte, set string) {
		old := inForce(t)
		got, err := RevisionTerms(old, template, []string{set}, t0)
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil || len(got.Information) == 0 {
			t.Fatalf("RevisionTerms returned an SSA that is not valid: %v (%+v)", err, got)
		}
		if got.ID != old.ID || got.Version != old.Version || got.Participants != old.Participants {
			t.Fatalf("RevisionTerms changed the identity in force: %s v%d %+v", got.ID, got.Version, got.Participants)
		}
		if _, err := got.Encode(); err != nil {
			t.Fatalf("the revision does not encode: %v", err)
		}
	})
}
