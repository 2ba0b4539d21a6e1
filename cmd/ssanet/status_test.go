package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssanet/ssanet/agent"
)

// TestPrintStatus: `ssanet status` prints one screen of aligned tables, says what is not
// there, lists why a verdict is not fulfilled and each sink's last error below the tables,
// caps each table at statusRows rows and says how many more there are; --json prints the
// snapshot whole.
func TestPrintStatus(t *testing.T) {
	at := time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)
	peerA := "12D3KooWGa1smxsYmPnJpnGxKHkbxHsAv5YwCgHmNRRnoqzaKct8"
	busy := &agent.Status{Peer: "12D3KooWself", Time: at, Ended: 2, WindowSeconds: 10,
		Peers: []agent.PeerView{
			{Peer: peerA, Connected: true, Allowed: true, Negotiations: 3, Addrs: []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.1/tcp/4001"}},
			{Peer: "12D3KooWshort", Allowed: false, LastErrorKind: "unreachable", LastErrorAt: at}},
		Agreements: []agent.AgreementStatus{
			{SSAID: "ssa-1", Peer: peerA, Role: "requester", State: "approved", Phase: agent.PhaseExecution, Verdict: agent.VerdictFulfilled},
			{SSAID: "ssa-22", Peer: peerA, Role: "requester", State: "approved", Phase: agent.PhaseExecution, Verdict: agent.VerdictDegraded,
				Reasons: []string{"sink siem lags", "no fulfilment report from the provider"}},
			{SSAID: "ssa-333", Peer: peerA, Role: "provider", State: "approved", Phase: agent.PhaseExecution},
			{SSAID: "ssa-4", Peer: peerA, Role: "requester", State: "approved", Phase: agent.PhaseExecution, AssessError: "store closed"}},
		Flows: []agent.Flow{{SSAID: "ssa-1", Role: "requester", In: 1200, Out: 2400, InRate: 12.25, OutRate: 24.5}},
		Sinks: []agent.SinkState{
			{Name: "siem", Type: "syslog", Errors: 7, FailingSince: at, LastError: "dial tcp 127.0.0.1:514: connection refused", LastErrorTime: at,
				SSAs: map[string]agent.SinkSSA{"ssa-22": {Position: 10, Lag: 990}, "ssa-1": {Position: 1200}}},
			{Name: "hook", Type: "webhook", Stopped: "the poison file cannot be written"}},
	}
	var many []agent.AgreementStatus
	for i := range statusRows + 3 {
		many = append(many, agent.AgreementStatus{SSAID: fmt.Sprintf("ssa-%02d", i), Role: "provider", State: "approved", Phase: agent.PhaseExecution})
	}
	for _, tc := range []struct {
		name string
		st   *agent.Status
		want string
	}{
		{"empty", &agent.Status{Peer: "12D3KooWself", Time: at}, `agent 12D3KooWself  2026-12-06T17:00:00Z

AGREEMENTS
  none under negotiation or in force

FLOWS  (records/s over the last 0s; in, out: records in all)
  no SSA in force

SINKS
  none configured (config.yaml: sinks)

PEERS  (0 known, 0 connected; ssanet peers shows all addresses and errors)
  none known
`},
		{"busy", busy, `agent 12D3KooWself  2026-12-06T17:00:00Z

AGREEMENTS  (2 ended, not listed)
  SSA      PEER             ROLE       STATE     PHASE      VERDICT
  ssa-1    12D3KooW…zaKct8  requester  approved  execution  fulfilled
  ssa-22   12D3KooW…zaKct8  requester  approved  execution  degraded
  ssa-333  12D3KooW…zaKct8  provider   approved  execution  -
  ssa-4    12D3KooW…zaKct8  requester  approved  execution  not assessed
  ssa-22 degraded: sink siem lags; no fulfilment report from the provider
  ssa-4 not assessed: store closed

FLOWS  (records/s over the last 10s; in, out: records in all)
  SSA    ROLE       IN/S  OUT/S  IN    OUT
  ssa-1  requester  12.2  24.5   1200  2400

SINKS
  SINK  TYPE     STATE    SSA     POSITION  LAG  ERRORS
  siem  syslog   FAILING  ssa-1   1200      0    7
  siem  syslog   FAILING  ssa-22  10        990  7
  hook  webhook  STOPPED  -                      0
  siem last error 2026-12-06T17:00:00Z: dial tcp 127.0.0.1:514: connection refused
  hook stopped: the poison file cannot be written

PEERS  (2 known, 1 connected; ssanet peers shows all addresses and errors)
  PEER             STATE                NEGOTIATIONS  ADDRESS                       LAST ERROR
  12D3KooW…zaKct8  connected            3             /ip4/127.0.0.1/tcp/4001 (+1)  -
  12D3KooWshort    known (not allowed)  0             -                             unreachable at 2026-12-06T17:00:00Z
`},
		{"capped", &agent.Status{Peer: "12D3KooWself", Time: at, Agreements: many}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printStatus(&b, tc.st, false); err != nil {
				t.Fatal(err)
			}
			got := b.String()
			if tc.want != "" && got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			if lines := strings.Count(got, "\n"); lines > 50 {
				t.Errorf("%d lines: more than one screen", lines)
			}
			for _, l := range strings.Split(got, "\n") {
				if n := utf8.RuneCountInString(l); n > 160 {
					t.Errorf("line of %d characters: %q", n, l)
				}
			}
			var js bytes.Buffer
			if err := printStatus(&js, tc.st, true); err != nil {
				t.Fatal(err)
			}
			var back agent.Status
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || fmt.Sprint(&back) != fmt.Sprint(tc.st) {
				t.Errorf("--json: %v\n%s\nwant %+v", err, js.String(), tc.st)
			}
		})
	}
	t.Run("capped rows say how many more", func(t *testing.T) {
		var b bytes.Buffer
		if err := printStatus(&b, &agent.Status{Peer: "p", Time: at, Agreements: many}, false); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if !strings.Contains(got, "ssa-11 ") || strings.Contains(got, "ssa-12 ") ||
			!strings.Contains(got, "  … and 3 more (ssanet status --json lists all)\n") {
			t.Errorf("got\n%s", got)
		}
	})
}

