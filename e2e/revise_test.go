package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// termsView is the part of an SSA's terms the revision tests read from `ssa show --json`.
type termsView struct {
	SSAID   string   `json:"ssa_id"`
	State   string   `json:"state"`
	Reasons []reason `json:"reasons"`
	SSA     *struct {
		ID          string `json:"id"`
		Version     int    `json:"version"`
		Information []struct {
			Type   string `json:"type"`
			Format string `json:"format"`
		} `json:"information"`
		Policy struct {
			Handling struct {
				TLP            string `json:"tlp"`
				Retention      string `json:"retention"`
				Redistribution string `json:"redistribution"`
			} `json:"handling"`
		} `json:"policy"`
		Schedule struct {
			Start string `json:"start"`
			End   string `json:"end"`
		} `json:"schedule"`
	} `json:"ssa"`
}

func (a *agent) terms(id string) termsView {
	a.t.Helper()
	var v termsView
	a.query(&v, "ssa", "show", id)
	if v.SSA == nil {
		a.t.Fatalf("%s: ssa show %s: no SSA", a.name, id)
	}
	return v
}

// revise runs `ssanet ssa revise ID args…` and returns the SSA in force it prints (JSON).
func (a *agent) revise(id string, args ...string) (termsView, result) {
	a.t.Helper()
	r := a.cli(append([]string{"--json", "ssa", "revise", id, "--wait", "20s"}, args...)...)
	checkReasonsDecoded(a.t, r)
	var v termsView
	if r.stdout != "" {
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			a.t.Fatalf("%s: %v\n%s", a.name, err, r)
		}
	}
	return v, r
}

// parseTime reads an RFC 3339 time from a view.
func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("time %q: %v", s, err)
	}
	return v
}

