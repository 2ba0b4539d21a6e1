package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// refusedForLimit reports whether a negotiation ended rejected with agreement-limit.
func refusedForLimit(rec *storage.Negotiation) bool {
	return rec.State == protocol.StateRejected && slices.ContainsFunc(rec.Reasons, func(r protocol.Reason) bool {
		return r.Code == protocol.CodeAgreementLimit
	})
}

// TestAgreementsPerPeerBounded: a requester gets at most max-agreements-per-peer SSAs from a
// provider; past it every request is rejected with agreement-limit, also after the provider
// restarts; a cancellation gives a place back. At the default bound, 2,000 requests from one
// peer sent 16 at a time leave it with 16 agreements.
func TestAgreementsPerPeerBounded(t *testing.T) {
	ctx := context.Background()
	t.Run("configured", func(t *testing.T) {
		const limit = 3
		prov := newTestAgent(t, "provider", func(c *Config) { c.MaxAgreementsPerPeer = limit })
		req := newTestAgent(t, "requester", nil)
		addOffer(t, prov, nil)
		request := func() *storage.Negotiation {
			t.Helper()
			rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
			if err != nil {
				t.Fatal(err)
			}
			return rec
		}
		var agreed []string
		for range limit {
			rec := request()
			if rec.State != protocol.StateApproved {
				t.Fatalf("request within the bound: %+v", rec)
			}
			agreed = append(agreed, rec.SSAID)
		}
		if rec := request(); !refusedForLimit(rec) {
			t.Fatalf("request past the bound: %+v; want rejected with %s", rec, protocol.CodeAgreementLimit)
		}
		home := prov.home
		prov.Close()
		prov = reopen(t, home)
		if rec := request(); !refusedForLimit(rec) {
			t.Fatalf("after a restart, request past the bound: %+v", rec)
		}
		if _, err := req.Cancel(ctx, agreed[0]); err != nil {
			t.Fatal(err)
		}
		waitState(t, prov, agreed[0], protocol.StateAnnulled)
		if rec := request(); rec.State != protocol.StateApproved {
			t.Fatalf("request after a cancellation: %+v", rec)
		}
	})
	t.Run("default", func(t *testing.T) {
		if testing.Short() {
			t.Skip("2,000 negotiations")
		}
		prov := newTestAgent(t, "provider", nil)
		req := newTestAgent(t, "requester", nil)
		addOffer(t, prov, nil)
		const requests, workers = 2000, 16
		var approved, limited atomic.Int32
		next := make(chan struct{}, requests)
		for range requests {
			next <- struct{}{}
		}
		close(next)
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for range next {
					rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
					switch {
					case err != nil:
						t.Error(err)
						return
					case rec.State == protocol.StateApproved:
						approved.Add(1)
					case refusedForLimit(rec):
						limited.Add(1)
					default:
						t.Errorf("neither approved nor refused for the bound: %+v", rec)
						return
					}
				}
			})
		}
		wg.Wait()
		t.Logf("%d requests in %v: %d approved, %d refused (agreement-limit)", requests, time.Since(start), approved.Load(), limited.Load())
		if approved.Load() != DefaultMaxAgreementsPerPeer || limited.Load() != requests-DefaultMaxAgreementsPerPeer {
			t.Fatalf("%d approved, %d refused for the bound; want %d and %d", approved.Load(), limited.Load(),
				DefaultMaxAgreementsPerPeer, requests-DefaultMaxAgreementsPerPeer)
		}
		if n := len(prov.mgr.providerRuns()); n != DefaultMaxAgreementsPerPeer {
			t.Fatalf("the provider implements %d SSAs", n)
		}
	})
}

// TestQueuePerPeerBounded: records queued for one requester, over all its SSAs, stop at
// max-queued-per-peer while it acknowledges nothing; what is left out is counted; queuing
// resumes once acknowledgements drain the queue.
func TestQueuePerPeerBounded(t *testing.T) {
	ctx := context.Background()
	const limit = 10
	prov := newTestAgent(t, "provider", func(c *Config) { c.MaxQueuedPerPeer = limit })
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	var ids []string
	for range 2 {
		tmpl.ID = ""
		rec, err := req.Request(ctx, addrInfo(prov), tmpl)
		if err != nil || rec.State != protocol.StateApproved {
			t.Fatalf("%+v, %v", rec, err)
		}
		ids = append(ids, rec.SSAID)
	}
	req.host.RemoveStreamHandler(ProtocolExchange) // acknowledges nothing

	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	var queued, left int64
	for _, id := range ids {
		queued, left = queued+st.Queued[id], left+st.NotQueued[id]
	}
	const refined = 12 // every sample record passes this SSA
	if queued != limit || left != 2*refined-limit {
		t.Fatalf("queued %d and left out %d (%+v); want %d and %d", queued, left, st, limit, 2*refined-limit)
	}
	if got := testutil.ToFloat64(prov.counts.queue.overflow); got != float64(left) {
		t.Fatalf("metric of records not queued: %v, want %d", got, left)
	}
	var backlog uint64
	for _, id := range ids {
		out, err := prov.store.OutboxState(id)
		if err != nil {
			t.Fatal(err)
		}
		backlog += out.Refined - out.Acked
	}
	if backlog != limit {
		t.Fatalf("%d records wait in the queues, want %d", backlog, limit)
	}

	req.host.SetStreamHandler(ProtocolExchange, req.inbound.serve(req.receiver.handleExchange))
	for _, id := range ids {
		prov.deliver.wake(prov.mgr.run(id))
	}
	waitFor(t, 15*time.Second, func() (bool, string) {
		var acked uint64
		for _, id := range ids {
			out, _ := prov.store.OutboxState(id)
			acked += out.Acked
		}
		return acked == limit, "the queued records are never acknowledged"
	})
	st, err = prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	if q := st.Queued[ids[0]] + st.Queued[ids[1]]; q != limit {
		t.Fatalf("after the queue drained, %d records queued (%+v), want %d", q, st, limit)
	}
}

