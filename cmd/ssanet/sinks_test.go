package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/agent/sink"
)

// TestPrintSinkRecords: `ssanet sinks` and `monitor` show each sink's records by outcome, for
// the sink and per SSA; a receiver that confirms nothing says so, and records set aside stand
// out.
func TestPrintSinkRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    agent.SinkState
		want []string
	}{
		{"webhook set aside", agent.SinkState{Name: "hook", Type: "webhook", Confirms: true,
			Records: agent.SinkRecords{Forwarded: 10, Confirmed: 6, Failed: 3, SetAside: 4},
			SSAs:    map[string]agent.SinkSSA{"s1": {Position: 10, Records: agent.SinkRecords{Forwarded: 2, Confirmed: 2}}}},
			[]string{"  records since the agent started: forwarded 10, confirmed 6, failed 3 (at each attempt), SET ASIDE 4 (",
				"  s1: forwarded up to record 10, lag 0; forwarded 2, confirmed 2, failed 0 (at each attempt), set aside 0\n"}},
		{"stix skipped", agent.SinkState{Name: "stix", Type: "jsonl", Confirms: true,
			Records: agent.SinkRecords{Forwarded: 7, Confirmed: 7, Skipped: sink.Skips{Unmappable: 2, Unmapped: 1}}},
			[]string{"forwarded 7, confirmed 7, failed 0 (at each attempt), set aside 0, skipped 3 (no form in the sink's format: unmappable 2, unmapped 1)\n"}},
		{"tcp confirms nothing", agent.SinkState{Name: "siem", Type: "syslog", Records: agent.SinkRecords{Forwarded: 5}},
			[]string{"records since the agent started: forwarded 5, confirmed n/a (the receiver confirms nothing), failed 0 (at each attempt), set aside 0\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printSink(&b, &tc.s)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("got\n%s\nwant it to hold %q", b.String(), w)
				}
			}
		})
	}
}
