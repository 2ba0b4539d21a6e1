package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScheduleSharesHistory (issue 13: the schedule is when sharing happens, clause 9.2): a
// provider follows a file whose records are stamped a year ago and now, interleaved; every
// record is shared under an SSA that started today, and the requester, which judges each
// batch by when it was sent, holds each one once and finds no violation.
func TestScheduleSharesHistory(t *testing.T) {
	const half = 1000 // records stamped a year ago, and as many stamped now
	port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
	dir := t.TempDir()
	eve := filepath.Join(dir, "eve.json")
	prov := newAgent(t, "provider", port(), append(fastExchange,
		withYAML(fmt.Sprintf("ingest:\n  follow:\n    - {path: %q, format: eve}", eve)))...)
	req := newAgent(t, "requester", port(), fastExchange...)
	prov.offer("provider.yaml")
	id := agree(t, req, prov, startingNow(t, requesterTemplate(t, "", "90d")))
	started := scheduleStart(req, id)
	if time.Since(started) > time.Hour || started.After(time.Now()) {
		t.Fatalf("the agreed SSA's schedule starts %s: want now", started)
	}

	now := time.Now().UTC()
	old := eveStream(sampleEVE(t), now.AddDate(-1, 0, 0), 0, half, nil)
	recent := eveStream(sampleEVE(t), now, half, half, nil)
	var stream []eveRecord
	for i := range half {
		stream = append(stream, old[i], recent[i])
	}
	stream = withFlowIDs(stream)
	// The file appears once the SSA is in force: its records reach the provider today.
	if _, err := writeStream(dir, "eve.json", stream); err != nil {
		t.Fatal(err)
	}

	const total = 2 * half
	deadline := time.Now().Add(deliverBy)
	var as assessmentView
	for {
		as = req.monitor(id)
		p := as.Provider
		if p != nil && p.Ingested >= total && p.Acked >= p.Refined && as.Local.Last >= p.Refined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the provider reports %+v and the requester holds %d records (want %d)", deliverBy, p, as.Local.Last, total)
		}
		time.Sleep(pollInterval)
	}
	p := as.Provider
	if p.Ingested != total || p.Refined != total || p.Dropped != 0 || p.Acked != total {
		t.Errorf("provider's report %+v: want %d records ingested, refined and acknowledged, none dropped", *p, total)
	}
	if as.Verdict != "fulfilled" || as.Local.Violations != 0 || len(as.Evidence) != 0 {
		t.Errorf("monitor: verdict %q, reasons %v, %d violations, evidence %v: want fulfilled", as.Verdict, as.Reasons, as.Local.Violations, as.Evidence)
	}

	held := req.records(id)
	seen := map[uint64]int{}
	years := map[int]int{}
	for _, r := range held {
		var v struct {
			FlowID    uint64 `json:"flow_id"`
			Timestamp string `json:"timestamp"`
		}
		if err := json.Unmarshal(r.body(), &v); err != nil {
			t.Fatalf("record #%d: %v", r.Seq, err)
		}
		if r.Quarantined {
			t.Errorf("record #%d (%s) quarantined", r.Seq, v.Timestamp)
		}
		seen[v.FlowID]++
		if ts, err := time.Parse("2006-01-02T15:04:05.000000-0700", v.Timestamp); err == nil {
			years[ts.Year()]++
		}
	}
	missing, dups := 0, 0
	for f := uint64(1); f <= total; f++ {
		switch n := seen[f]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	if len(held) != total || missing != 0 || dups != 0 {
		t.Errorf("the requester holds %d records: %d missing, %d duplicates of %d", len(held), missing, dups, total)
	}
	if years[now.Year()-1]+years[now.Year()] != total || years[now.AddDate(-1, 0, 0).Year()] < half {
		t.Errorf("records held by year of their own time: %v; want %d stamped a year ago", years, half)
	}
	t.Logf("%d records (%d stamped %s, %d stamped %s) followed and shared under an SSA that started %s: report %+v; by year %v",
		total, half, now.AddDate(-1, 0, 0).Format(time.DateOnly), half, now.Format(time.DateOnly), started.Format(time.RFC3339), *p, years)
}

// scheduleStart is the start of the agreed SSA's schedule.
func scheduleStart(a *agent, id string) time.Time {
	a.t.Helper()
	var v struct {
		SSA *struct {
			Schedule struct {
				Start time.Time `json:"start"`
			} `json:"schedule"`
		} `json:"ssa"`
	}
	a.query(&v, "ssa", "show", id)
	if v.SSA == nil {
		a.t.Fatalf("ssa show %s: no SSA", id)
	}
	return v.SSA.Schedule.Start
}

// startingNow rewrites a requester template so that its schedule starts when it is
// negotiated.
func startingNow(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(b), "start: 2010-01-01T00:00:00Z", "start: now", 1)
	if text == string(b) {
		t.Fatal("the requester template has no schedule start to rewrite")
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