// TestCLIStatus: `ssanet status` against a running daemon with a sink and no agreement yet,
// as text and as JSON; it takes no arguments.
func TestCLIStatus(t *testing.T) {
	sinkFile := filepath.Join(t.TempDir(), "out.jsonl") // not in the working directory, the package's
	home := startDaemon(t, func(c string) string { return c + "sinks:\n  - {type: jsonl, path: " + sinkFile + "}\n" })
	out, errs, code := ssanet(t, "--home", home, "status")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errs)
	}
	for _, want := range []string{"\nAGREEMENTS\n  none under negotiation or in force\n", "\n  no SSA in force\n",
		"\nSINKS\n  SINK   TYPE   STATE  SSA  POSITION  LAG  ERRORS\n  jsonl  jsonl  ok     -                   0\n",
		"\nPEERS  (0 known, 0 connected;"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"--home", home, "status", "--json"}, {"--home", home, "--json", "status"}} {
		out, errs, code := ssanet(t, args...)
		var st agent.Status
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil || !strings.HasPrefix(st.Peer, "12D3KooW") ||
			len(st.Sinks) != 1 || st.Sinks[0].Name != "jsonl" || st.Agreements == nil || st.Flows == nil || st.Peers == nil {
			t.Errorf("%s: exit %d: %s%s", strings.Join(args, " "), code, out, errs)
		}
	}
	runCases(t, []cliCase{
		{name: "status extra argument", args: []string{"--home", home, "status", "x"}, code: 2, errs: `unexpected "x"`},
		{name: "status no daemon", args: []string{"--home", t.TempDir(), "status"}, code: 1, errs: "no ssanet daemon runs"},
	})
}

// TestPrintStatusRoster: an agent in a community shows its roster under the agent line.
func TestPrintStatusRoster(t *testing.T) {
	at := time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		roster *agent.RosterStatus
		want   string
	}{
		{&agent.RosterStatus{Community: "cert-eu", Version: 3, Members: 10, Expires: "2027-03-06T17:00:00Z"},
			"agent 12D3KooWself  2026-12-06T17:00:00Z\ncommunity cert-eu  roster version 3, 10 members, expires 2027-03-06T17:00:00Z\n\nAGREEMENTS"},
		{&agent.RosterStatus{Community: "cert-eu", Version: 4, Members: 9, Expires: "2026-12-01T00:00:00Z", Expired: true},
			"community cert-eu  roster version 4, 9 members, EXPIRED (nobody new is admitted) at 2026-12-01T00:00:00Z\n"},
	} {
		var b strings.Builder
		if err := printStatus(&b, &agent.Status{Peer: "12D3KooWself", Time: at, Roster: tc.roster}, false); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("status of an agent in a community:\n%s\nwant it to hold:\n%s", b.String(), tc.want)
		}
	}
}
