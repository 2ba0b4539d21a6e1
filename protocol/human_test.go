package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid template, to which the cases below add one thing.
const minimal = `
participants:
  requester:
    name: SOC
information:
  - type: blacklist
    format: iodef
`

func TestYAMLUnknownKeys(t *testing.T) {
	cases := []struct {
		name, doc string
		offer     bool
		key       string
		line      string
	}{
		{"top level", minimal + "nmae: x\n", false, "nmae", "line 8"},
		{"participant", "participants:\n  requester:\n    name: SOC\n    emial: a@b\ninformation:\n  - type: blacklist\n    format: iodef\n", false, "emial", "line 4"},
		{"information", minimal + "    fromat: idmef\n", false, "fromat", "line 8"},
		{"masking rule", minimal + "policy:\n  masking:\n    - scope: public-ip\n      method: truncate\n      bitz: 8\n", false, "bitz", "line 12"},
		{"handling", minimal + "policy:\n  handling:\n    tlp: RED\n    retain: 30d\n", false, "retain", "line 11"},
		{"schedule", minimal + "schedule:\n  start: now\n  until: now+30d\n", false, "until", "line 10"},
		{"signatures are not written by hand", minimal + "signatures: []\n", false, "signatures", "line 8"},
		{"offer top level", "id: o\naproval: auto\nterms:\n" + indent(minimal), true, "aproval", "line 2"},
		{"offer terms", "id: o\nterms:\n  method:\n    protocol: [x]\n" + indent(minimal), true, "protocol", "line 4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.offer {
				_, err = ParseOfferYAML([]byte(tc.doc), t0)
			} else {
				_, err = ParseSSAYAML([]byte(tc.doc), t0)
			}
			if !errors.Is(err, ErrTemplate) {
				t.Fatalf("err %v, want ErrTemplate", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.key) || !strings.Contains(msg, tc.line) {
				t.Fatalf("%q does not name the key %q and its %s", msg, tc.key, tc.line)
			}
		})
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimPrefix(s, "\n"), "\n", "\n  ")
}

func TestYAMLTimes(t *testing.T) {
	at := func(d time.Duration) Time { return FromTime(t0.Add(d)) }
	cases := []struct {
		value string
		want  Time
	}{
		{"now", at(0)},
		{"now+365d", at(365 * 24 * time.Hour)},
		{"now + 30d", at(30 * 24 * time.Hour)},
		{"now+720h", at(720 * time.Hour)},
		{"now+90m", at(90 * time.Minute)},
		{"now+3600", at(time.Hour)},
		{"now-1h", at(-time.Hour)},
		{"2027-01-02T03:04:05Z", FromTime(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC))},
		{"2027-01-02T03:04:05+02:00", FromTime(time.Date(2027, 1, 2, 1, 4, 5, 0, time.UTC))},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			s, err := ParseSSAYAML([]byte(minimal+"expires: "+tc.value+"\ndate: "+tc.value+"\n"), t0)
			if err != nil {
				t.Fatal(err)
			}
			if s.Expires != tc.want || s.Date != tc.want {
				t.Fatalf("expires %s, date %s, want %s", s.Expires, s.Date, tc.want)
			}
		})
	}
	for _, bad := range []string{"tomorrow", "now+", "now+3x", "now*2", "2027-01-02", "now+200000000d", "now-200000000d", "now+9223372036854775807"} {
		t.Run("refused "+bad, func(t *testing.T) {
			_, err := ParseSSAYAML([]byte(minimal+"schedule:\n  end: "+bad+"\n"), t0)
			if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), "line 9") {
				t.Fatalf("err %v, want ErrTemplate at line 9", err)
			}
		})
	}
	t.Run("the example requester is always current", func(t *testing.T) {
		for _, now := range []time.Time{t0, t0.AddDate(5, 0, 0), t0.AddDate(50, 0, 0)} {
			s := exampleRequest(t, now)
			if s.Schedule.Start != FromTime(now) || s.Schedule.End != FromTime(now.AddDate(0, 0, 365)) {
				t.Fatalf("at %s: schedule %s", now, describeSchedule(s.Schedule))
			}
		}
	})
	t.Run("only time keys are resolved", func(t *testing.T) {
		s, err := ParseSSAYAML([]byte(minimal+"participants:\n  requester:\n    name: now\n"), t0)
		if err == nil && s.Participants.Requester.Name != "now" {
			t.Fatalf("a name %q", s.Participants.Requester.Name)
		}
		s, err = ParseSSAYAML([]byte(minimal+"other:\n  window:\n    start: now\n"), t0)
		if err != nil {
			t.Fatal(err)
		}
		if got := plainOther(t, s)["window"]; got.(map[string]any)["start"] != "now" {
			t.Fatalf("an extension value was rewritten: %v", got)
		}
	})
}