// TestRevisionFlow: revisions of an SSA in force, each met against the provider's current
// offer. A partial template changes only what it gives, start: now included; the request's
// own template is accepted as a revision (the meet makes it as strict as the offer);
// --set changes single values; a revision that conflicts with the offer is refused by the
// provider with a reason naming the component, and the version in force stays on both sides;
// a provider cannot send a revision its own offer does not allow; a bad path or value is a
// usage error that says what can be set.
func TestRevisionFlow(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	v1 := agree(t, req, prov, testdata(t, "requester.yaml"))
	in1 := req.terms(v1)

	// A partial revision with start: now, accepted as met.
	before := time.Now().Truncate(time.Second)
	v, r := req.revise(v1, "--template", testdata(t, "revision-partial.yaml"))
	if r.code != 0 || v.State != "approved" || v.SSA.Version != 2 {
		t.Fatalf("partial revision: want approved version 2, exit 0: %s", r)
	}
	v2 := v.SSAID
	h := v.SSA.Policy.Handling
	if h.Retention != "30d" || h.TLP != in1.SSA.Policy.Handling.TLP || h.Redistribution != in1.SSA.Policy.Handling.Redistribution {
		t.Errorf("handling after the partial revision %+v, want retention 30d and the rest as in v1 %+v", h, in1.SSA.Policy.Handling)
	}
	if start := parseTime(t, v.SSA.Schedule.Start); start.Before(before) || v.SSA.Schedule.End != in1.SSA.Schedule.End {
		t.Errorf("schedule after start: now: %+v, want a start at or after %s and v1's end %s", v.SSA.Schedule, before, in1.SSA.Schedule.End)
	}
	if p := prov.waitState(v2, "approved", settle); p.SSA == nil || p.SSA.Version != 2 {
		t.Errorf("provider after the partial revision: %+v", p)
	}

	// The request's own template as a revision: met against the offer, so accepted.
	v, r = req.revise(v2, "--template", testdata(t, "requester.yaml"))
	if r.code != 0 || v.State != "approved" || v.SSA.Version != 3 {
		t.Fatalf("the request template as a revision: want approved version 3, exit 0: %s", r)
	}
	if h := v.SSA.Policy.Handling; h.TLP != "AMBER" || h.Redistribution != "organisation" || h.Retention != "90d" {
		t.Errorf("handling %+v, want the meet with the offer: AMBER, organisation, 90d", h)
	}
	if len(v.SSA.Information) != 1 || v.SSA.Information[0].Format != "eve" {
		t.Errorf("information %+v, want the meet: attack-detection-log/eve only", v.SSA.Information)
	}
	v3 := v.SSAID

	// --set, with a short path, a lower-case TLP and a relative end.
	v, r = req.revise(v3, "--set", "handling.tlp=red", "--set", "schedule.end=now+30d")
	if r.code != 0 || v.State != "approved" || v.SSA.Version != 4 {
		t.Fatalf("--set: want approved version 4, exit 0: %s", r)
	}
	if left := time.Until(parseTime(t, v.SSA.Schedule.End)); v.SSA.Policy.Handling.TLP != "RED" || left > 31*24*time.Hour || left < 29*24*time.Hour {
		t.Errorf("after --set: TLP %s, end %s; want RED and about 30 days from now", v.SSA.Policy.Handling.TLP, v.SSA.Schedule.End)
	}
	v4 := v.SSAID
	if got := prov.terms(v4); got.State != "approved" || got.SSA.Policy.Handling.TLP != "RED" {
		t.Errorf("provider after --set: %s TLP %s", got.State, got.SSA.Policy.Handling.TLP)
	}

	// Conflicts with the offer: refused by the provider, naming the component.
	for _, tc := range []struct {
		name, component string
		args            []string
	}{
		{"information not offered", "information", []string{"--set", "information=[{type: blacklist, format: syslog}]"}},
		{"public IPs unmasked", "policy.masking", []string{"--template", testdata(t, "revision-unmasked.yaml")}},
	} {
		v, r := req.revise(v4, tc.args...)
		if r.code != 3 || v.SSAID != v4 || !slices.ContainsFunc(v.Reasons, func(c reason) bool { return c.Component == tc.component }) ||
			!strings.Contains(r.stderr, "refused the revision") {
			t.Errorf("%s: want exit 3, %s in force and a reason naming %s: %s", tc.name, v4, tc.component, r)
		}
		for _, a := range []*agent{req, prov} {
			if got := a.waitState(v4, "approved", settle); got.SSAID != v4 {
				t.Errorf("%s: %s holds %s, want %s in force", tc.name, a.name, got.SSAID, v4)
			}
		}
	}
	tr := req.transcript(v4)
	if last := tr[len(tr)-1]; last.Type != "rejection" || last.Sender != prov.peerID() {
		t.Errorf("the last message is a %s from %s, want the provider's rejection", last.Type, last.Sender)
	}

	// The provider's own revision must satisfy its offer.
	if r := prov.cli("ssa", "revise", v4, "--set", "handling.tlp=green"); r.code != 2 || !strings.Contains(r.stderr, "policy.handling") ||
		!strings.Contains(r.stderr, "offer") || strings.Contains(r.stderr, "proposal") {
		t.Errorf("a provider revision weaker than its offer: want exit 2 naming policy.handling and the offer: %s", r)
	}
	// The provider revises with start: now; the requester accepts it.
	dir := t.TempDir()
	startNow := filepath.Join(dir, "start-now.yaml")
	if err := os.WriteFile(startNow, []byte("schedule:\n  start: now\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, r = prov.revise(v4, "--template", startNow)
	if r.code != 0 || v.State != "approved" || v.SSA.Version != 5 {
		t.Fatalf("the provider's revision with start: now: want approved version 5, exit 0: %s", r)
	}
	req.waitState(v.SSAID, "approved", settle)

	// Bad input: a usage error that says what is wrong.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "handling.colour=red"}, "policy.handling.tlp"},
		{[]string{"--set", "handling.tlp=purple"}, "unknown TLP"},
		{[]string{"--set", "schedule.end=next week"}, "schedule.end"},
		{[]string{}, "--template FILE, --set PATH=VALUE"},
	} {
		if r := req.cli(append([]string{"ssa", "revise", v.SSAID}, tc.args...)...); r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("ssa revise %v: want exit 2 and %q: %s", tc.args, tc.want, r)
		}
	}
}