// TestRefineOncePerRefinement: SSAs whose SSPs refine alike share one refinement of each
// record; an SSA whose SSP differs gets its own. Each gets the same records it would alone.
func TestRefineOncePerRefinement(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	stricter := tmpl.Clone()
	stricter.Policy.Masking[0].Bits = 16 // within the requester's max-bits: another refinement
	var ids []string
	for _, s := range []*protocol.SSA{tmpl, tmpl, tmpl, stricter} {
		s = s.Clone()
		s.ID = ""
		rec, err := req.Request(ctx, addrInfo(prov), s)
		if err != nil || rec.State != protocol.StateApproved {
			t.Fatalf("%+v, %v", rec, err)
		}
		ids = append(ids, rec.SSAID)
	}
	req.host.RemoveStreamHandler(ProtocolExchange) // the records stay queued, to be compared
	st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	refinements := 0
	for _, id := range ids {
		run := prov.mgr.run(id)
		run.mu.Lock()
		if run.enforcers[protocol.FormatEVE] != nil {
			refinements++
		}
		run.mu.Unlock()
	}
	if refinements != 2 {
		t.Fatalf("%d refinements of the records for 4 SSAs of 2 distinct SSPs, want 2", refinements)
	}
	records := func(id string) [][]byte {
		recs, err := prov.store.Pending(id, 0, 100, 1<<20)
		if err != nil || int64(len(recs)) != st.Queued[id] {
			t.Fatalf("%d records queued for %s (%+v), %v", len(recs), id, st, err)
		}
		var out [][]byte
		for _, r := range recs {
			out = append(out, r.Data)
		}
		return out
	}
	a, b, c := records(ids[0]), records(ids[2]), records(ids[3])
	if len(a) == 0 || !slices.EqualFunc(a, b, bytes.Equal) {
		t.Fatal("two SSAs of one SSP got different records")
	}
	if slices.EqualFunc(a, c, bytes.Equal) {
		t.Fatal("an SSA of another SSP got the same records: its masking was not applied")
	}
}

// TestAdmission walks admission's contract without a network: slots are taken when checked,
// and the track of each committed state keeps them or gives them back.
func TestAdmission(t *testing.T) {
	const peer, other = "peer", "other"
	rec := func(id string, role protocol.Role, st protocol.State, delivered bool) *storage.Negotiation {
		return &storage.Negotiation{ID: []byte(id), Peer: peer, Role: role, State: st, Delivered: delivered}
	}
	ad := newAdmission(1)
	for i := range maxOpenPerPeer {
		if err := ad.admit(fmt.Sprint(i), peer); err != nil {
			t.Fatalf("admission %d of %d: %v", i+1, maxOpenPerPeer, err)
		}
	}
	if err := ad.admit("one too many", peer); !errors.Is(err, ErrTooManyOpen) {
		t.Fatalf("admission past the bound: %v, want %v", err, ErrTooManyOpen)
	}
	if err := ad.admit("another peer's", other); err != nil {
		t.Fatalf("another peer is refused: %v", err)
	}
	ad.track(rec("0", protocol.RoleProvider, protocol.StateNew, false)) // never stored: given back
	if err := ad.admit("one too many", peer); err != nil {
		t.Fatalf("a slot given back is not taken again: %v", err)
	}

	for _, tc := range []struct {
		name string
		rec  *storage.Negotiation
		held bool // after track, the place is held: the next takePlace of another is refused
	}{
		{"proposed", rec("b", protocol.RoleProvider, protocol.StateProposalSent, false), true},
		{"approved", rec("b", protocol.RoleProvider, protocol.StateApproved, true), true},
		{"cancelled", rec("b", protocol.RoleProvider, protocol.StateCancellationSent, false), false},
		{"rejected", rec("b", protocol.RoleProvider, protocol.StateRejected, true), false},
		{"as requester", rec("b", protocol.RoleRequester, protocol.StateApproved, true), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ad := newAdmission(1)
			if r := ad.takePlace("b", peer); r != nil {
				t.Fatalf("the first place is refused: %+v", r)
			}
			if r := ad.takePlace("b", peer); r != nil {
				t.Fatalf("the same negotiation is refused the place it holds: %+v", r)
			}
			ad.track(tc.rec)
			r := ad.takePlace("c", peer)
			if got := r != nil; got != tc.held || (r != nil && r.Reasons[0].Code != protocol.CodeAgreementLimit) {
				t.Fatalf("after track, another negotiation's place refused: %+v, want refused %v", r, tc.held)
			}
		})
	}
}
