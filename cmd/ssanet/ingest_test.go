package main

import (
	"strings"
	"testing"

	"github.com/ssanet/ssanet/agent"
)

// TestPrintIngest: the summary of `ssanet ingest` names the outcome that took the records,
// above all when none was shared.
func TestPrintIngest(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   agent.IngestStats
		want []string
	}{
		{"shared", agent.IngestStats{Records: 12, SSAs: 1, Queued: map[string]int64{"a": 10}, Filtered: map[string]int64{"a": 2}},
			[]string{"12 records read, 0 malformed", "a: 10 queued for delivery; 2 filtered out by the SSA's filter"}},
		{"outside the schedule", agent.IngestStats{Records: 12, SSAs: 1, Queued: map[string]int64{}, OutsideSchedule: map[string]int64{"a": 12}},
			[]string{"a: 12 not shared: outside the SSA's schedule", "nothing shared by the 1 SSA(s) in force that share this format"}},
		{"no SSA", agent.IngestStats{Records: 12, Queued: map[string]int64{}},
			[]string{"nothing shared: no SSA in force shares this format"}},
		{"malformed", agent.IngestStats{Records: 3, Malformed: 3, Queued: map[string]int64{}},
			[]string{"nothing shared: every record was malformed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printIngest(&b, &tc.st)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("summary:\n%s\nwant %q in it", b.String(), w)
				}
			}
			if strings.Contains(b.String(), "or its policy let nothing through") {
				t.Errorf("summary:\n%s\nstill vague", b.String())
			}
		})
	}
}
