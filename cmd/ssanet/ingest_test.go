package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
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
		{"by filter", agent.IngestStats{Records: 12, SSAs: 1, Queued: map[string]int64{"a": 5}, Filtered: map[string]int64{"a": 7},
			FilteredBy: map[string][]int64{"a": {3, 0, 2}}, FilterErrors: map[string]int64{"a": 2}},
			[]string{"a: 5 queued for delivery; 7 filtered out by the SSA's filters (filter 0: 3, filter 2: 2, not evaluable: 2)"}},
		{"outside the schedule", agent.IngestStats{Records: 12, SSAs: 1, Queued: map[string]int64{}, OutsideSchedule: map[string]int64{"a": 12}},
			[]string{"a: 12 not shared: outside the SSA's schedule", "nothing shared by the 1 SSA(s) in force that share this format"}},
		{"no SSA", agent.IngestStats{Records: 12, Queued: map[string]int64{}},
			[]string{"nothing shared: no SSA in force shares this format"}},
		{"malformed", agent.IngestStats{Records: 3, Malformed: 3, Queued: map[string]int64{}},
			[]string{"nothing shared: every record was malformed"}},
		{"untimed", agent.IngestStats{Records: 3, SSAs: 1, Queued: map[string]int64{}, Summarised: map[string]int64{"a": 2}, Untimed: map[string]int64{"a": 1}},
			[]string{"a: 2 counted in summaries; 1 not summarised: no timestamp"}},
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

// TestPrintAssessmentOutcomes: monitor shows the provider's ledger from its signed report, in
// a fixed order, and says when the outcomes do not add up to the records ingested.
func TestPrintAssessmentOutcomes(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()
	for _, tc := range []struct {
		name    string
		rep     protocol.Report
		want    []string
		notWant string
	}{
		{"every kind", protocol.Report{OutcomesIngested: 36, OutcomesSince: since, Outcomes: map[string]uint64{"shared": 1, "not_queued": 2,
			"filtered": 3, "filter_error": 4, "summarised": 5, "untimed": 6, "malformed": 7, "outside_schedule": 8}},
			[]string{"provider outcomes since 2026-01-02T03:04:05Z: 36 records ingested: shared 1, NOT queued (requester's queue full) 2, filtered out 3, filter not evaluable 4, summarised 5, no timestamp to summarise 6, malformed 7, outside the schedule 8\n"},
			"do not"},
		{"by filter", protocol.Report{OutcomesIngested: 10, OutcomesSince: since, Outcomes: map[string]uint64{"shared": 6, "filtered": 4},
			OutcomesFilteredBy: []uint64{3, 0, 1}},
			[]string{"shared 6, filtered out 4 (filter 0: 3, filter 2: 1)\n"}, "do not"},
		{"by filter does not add up", protocol.Report{OutcomesIngested: 10, OutcomesSince: since, Outcomes: map[string]uint64{"shared": 6, "filtered": 4},
			OutcomesFilteredBy: []uint64{3}},
			[]string{"filtered out by each filter sum to 3, not 4"}, ""},
		{"newer provider", protocol.Report{OutcomesIngested: 3, OutcomesSince: since, Outcomes: map[string]uint64{"shared": 1, "teleported": 2}},
			[]string{"shared 1, teleported 2"}, "does not account"},
		{"does not add up", protocol.Report{OutcomesIngested: 5, OutcomesSince: since, Outcomes: map[string]uint64{"shared": 1}},
			[]string{"the provider's outcomes sum to 1, not 5: its ledger does not account for every record"}, ""},
		{"no ledger", protocol.Report{Ingested: 4}, []string{"provider (signed report): ingested 4"}, "provider outcomes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printAssessment(&b, &agent.Assessment{SSAID: "a", Provider: &tc.rep})
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("monitor:\n%s\nwant %q in it", b.String(), w)
				}
			}
			if tc.notWant != "" && strings.Contains(b.String(), tc.notWant) {
				t.Errorf("monitor:\n%s\nwant no %q in it", b.String(), tc.notWant)
			}
		})
	}
}