func plainOther(t *testing.T, s *SSA) map[string]any {
	t.Helper()
	m, err := s.Other.plain()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestYAMLDurations(t *testing.T) {
	cases := []struct {
		text string
		want Duration
		err  bool
	}{
		{"90m", 5400, false},
		{"720h", 2592000, false},
		{"30d", 2592000, false},
		{"3600", 3600, false},
		{"1h30m", 5400, false},
		{"1.5h", 5400, false},
		{" 45s ", 45, false},
		{"0", 0, false},
		{"-90m", -5400, false},
		{"9223372036", 9223372036, false},
		{"9223372037", 9223372037, false},
		{"9223372036854775807", 9223372036854775807, false},
		{"-9223372036854775808", -9223372036854775808, false},
		{"106751991167300d", 106751991167300 * 86400, false},
		{"1500ms", 0, true},
		{"10x", 0, true},
		{"", 0, true},
		{"d", 0, true},
		{"1.5d", 0, true},
		{"99999999999999999d", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.text, func(t *testing.T) {
			got, err := ParseDuration(tc.text)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseDuration: %d, %v", got, err)
			}
			if tc.err {
				return
			}
			back, err := ParseDuration(got.String())
			if err != nil || back != got {
				t.Fatalf("%s written as %q reads back as %d, %v", tc.text, got.String(), back, err)
			}
		})
	}
	t.Run("in a template", func(t *testing.T) {
		s, err := ParseSSAYAML([]byte(minimal+"policy:\n  summarization: {group-by: source.ip, rank-by: count, top: 10, window: 90m}\n  handling: {retention: 30d}\n"), t0)
		if err != nil {
			t.Fatal(err)
		}
		if s.Policy.Summarization.Window != 5400 || s.Policy.Handling.Retention != 30*86400 {
			t.Fatalf("window %d, retention %d", s.Policy.Summarization.Window, s.Policy.Handling.Retention)
		}
		o, err := ParseOfferYAML([]byte("id: o\nproposal-validity: 3600\nterms:\n"+indent(minimal)), t0)
		if err != nil || o.Validity() != 3600 {
			t.Fatalf("offer: %v, validity %d", err, o.Validity())
		}
		_, err = ParseSSAYAML([]byte(minimal+"policy:\n  handling: {retention: 1500ms}\n"), t0)
		if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), "line 9") {
			t.Fatalf("a fractional retention: %v", err)
		}
	})
}

