package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// roomProvisions gives refine-and-queue fixed runs, each with room for a bounded number of
// queued records in all.
type roomProvisions struct {
	mu   sync.Mutex
	runs []*agreementRun
	room map[*agreementRun]int
}

func (p *roomProvisions) providerRuns() []*agreementRun { return p.runs }

func (p *roomProvisions) reserve(runs []*agreementRun, want []int) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	got := make([]int, len(runs))
	for i, run := range runs {
		got[i] = min(want[i], p.room[run])
		p.room[run] -= got[i]
	}
	return got
}

// randLedgerPolicy is a random policy: masking, filters (one that cannot be evaluated on
// records without the field), summarisation, a schedule and a handling.
func randLedgerPolicy(r *rand.Rand, now time.Time) (*protocol.Policy, protocol.Schedule) {
	p := &protocol.Policy{}
	switch r.IntN(4) {
	case 0:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: uint8(1 + r.IntN(24))})
	case 1:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskRemove})
	case 2:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC})
	}
	filters := []string{
		`r["event.kind"] != "stats"`,
		`r["source.port"] > 1024`,
		`r["rule.name"].contains("scan")`, // not evaluated on a record without alert.signature
		`size(r["related.ip"]) > 0`,
	}
	for _, f := range filters {
		if r.IntN(3) == 0 {
			p.Filtering = append(p.Filtering, protocol.Filter{Expr: f})
		}
	}
	if r.IntN(3) == 0 {
		p.Summarization = &protocol.Summarization{GroupBy: "source.ip", RankBy: protocol.RankByCount, TopN: uint32(1 + r.IntN(4)),
			Window: protocol.Duration(60 * (1 + r.IntN(30)))} // seconds
	}
	var s protocol.Schedule
	switch r.IntN(5) {
	case 0:
		s.Start = protocol.FromTime(now.Add(time.Hour)) // not started
	case 1:
		s.Start, s.End = protocol.FromTime(now.Add(-2*time.Hour)), protocol.FromTime(now.Add(-time.Hour)) // ended
	case 2:
		s.Start, s.End = protocol.FromTime(now.Add(-time.Hour)), protocol.FromTime(now.Add(time.Hour))
	}
	return p, s
}

