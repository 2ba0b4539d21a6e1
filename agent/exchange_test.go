package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// exchangePair is a provider and a requester with an approved SSA for EVE records, the
// requester's template without the example's filter and with a schedule from 2010 on, so
// that every sample record (2016-2020) is shared.
func exchangePair(t testing.TB) (prov, req *Agent, ssa *protocol.SSA) {
	t.Helper()
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	prov, req, rec := agreedPair(t, tmpl)
	s, err := req.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	return prov, req, s
}

// waitRecords polls the requester's store until it holds n records of ssaID.
func waitRecords(t testing.TB, a *Agent, ssaID string, n uint64) {
	t.Helper()
	waitFor(t, 15*time.Second, func() (bool, string) {
		st, err := a.store.InboxState(ssaID)
		if err == nil && st.Last > n {
			t.Fatalf("requester holds %d records, want %d", st.Last, n)
		}
		return err == nil && st.Last == n, fmt.Sprintf("requester holds %+v (%v), want %d records", st, err, n)
	})
}

func sampleEVE(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../policy/testdata/eve/test-eve-small.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExchangeAndMonitor(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[s.ID])
	if st.Records != 12 || n == 0 {
		t.Fatalf("ingest: %+v", st)
	}
	waitRecords(t, req, s.ID, n)

	// Every record arrived refined as agreed: verification finds nothing, no public address
	// is left whole.
	ssp, err := policy.Compile(s, policy.StaticKey(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := req.store.Records(s.ID, 0, 100, 1<<20)
	if err != nil || uint64(len(recs)) != n {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	run := req.mgr.run(s.ID)
	for _, r := range recs {
		format, rec := run.untag(r.Data)
		if format != protocol.FormatEVE {
			t.Fatalf("record %d kept as %q", r.Seq, format)
		}
		if f := policy.Verify(ssp, format, rec); len(f) > 0 {
			t.Fatalf("record %d: %v", r.Seq, f)
		}
	}

	waitFor(t, 10*time.Second, func() (bool, string) { // the provider learns of the ack after the requester stored
		st, err := prov.store.OutboxState(s.ID)
		return err == nil && st.Acked == n, fmt.Sprintf("acknowledged: %+v, %v", st, err)
	})
	as, err := req.Monitor(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if as.Verdict != VerdictFulfilled || as.Phase != PhaseExecution || as.Provider == nil ||
		as.Provider.Acked != n || as.Provider.Ingested != 12 || as.Local.Last != n {
		t.Fatalf("assessment %+v, report %+v", as, as.Provider)
	}

	// Cancellation stops delivery at once: records ingested afterwards never arrive.
	if _, err := req.Cancel(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, prov, s.ID, protocol.StateAnnulled)
	provRun := prov.mgr.run(s.ID)
	after, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is left for a delivery loop to send, and none runs: what the requester holds
	// is all it will ever get.
	if provRun != nil || after.Queued[s.ID] != 0 {
		t.Fatalf("after cancellation the SSA is in force (%v) and %d records were queued", provRun != nil, after.Queued[s.ID])
	}
	if recs, err := prov.store.Pending(s.ID, n, 1, 1); err != nil || len(recs) > 0 {
		t.Fatalf("after cancellation the provider's queue holds %d records to send (%v)", len(recs), err)
	}
	if got, _ := req.store.InboxState(s.ID); got.Last != n {
		t.Fatalf("after cancellation the requester holds %d records, want %d", got.Last, n)
	}
}

// looping reports whether a delivery loop runs for run.
func looping(run *agreementRun) bool {
	run.loopMu.Lock()
	defer run.loopMu.Unlock()
	return run.looping != nil
}

// TestDeliveryOnDemand: an SSA in force with nothing to deliver has no delivery loop; new
// records start one, and an SSA no longer in force never gets one again.
func TestDeliveryOnDemand(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	run := prov.mgr.run(s.ID)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return !looping(run), "the delivery loop of an idle SSA still runs"
	})
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[s.ID])
	waitRecords(t, req, s.ID, n)

	if _, err := req.Cancel(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	waitState(t, prov, s.ID, protocol.StateAnnulled)
	waitFor(t, 5*time.Second, func() (bool, string) {
		return prov.mgr.run(s.ID) == nil && !looping(run), "a delivery loop runs for an annulled SSA"
	})
	prov.deliver.wake(run)
	if looping(run) {
		t.Fatal("wake started a delivery loop for an annulled SSA")
	}
}

func TestBrokenProviderCaught(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	// The provider queues raw records, skipping its enforcement point.
	var raws [][]byte
	for _, line := range bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n")) {
		raws = append(raws, append([]byte{0}, line...))
	}
	if _, err := prov.store.Enqueue(s.ID, raws, uint64(len(raws)), 0); err != nil {
		t.Fatal(err)
	}
	prov.deliver.wake(prov.mgr.run(s.ID))
	waitRecords(t, req, s.ID, uint64(len(raws)))
	waitFor(t, 10*time.Second, func() (bool, string) { // evidence is kept after the records
		ev, err := req.store.Evidence(s.ID)
		return err == nil && len(ev) > 0, fmt.Sprintf("no evidence kept (%v)", err)
	})
	as, err := req.Monitor(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if as.Verdict != VerdictViolated || len(as.Evidence) == 0 || as.Local.Violations == 0 {
		t.Fatalf("verdict %s, evidence %d, %+v", as.Verdict, len(as.Evidence), as.Reasons)
	}
	// The ledger counts every record, stored or quarantined by the finding that says why.
	var quarantined, stored float64
	for _, code := range []policy.FindingCode{policy.FindingUnmaskedIP, policy.FindingNotTruncated, policy.FindingNotRemoved,
		policy.FindingNotHashed, policy.FindingFilterExcluded, policy.FindingWrongFormat, policy.FindingNotSummarised} {
		quarantined += testutil.ToFloat64(req.counts.ledger.requester.WithLabelValues(s.ID, outQuarantined, string(code)))
	}
	stored = testutil.ToFloat64(req.counts.ledger.requester.WithLabelValues(s.ID, outStored, ""))
	if uint64(quarantined) != as.Local.Violations || uint64(quarantined+stored) != uint64(len(raws)) {
		t.Fatalf("ledger: %v quarantined, %v stored; want %d violations of %d records", quarantined, stored, as.Local.Violations, len(raws))
	}
	ev, err := req.store.Evidence(s.ID)
	if err != nil || len(ev) == 0 {
		t.Fatal(err)
	}
	if _, err := protocol.OpenBatch(ev[0].Batch, prov.ID()); err != nil {
		t.Fatalf("the evidence is not the provider's signed batch: %v", err)
	}

	// Once the SSA keeps all the evidence it may, more violating batches are still taken
	// (and counted), without more evidence.
	for i := len(ev); i < storage.MaxEvidence; i++ {
		if err := req.store.PutEvidence(storage.Evidence{SSAID: s.ID, First: uint64(1000 + i), Batch: ev[0].Batch}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := prov.store.Enqueue(s.ID, raws, uint64(len(raws)), 0); err != nil {
		t.Fatal(err)
	}
	prov.deliver.wake(prov.mgr.run(s.ID))
	waitRecords(t, req, s.ID, uint64(2*len(raws)))
	waitFor(t, 10*time.Second, func() (bool, string) {
		st, err := prov.store.OutboxState(s.ID)
		return err == nil && st.Acked == uint64(2*len(raws)), fmt.Sprintf("acknowledged: %+v, %v", st, err)
	})
	if ev, err := req.store.Evidence(s.ID); err != nil || len(ev) != storage.MaxEvidence {
		t.Fatalf("%d evidence kept, want %d: %v", len(ev), storage.MaxEvidence, err)
	}
}

func TestAssessmentAtScheduleEnd(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", func(c *Config) { c.RetentionCheck = Duration(100 * time.Millisecond) })
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Schedule.End = protocol.FromTime(time.Now().Add(time.Hour))
	rec, err := req.Request(context.Background(), addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	// The requester again, on a clock the test moves past the schedule's end.
	home := req.home
	if err := req.Close(); err != nil {
		t.Fatal(err)
	}
	clock := &movableClock{}
	req, err = New(home, Options{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { req.Close() })
	path := assessmentPath(filepath.Join(home, AssessmentDir), rec.SSAID)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an assessment report before the end of the schedule (%v)", err)
	}
	clock.advance(time.Hour + time.Minute)
	var b []byte
	waitFor(t, 10*time.Second, func() (bool, string) {
		var err error
		b, err = os.ReadFile(path)
		return err == nil, "no assessment report at the end of the schedule"
	})
	var as Assessment
	if err := json.Unmarshal(b, &as); err != nil || as.Phase != PhaseAssessment || as.Verdict == "" {
		t.Fatalf("assessment %s: %+v, %v", b, as, err)
	}
}

// TestBatchTimeChecked: a batch whose signed time is inside the schedule but far from when
// it arrives is a violation: a provider cannot deliver after the schedule's end under an
// earlier time. All of its records are at fault, also when one of them breaks the SSA too.
func TestBatchTimeChecked(t *testing.T) {
	prov, req, s := exchangePair(t)
	run := prov.mgr.run(s.ID)
	refined, _, err := run.refine(protocol.FormatEVE, bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n")), time.Now().Year(), time.Now)
	if err != nil || len(refined) == 0 {
		t.Fatal(len(refined), err)
	}
	var raw []byte // a sample record that breaks the SSA as it is (unmasked)
	for _, l := range bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n")) {
		if len(policy.Verify(run.ssp, protocol.FormatEVE, l)) > 0 {
			raw = l
			break
		}
	}
	if raw == nil {
		t.Fatal("no sample record breaks the SSA")
	}
	for _, tc := range []struct {
		name      string
		sent      time.Time
		withRaw   bool
		violation bool
	}{
		{"now", time.Now(), false, false},
		{"a minute ago", time.Now().Add(-time.Minute), false, false},
		{"backdated", time.Now().Add(-protocol.MaxSkew - time.Minute), false, true},
		{"ahead", time.Now().Add(protocol.MaxSkew + time.Minute), false, true},
		{"backdated, with a raw record", time.Now().Add(-protocol.MaxSkew - time.Minute), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &protocol.Batch{SSAID: s.ID, SSPHash: run.ssp.Hash(), First: 1, Format: protocol.FormatEVE, Sent: tc.sent.UnixMilli()}
			for _, r := range refined {
				_, rec := run.untag(r)
				b.Records = append(b.Records, rec)
			}
			if tc.withRaw {
				b.Records = append(b.Records, raw)
			}
			sealed, err := protocol.SealBatch(prov.self, b)
			if err != nil {
				t.Fatal(err)
			}
			c, err := req.receiver.checkBatch(sealed, prov.ID(), ProtocolExchange, network.ConnectionState{Security: noise.ID, Transport: "tcp"})
			if err != nil || c.refused != "" {
				t.Fatalf("%+v, %v", c, err)
			}
			for i := range b.Records {
				if c.bad[i] != tc.violation {
					t.Fatalf("record %d at fault: %v, want %v: %+v", i+1, c.bad[i], tc.violation, c.findings)
				}
			}
			if tc.violation && c.violations != uint64(len(b.Records)) {
				t.Fatalf("%d violations counted of %d records", c.violations, len(b.Records))
			}
		})
	}
}

// TestLargeViolatingBatch: a violating batch over 1 MiB is stored, acknowledged (delivery
// goes on) and kept as evidence.
func TestLargeViolatingBatch(t *testing.T) {
	prov, req, s := exchangePair(t)
	var raws [][]byte
	lines := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	for i := range 2048 { // over 1 MiB, unrefined
		raws = append(raws, append([]byte{0}, lines[i%len(lines)]...))
	}
	if _, err := prov.store.Enqueue(s.ID, raws, uint64(len(raws)), 0); err != nil {
		t.Fatal(err)
	}
	prov.deliver.wake(prov.mgr.run(s.ID))
	waitFor(t, 15*time.Second, func() (bool, string) {
		st, err := prov.store.OutboxState(s.ID)
		return err == nil && st.Acked == uint64(len(raws)), fmt.Sprintf("acknowledged: %+v, %v", st, err)
	})
	if st, err := req.store.InboxState(s.ID); err != nil || st.Last != uint64(len(raws)) || st.Violations == 0 {
		t.Fatalf("requester: %+v, %v", st, err)
	}
	if ev, err := req.store.Evidence(s.ID); err != nil || len(ev) != 1 {
		t.Fatalf("%d evidence kept, want the batch: %v", len(ev), err)
	}
}

// TestExchangeFromStranger: a peer with no SSA in force has its exchange stream reset before
// anything of it is read.
func TestExchangeFromStranger(t *testing.T) {
	req := newTestAgent(t, "requester", func(c *Config) { c.MessageTimeout = Duration(time.Minute) })
	st := newRawPeer(t).stream(t, req, ProtocolExchange)
	if _, err := st.Write(binary.AppendUvarint(nil, protocol.MaxBatchSize)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := st.Read(make([]byte, 1)); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("the stream of a stranger stayed open: %v after %v", err, time.Since(start))
	}
}