func TestYAMLOtherRefusesFloats(t *testing.T) {
	for _, v := range []string{"1.5", "1e3", ".inf", ".nan", "[1, 2.5]", "{a: 0.1}", "{1: 0.5}", "{0.5: a}", "[{a: [{b: 2.0}]}]", "{1: {2: [0.5]}}"} {
		t.Run(v, func(t *testing.T) {
			_, err := ParseSSAYAML([]byte(minimal+"other:\n  x: "+v+"\n"), t0)
			if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), "other.x") || !strings.Contains(err.Error(), "floating-point") {
				t.Fatalf("err %v, want one naming other.x and floating-point values", err)
			}
		})
	}
	for _, v := range []string{"1", "-7", "text", "'1.5'", "[1, two]", "{a: {b: [true, null]}}"} {
		t.Run("accepted "+v, func(t *testing.T) {
			s, err := ParseSSAYAML([]byte(minimal+"other:\n  x: "+v+"\n"), t0)
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeSSA(b); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestYAMLRoundTrip reads templates, writes them as YAML and reads them again: the SSA does
// not change.
func TestYAMLRoundTrip(t *testing.T) {
	pr := newPair(t)
	rout, _ := pr.approve()
	agreed := rout.Agreement.Clone()
	agreed.Signatures = nil // not part of the human form
	agreed.Policy.Summarization = &Summarization{GroupBy: "source.ip", RankBy: "source.bytes", TopN: 10, Window: 3600}
	agreed.Policy.Masking = append(agreed.Policy.Masking, MaskRule{Scope: ScopeFields, Fields: []string{"user.name", "host.name"}, Method: MaskHMAC, KeyID: "site-a"})
	cases := map[string]*SSA{
		"example requester": exampleRequest(t, t0),
		"offer terms":       &exampleOffer(t, t0).Terms,
		"agreed SSA":        agreed,
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			want, err := s.Encode()
			if err != nil {
				t.Fatal(err)
			}
			y, err := s.YAML()
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseSSAYAML(y, t0.AddDate(3, 0, 0)) // absolute times: now does not matter
			if err != nil {
				t.Fatalf("%v\n%s", err, y)
			}
			got, err := back.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("round trip changed the SSA:\n%s", y)
			}
			y2, err := back.YAML()
			if err != nil || !bytes.Equal(y, y2) {
				t.Fatalf("YAML not stable: %v\n%s\n---\n%s", err, y, y2)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	pr := newPair(t)
	rout, _ := pr.approve()
	b, err := json.Marshal(rout.Agreement)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	get := func(path ...string) any {
		var v any = m
		for _, p := range path {
			mm, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%s: not an object in %s", strings.Join(path, "."), b)
			}
			v = mm[p]
		}
		return v
	}
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"status"}, "approval"},
		{[]string{"date"}, "2026-11-23T12:00:00Z"},
		{[]string{"expires"}, nil}, // an agreement carries no validity limit
		{[]string{"schedule", "start"}, "2026-11-23T12:00:00Z"},
		{[]string{"schedule", "end"}, "2027-11-23T12:00:00Z"},
		{[]string{"policy", "handling", "retention"}, "90d"},
		{[]string{"policy", "handling", "tlp"}, "AMBER"},
		{[]string{"other", "ticket"}, "CERT-2026-0042"},
		{[]string{"participants", "requester", "peer_id"}, pr.rid.PeerID().String()},
		{[]string{"information"}, []any{map[string]any{"name": "IDS alerts", "type": "attack-detection-log", "format": "eve"}}},
	}
	for _, c := range checks {
		got, _ := json.Marshal(get(c.path...))
		want, _ := json.Marshal(c.want)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %s, want %s", strings.Join(c.path, "."), got, want)
		}
	}
	if sigs, ok := m["signatures"].([]any); !ok || len(sigs) != 2 {
		t.Errorf("signatures: %v", m["signatures"])
	}
	for _, n := range []any{Status(9), Time(0)} {
		if _, err := json.Marshal(n); err != nil {
			t.Errorf("%T: %v", n, err)
		}
	}
	var st Status
	if err := json.Unmarshal([]byte(`"annulment"`), &st); err != nil || st != StatusAnnulment {
		t.Errorf("status read back: %v %v", st, err)
	}
	var tm Time
	if err := json.Unmarshal([]byte(`"2026-11-23T12:00:00Z"`), &tm); err != nil || tm != FromTime(t0) {
		t.Errorf("time read back: %v %v", tm, err)
	}
}