// randLedgerInput is n random EVE lines: alerts, stats, records without a timestamp and
// malformed lines (not JSON, or not an object).
func randLedgerInput(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for range n {
		ts := fmt.Sprintf("2024-07-%02dT%02d:%02d:%02d.000000+0000", 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60))
		src := fmt.Sprintf("%d.%d.%d.%d", 1+r.IntN(200), r.IntN(256), r.IntN(256), 1+r.IntN(254))
		switch r.IntN(8) {
		case 0:
			b.WriteString(`{"timestamp": "` + ts + `", "event_type":` + "\n") // cut short
			continue
		case 1:
			b.WriteString(`not json at all`)
		case 2: // no timestamp: malformed in EVE
			fmt.Fprintf(&b, `{"event_type":"alert","src_ip":"%s","src_port":%d,"dest_ip":"10.0.0.1","alert":{"signature":"scan"}}`, src, r.IntN(65536))
		case 3:
			fmt.Fprintf(&b, `{"timestamp":"%s","event_type":"stats","stats":{"uptime":%d}}`, ts, r.IntN(1000))
		default:
			sig := []string{"ET SCAN nmap", "ET POLICY curl", "GPL ATTACK_RESPONSE"}[r.IntN(3)]
			fmt.Fprintf(&b, `{"timestamp":"%s","event_type":"alert","src_ip":"%s","src_port":%d,"dest_ip":"192.168.%d.%d","dest_port":443,"proto":"TCP","alert":{"signature":"%s","severity":%d}}`,
				ts, src, r.IntN(65536), r.IntN(256), r.IntN(256), sig, 1+r.IntN(3))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestLedgerInvariant: over random policies (masking, filters, summarisation, schedules),
// random room in the requesters' queues and random input with malformed lines, every raw
// record handed to the provider is counted in exactly one outcome per SSA that shares its
// format: ingested = the sum of the outcomes, in the run's ledger and in the metric; records
// of a format no SSA shares are counted as no_ssa.
func TestLedgerInvariant(t *testing.T) {
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := rand.New(rand.NewPCG(13, 2))
	now := time.Now()
	seen := map[outcome]bool{}
	seenFilter := map[int]bool{} // filters, by index, that left records out
	for trial := range 60 {
		reg := prometheus.NewRegistry()
		l := newLedger(reg, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
		prov := &roomProvisions{room: map[*agreementRun]int{}}
		for i := range r.IntN(4) { // 0 to 3 SSAs; some share another format only
			pol, sched := randLedgerPolicy(r, now)
			format := protocol.FormatEVE
			if r.IntN(5) == 0 {
				format = protocol.FormatSyslog
				pol.Filtering, pol.Summarization = nil, nil // they read fields of EVE's view
			}
			s := &protocol.SSA{ID: fmt.Sprintf("ssa-ledger-%d-%d", trial, i), Version: 1, Policy: pol, Schedule: sched,
				Information: []protocol.Information{{Name: format, Type: protocol.TypeAttackDetectionLog, Format: format}}}
			ssp, err := policy.Compile(s, policy.StaticKey(make([]byte, 32)))
			if err != nil {
				t.Fatalf("trial %d: policy %+v: %v", trial, pol, err)
			}
			run := &agreementRun{ssa: s, role: protocol.RoleProvider, ssp: ssp, refineID: ssp.RefinementID(),
				enforcers: map[string]*policy.Enforcer{}, kick: make(chan struct{}, 1)}
			prov.runs = append(prov.runs, run)
			prov.room[run] = r.IntN(400)
		}
		q := newRefiner(prov, st, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now, 1, queueMetrics{
			ingested: prometheus.NewCounter(prometheus.CounterOpts{Name: "i"}), queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "q"}),
			overflow: prometheus.NewCounter(prometheus.CounterOpts{Name: "o"})}, func(*agreementRun) {}, l)
		in := randLedgerInput(r, 1+r.IntN(600))
		if r.IntN(4) == 0 { // a line too long to be a record: the reader cannot cut it out
			in = append(append(in, bytes.Repeat([]byte("x"), policy.MaxRecordSize+10)...), '\n')
			in = append(in, randLedgerInput(r, 1+r.IntN(20))...)
		}
		stats, err := q.ingest(context.Background(), protocol.FormatEVE, bytes.NewReader(in), nil)
		if err != nil {
			t.Fatal(err)
		}
		entered := uint64(bytes.Count(in, []byte("\n"))) // one record a line, malformed or not
		sharing := 0
		for _, run := range prov.runs {
			id := run.ssa.ID
			counts, ingested := run.ledger.snapshot()
			var sum uint64
			for o := range numOutcomes {
				v := run.ledger.n[o].Load()
				sum += v
				if m := testutil.ToFloat64(l.provider.WithLabelValues(id, o.String())); uint64(m) != v {
					t.Fatalf("trial %d, SSA %s: metric %s = %v, ledger %d", trial, id, o, m, v)
				}
				if v > 0 {
					seen[o] = true
				}
			}
			want := entered
			if run.ssa.Information[0].Format != protocol.FormatEVE {
				want = 0
			} else {
				sharing++
			}
			if ingested != want || sum != ingested {
				t.Fatalf("trial %d, SSA %s (policy %+v, schedule %+v): %d records entered, the ledger says %d ingested, outcomes %v sum to %d",
					trial, id, run.ssa.Policy, run.ssa.Schedule, want, ingested, counts, sum)
			}
			// The filtered outcome split by filter: the splits sum to it, in the ledger, the
			// metric and ingest's stats, and only the SSA's filters are named.
			by := run.ledger.filtered()
			var bySum, statsSum uint64
			for i, v := range by {
				bySum += v
				if m := testutil.ToFloat64(l.filtered.WithLabelValues(id, strconv.Itoa(i))); uint64(m) != v {
					t.Fatalf("trial %d, SSA %s: metric filtered by filter %d = %v, ledger %d", trial, id, i, m, v)
				}
				if v > 0 {
					seenFilter[i] = true
				}
			}
			for _, v := range stats.FilteredBy[id] {
				statsSum += uint64(v)
			}
			if len(by) > len(run.ssa.Policy.Filtering) || bySum != counts["filtered"] ||
				statsSum != uint64(stats.Filtered[id]-stats.FilterErrors[id]) || statsSum != bySum {
				t.Fatalf("trial %d, SSA %s (%d filters): filtered %d, by filter %v (ingest: %v of %d, %d not evaluable)",
					trial, id, len(run.ssa.Policy.Filtering), counts["filtered"], by, stats.FilteredBy[id], stats.Filtered[id], stats.FilterErrors[id])
			}
			if run.ssa.Policy.Summarization == nil && counts["shared"] != uint64(stats.Queued[id]) {
				t.Fatalf("trial %d, SSA %s: %d shared, ingest queued %d", trial, id, counts["shared"], stats.Queued[id])
			}
		}
		noSSA := testutil.ToFloat64(l.provider.WithLabelValues("", outcomeNoSSA))
		if (sharing == 0) != (uint64(noSSA) == entered) || (sharing > 0 && noSSA != 0) {
			t.Fatalf("trial %d: %d SSAs share the format, %v records counted as no_ssa of %d", trial, sharing, noSSA, entered)
		}
		for _, run := range prov.runs {
			if err := st.DropOutbox(run.ssa.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The random cases are worth something only if they reached every outcome (but untimed:
	// an EVE record without a timestamp is malformed).
	for o := range numOutcomes {
		if !seen[o] && o != outUntimed {
			t.Errorf("no trial reached the outcome %s: the generators need widening", o)
		}
	}
	if !seenFilter[0] || !seenFilter[1] {
		t.Errorf("filters that left records out, by index: %v; want at least 0 and 1", seenFilter)
	}
}

// TestLedgerLogRateLimited: one line per outcome kind per minute at most, the next one with
// what was counted meanwhile.
func TestLedgerLogRateLimited(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLedgerLog(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return at })
	for i := range 1000 {
		l.add("provider", "malformed", "ssa-a", 1, fmt.Sprintf("line %d", i+1))
		l.add("provider", "shared", fmt.Sprintf("ssa-%d", i%40), 2, "")
		at = at.Add(50 * time.Millisecond) // 50 s in all
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines in 50 s for 2 outcome kinds, want 2:\n%s", n, buf.String())
	}
	at = at.Add(10 * time.Second)
	l.add("provider", "malformed", "ssa-a", 1, "offset 77")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "records=1000") || !strings.Contains(lines[2], "ssa:ssa-a=1000") ||
		!strings.Contains(lines[2], `last_at="offset 77"`) || !strings.Contains(lines[0], `last_at="line 1"`) {
		t.Fatalf("after a minute, want one line with the 1000 records counted meanwhile:\n%s", buf.String())
	}
	l.add("provider", "shared", "ssa-0", 2, "")
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], "records=2000") || !strings.Contains(lines[3], "ssa:others=") {
		t.Fatalf("want one line of the 2000 records shared meanwhile, naming at most %d SSAs, then others:\n%s", ledgerLogSSAs, buf.String())
	}
}

// TestLedgerEndToEnd: a provider ingests the sample EVE file with malformed lines under an SSA
// whose filter drops its stats record: the signed report carries the outcomes, which add up
// to the records ingested; the requester counts what it stored; the provider's series of the
// SSA go when it ends.
func TestLedgerEndToEnd(t *testing.T) {
	ctx := context.Background()
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = []protocol.Filter{{Expr: `r["event.kind"] != "stats"`}}
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	prov, req, rec := agreedPair(t, tmpl)
	id := rec.SSAID
	in := append(sampleEVE(t), "not a record\n{\"timestamp\":\n"...)
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[id])
	if n == 0 || st.Filtered[id] == 0 {
		t.Fatalf("ingest: %+v; want records queued and the stats record filtered out", st)
	}
	waitRecords(t, req, id, n)
	waitFor(t, 10*time.Second, func() (bool, string) {
		os, err := prov.store.OutboxState(id)
		return err == nil && os.Acked == n, fmt.Sprintf("acknowledged: %+v, %v", os, err)
	})
	as, err := req.Monitor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	p := as.Provider
	want := map[string]uint64{"shared": n, "filtered": uint64(st.Filtered[id]), "malformed": 2}
	if p == nil || p.OutcomesIngested != 14 || !maps.Equal(p.Outcomes, want) || p.OutcomesSince == 0 {
		t.Fatalf("report %+v: want outcomes %v of 14 records", p, want)
	}
	if f := uint64(st.Filtered[id]); !slices.Equal(p.OutcomesFilteredBy, []uint64{f}) ||
		!slices.Equal(st.FilteredBy[id], []int64{st.Filtered[id]}) {
		t.Fatalf("report: filtered by %v, ingest: by %v; want [%d] (the one filter)", p.OutcomesFilteredBy, st.FilteredBy[id], f)
	}
	if got := testutil.ToFloat64(req.counts.ledger.requester.WithLabelValues(id, outStored, "")); got != float64(n) {
		t.Fatalf("requester counts %v records stored, want %d", got, n)
	}
	if got := testutil.ToFloat64(prov.counts.ledger.provider.WithLabelValues(id, "shared")); got != float64(n) {
		t.Fatalf("provider counts %v records shared, want %d", got, n)
	}

	if _, err := req.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitState(t, prov, id, protocol.StateAnnulled)
	waitFor(t, 10*time.Second, func() (bool, string) {
		n := testutil.CollectAndCount(prov.counts.ledger.provider) + testutil.CollectAndCount(prov.counts.ledger.filtered)
		return n == 0, fmt.Sprintf("%d provider series left after the SSA ended", n)
	})
	if _, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(prov.counts.ledger.provider.WithLabelValues("", outcomeNoSSA)); got != 14 {
		t.Fatalf("%v records counted as no_ssa, want 14", got)
	}
}

