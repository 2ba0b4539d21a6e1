package agent

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// withholdConfirmations makes a deaf to negotiation messages, so that it never confirms a
// cancellation; the returned function makes it hear them again.
func withholdConfirmations(a *Agent) (restore func()) {
	a.host.RemoveStreamHandler(ProtocolNegotiate)
	return func() { a.host.SetStreamHandler(ProtocolNegotiate, a.inbound.serve(a.neg.handleStream)) }
}

// phaseOf is the phase `ssa show` gives ssaID on a.
func phaseOf(t *testing.T, a *Agent, ssaID string) Phase {
	t.Helper()
	rec, err := a.Negotiation(ssaID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.view(rec)
	if err != nil {
		t.Fatal(err)
	}
	return v.Phase
}

// TestProviderCancelStopsAtOnce: a provider that cancels stops sharing at once, though the
// requester never confirms: records ingested after the cancellation are not queued, also after
// a restart, and the phase says so. The confirmation, when it comes, completes the annulment.
func TestProviderCancelStopsAtOnce(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[s.ID])
	waitRecords(t, req, s.ID, n)

	restore := withholdConfirmations(req)
	rec, err := prov.Cancel(ctx, s.ID)
	if err != nil || rec.State != protocol.StateCancellationSent || rec.Delivered {
		t.Fatalf("cancel: %+v, %v; want cancellation-sent, undelivered", rec, err)
	}
	if p := phaseOf(t, prov, s.ID); p != PhaseAssessment {
		t.Fatalf("phase %q after the cancellation, want %q", p, PhaseAssessment)
	}
	notQueued := func(a *Agent, when string) {
		t.Helper()
		st, err := a.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Queued[s.ID] != 0 || a.mgr.run(s.ID) != nil {
			t.Fatalf("%s: %d records queued for the cancelled SSA (in force: %v)", when, st.Queued[s.ID], a.mgr.run(s.ID) != nil)
		}
		if out, err := a.store.OutboxState(s.ID); err != nil || out.Refined != n {
			t.Fatalf("%s: outbox %+v, %v; want %d refined, no more", when, out, err, n)
		}
	}
	notQueued(prov, "after the cancellation")

	home := prov.home
	if err := prov.Close(); err != nil {
		t.Fatal(err)
	}
	prov = reopen(t, home)
	notQueued(prov, "after a restart")
	if rec, err := prov.Negotiation(s.ID); err != nil || rec.State != protocol.StateCancellationSent {
		t.Fatalf("after a restart: %+v, %v", rec, err)
	}

	restore()
	waitState(t, req, s.ID, protocol.StateAnnulled)
	waitState(t, prov, s.ID, protocol.StateAnnulled)
	if got, err := req.store.InboxState(s.ID); err != nil || got.Last != n {
		t.Fatalf("the requester holds %+v (%v), want the %d records sent before the cancellation", got, err, n)
	}
}

// TestRequesterRefusesCancelled: a requester that cancels refuses the SSA's batches from that
// moment, though the provider never confirms (and so goes on sending): nothing of them is
// stored or forwarded, and each refused batch is kept as evidence.
func TestRequesterRefusesCancelled(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	withholdConfirmations(prov)
	rec, err := req.Cancel(ctx, s.ID)
	if err != nil || rec.State != protocol.StateCancellationSent {
		t.Fatalf("cancel: %+v, %v; want cancellation-sent", rec, err)
	}
	if p := phaseOf(t, req, s.ID); p != PhaseAssessment {
		t.Fatalf("phase %q after the cancellation, want %q", p, PhaseAssessment)
	}
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil || st.Queued[s.ID] == 0 {
		t.Fatalf("the provider, which never heard of the cancellation, queued nothing: %+v, %v", st, err)
	}
	waitFor(t, 15*time.Second, func() (bool, string) {
		ev, err := req.store.Evidence(s.ID)
		return err == nil && len(ev) > 0, fmt.Sprintf("no refused batch kept as evidence (%d, %v)", len(ev), err)
	})
	if in, err := req.store.InboxState(s.ID); err != nil || in.Last != 0 || in.Stored != 0 {
		t.Fatalf("the requester took records of the SSA it cancelled: %+v, %v", in, err)
	}
	if out, err := prov.store.OutboxState(s.ID); err != nil || out.Acked != 0 {
		t.Fatalf("the provider has records acknowledged after the cancellation: %+v, %v", out, err)
	}
}