// TestLedgerSaysWhereMalformed: the log line of malformed records says where one was: the
// offset of a record that could not be parsed, the line of one that could not be cut out.
func TestLedgerSaysWhereMalformed(t *testing.T) {
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	good := sampleEVE(t)
	good = good[:bytes.IndexByte(good, '\n')+1]
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"not parsed", append(append(slices.Clone(good), good...), "{\"timestamp\":\n"...), fmt.Sprintf(`last_at="offset %d"`, 2*len(good))},
		{"not cut out", append(append(slices.Clone(good), bytes.Repeat([]byte("x"), policy.MaxRecordSize+10)...), '\n'), `last_at="line 2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			l := newLedger(prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&log, nil)), time.Now)
			s := &protocol.SSA{ID: "ssa-where", Version: 1, Policy: &protocol.Policy{},
				Information: []protocol.Information{{Name: "eve", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatEVE}}}
			ssp, err := policy.Compile(s, policy.StaticKey(make([]byte, 32)))
			if err != nil {
				t.Fatal(err)
			}
			run := &agreementRun{ssa: s, role: protocol.RoleProvider, ssp: ssp, refineID: ssp.RefinementID(),
				enforcers: map[string]*policy.Enforcer{}, kick: make(chan struct{}, 1)}
			prov := &roomProvisions{runs: []*agreementRun{run}, room: map[*agreementRun]int{run: 100}}
			q := newRefiner(prov, st, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now, 1, queueMetrics{
				ingested: prometheus.NewCounter(prometheus.CounterOpts{Name: "i"}), queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "q"}),
				overflow: prometheus.NewCounter(prometheus.CounterOpts{Name: "o"})}, func(*agreementRun) {}, l)
			if _, err := q.ingest(context.Background(), protocol.FormatEVE, bytes.NewReader(tc.in), nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.DropOutbox(s.ID) })
			var line string
			for _, ln := range strings.Split(log.String(), "\n") {
				if strings.Contains(ln, "outcome=malformed") {
					line = ln
				}
			}
			if !strings.Contains(line, tc.want) || !strings.Contains(line, "records=1") {
				t.Fatalf("log:\n%s\nwant a malformed line with %s", log.String(), tc.want)
			}
		})
	}
}

// diskFullSources: sources over a disk that is full, and the ledger they count into.
func diskFullSources(t *testing.T) (*sources, *ledger) {
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := newLedger(prometheus.NewRegistry(), discard, time.Now)
	q := newRefiner(&roomProvisions{}, st, discard, time.Now, 1, queueMetrics{
		ingested: prometheus.NewCounter(prometheus.CounterOpts{Name: "i"}), queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "q"}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{Name: "o"})}, func(*agreementRun) {}, l)
	disk := newDiskWatch(func() (storage.Space, error) { return storage.Space{Free: 1, Reserve: 50, Paused: true}, nil },
		discard, prometheus.NewRegistry())
	s := newSources(q, st, disk, t.TempDir(), discard, prometheus.NewRegistry())
	return s, l
}

// TestLedgerCountsDiskFullDrops: a listener's records that a full disk makes the agent drop
// are counted in the ledger (disk_full), not only in the disk's own counter.
func TestLedgerCountsDiskFullDrops(t *testing.T) {
	s, l := diskFullSources(t)
	c := &collector{sources: s, format: protocol.FormatSyslog}
	c.flush([][]byte{[]byte("<34>1 - a b c d - x"), []byte("<34>1 - a b c d - y")})
	if got := testutil.ToFloat64(l.provider.WithLabelValues("", outcomeDiskFull)); got != 2 {
		t.Fatalf("%v records counted as disk_full, want 2", got)
	}
}

// TestCollectorQueuesAtShutdown: the records a source handed to a collector and it had not
// yet taken are still queued (here: counted as dropped by a full disk) when it stops.
func TestCollectorQueuesAtShutdown(t *testing.T) {
	s, l := diskFullSources(t)
	c := &collector{sources: s, format: protocol.FormatSyslog, recs: make(chan []byte, ingestChunk)}
	const n = 8
	for range n {
		c.recs <- []byte("<34>1 - a b c d - x")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.run(ctx)
	if got := testutil.ToFloat64(l.provider.WithLabelValues("", outcomeDiskFull)); got != n {
		t.Fatalf("%v records counted at shutdown, want %d", got, n)
	}
}

// TestLedgerEveryOutcome: one provider, one requester, three SSAs and one ingestion in which
// every outcome kind of EVE occurs (a record without a timestamp is malformed in EVE, so
// untimed cannot): each signed report accounts for every record ingested.
func TestLedgerEveryOutcome(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", func(c *Config) { c.MaxQueuedPerPeer = 20 })
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)
	since2010 := protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	var ids []string
	for _, edit := range []func(*protocol.SSA){
		func(s *protocol.SSA) { // filtered, filter_error, shared, not_queued
			s.Policy.Filtering = []protocol.Filter{{Expr: `r["event.kind"] != "stats"`}, {Expr: `r["rule.name"] != "none"`}}
			s.Schedule.Start = since2010
		},
		func(s *protocol.SSA) { // summarised
			s.Policy.Filtering = nil
			s.Policy.Summarization = &protocol.Summarization{GroupBy: "source.ip", RankBy: protocol.RankByCount, TopN: 3,
				Window: protocol.Duration(3600)}
			s.Schedule.Start = since2010
		},
		func(s *protocol.SSA) { // outside_schedule
			s.Policy.Filtering = nil
			s.Schedule.Start = protocol.FromTime(time.Now().Add(time.Hour))
		},
	} {
		tmpl := requestTemplate(t)
		edit(tmpl)
		rec, err := req.Request(ctx, addrInfo(prov), tmpl)
		if err != nil || rec.State != protocol.StateApproved {
			t.Fatalf("negotiation: %+v, %v", rec, err)
		}
		waitState(t, prov, rec.SSAID, protocol.StateApproved)
		ids = append(ids, rec.SSAID)
	}
	sample := sampleEVE(t)
	var alert []byte
	for _, line := range bytes.SplitAfter(sample, []byte("\n")) {
		if bytes.Contains(line, []byte(`"event_type":"alert"`)) {
			alert = line
		}
	}
	in := append(slices.Clone(sample), bytes.Repeat(alert, 40)...) // more than the requester's room
	in = append(in, "not a record\n{\"timestamp\":\n"...)
	records := uint64(bytes.Count(in, []byte("\n")))
	if _, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		as, err := req.Monitor(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		p := as.Provider
		var sum uint64
		for k, v := range p.Outcomes {
			sum += v
			seen[k] = true
		}
		if p.OutcomesIngested != records || sum != records {
			t.Fatalf("SSA %s: report %+v: outcomes sum to %d, want %d records ingested", id, p, sum, records)
		}
	}
	for o := range numOutcomes {
		if !seen[o.String()] && o != outUntimed {
			t.Errorf("no report counts the outcome %s (seen: %v)", o, seen)
		}
	}
}

// TestLedgerCountsExpired: records that retention deletes are counted as expired.
func TestLedgerCountsExpired(t *testing.T) {
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	l := newLedger(prometheus.NewRegistry(), discard, time.Now)
	now := time.Now()
	s := &protocol.SSA{ID: "ssa-expired", Policy: &protocol.Policy{Handling: &protocol.Handling{Retention: protocol.Duration(3600)}}}
	run := &agreementRun{ssa: s, role: protocol.RoleRequester}
	if _, _, err := st.Receive(s.ID, 1, [][]byte{{0, 'a'}, {0, 'b'}, {0, 'c'}}, now.Add(-2*time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Receive(s.ID, 4, [][]byte{{0, 'd'}}, now, 0); err != nil {
		t.Fatal(err)
	}
	r := &retention{store: st, runs: func() []*agreementRun { return []*agreementRun{run} }, log: discard,
		now: func() time.Time { return now }, ledger: l}
	r.expire(run)
	if got := testutil.ToFloat64(l.requester.WithLabelValues(s.ID, outExpired, "")); got != 3 {
		t.Fatalf("%v records counted as expired, want 3", got)
	}
}
