package agent

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Tests of the operator's control over what is not final: withdrawing a request, cancelling
// and declining during a revision, and the expiry of requests and revisions on both sides.

// reasonCodes are the codes of the reasons a's record of ssaID holds.
func reasonCodes(t *testing.T, a *Agent, ssaID string) []protocol.Code {
	t.Helper()
	rec, err := a.Negotiation(ssaID)
	if err != nil {
		t.Fatal(err)
	}
	var codes []protocol.Code
	for _, r := range rec.Reasons {
		codes = append(codes, r.Code)
	}
	return codes
}

// undelivered reports whether a still holds a message of negotiation rec to send again.
func undelivered(a *Agent, rec *storage.Negotiation) bool {
	a.neg.mu.Lock()
	defer a.neg.mu.Unlock()
	_, ok := a.neg.undelivered[string(rec.ID)]
	return ok
}

func TestWithdrawRequest(t *testing.T) {
	ctx := context.Background()
	t.Run("held by the provider", func(t *testing.T) {
		prov := newTestAgent(t, "provider", nil)
		addOffer(t, prov, func(o *protocol.Offer) { o.Approval = protocol.ApprovalManual })
		req := newTestAgent(t, "requester", nil)
		rec := heldRequest(t, req, prov)
		got, err := req.Cancel(ctx, rec.SSAID)
		if err != nil || got.State != protocol.StateWithdrawn || !got.Delivered {
			t.Fatalf("withdraw: %+v, %v; want withdrawn, delivered", got, err)
		}
		waitState(t, prov, rec.SSAID, protocol.StateWithdrawn)
		if _, err := prov.Decide(ctx, rec.SSAID, Approve, ""); !errors.Is(err, ErrNotDecidable) {
			t.Fatalf("approving a withdrawn request: %v", err)
		}
		if _, err := req.store.Agreement(rec.SSAID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a withdrawn request left an agreement: %v", err)
		}
		if _, err := req.Cancel(ctx, rec.SSAID); !errors.Is(err, protocol.ErrUnexpected) {
			t.Fatalf("withdrawing twice: %v", err)
		}
	})
	t.Run("never acknowledged", func(t *testing.T) {
		prov := newTestAgent(t, "provider", nil)
		info := addrInfo(prov)
		if err := prov.Close(); err != nil {
			t.Fatal(err)
		}
		req := newTestAgent(t, "requester", nil)
		rec, err := req.Request(ctx, info, requestTemplate(t))
		if err != nil || rec.Delivered {
			t.Fatalf("%+v, %v", rec, err)
		}
		v, err := req.ShowNegotiation(rec.SSAID)
		if err != nil || v.Attempt == nil || v.Attempt.LastError == "" {
			t.Fatalf("show a request not delivered: %+v, %v; want the next attempt and the last error", v, err)
		}
		got, err := req.Cancel(ctx, rec.SSAID)
		if err != nil || got.State != protocol.StateFailed {
			t.Fatalf("withdraw: %+v, %v; want failed at once", got, err)
		}
		if codes := reasonCodes(t, req, rec.SSAID); !slices.Equal(codes, []protocol.Code{protocol.CodeWithdrawn}) {
			t.Fatalf("reasons %v, want withdrawn", codes)
		}
		if undelivered(req, rec) {
			t.Fatal("the withdrawn request is still sent again")
		}
		// A restart keeps it failed and sends nothing.
		home := req.home
		req.Close()
		req = reopen(t, home)
		if got, err := req.Negotiation(rec.SSAID); err != nil || got.State != protocol.StateFailed || undelivered(req, rec) {
			t.Fatalf("after a restart: %+v, %v, resent %v", got, err, undelivered(req, rec))
		}
		s, err := req.neg.acquire(rec.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		defer req.neg.release(s)
		if st := s.machine.State(); st != protocol.StateFailed {
			t.Fatalf("restored in %s", st)
		}
	})
	t.Run("proposal held by the requester", func(t *testing.T) {
		prov := newTestAgent(t, "provider", nil)
		addOffer(t, prov, nil)
		req := newTestAgent(t, "requester", func(c *Config) { c.Accept = "manual" })
		rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
		if err != nil || rec.State != protocol.StateProposalReceived {
			t.Fatalf("%+v, %v", rec, err)
		}
		if got, err := req.Cancel(ctx, rec.SSAID); err != nil || got.State != protocol.StateRejected {
			t.Fatalf("withdraw: %+v, %v", got, err)
		}
		waitState(t, prov, rec.SSAID, protocol.StateRejected)
		if codes := reasonCodes(t, prov, rec.SSAID); !slices.Equal(codes, []protocol.Code{protocol.CodeWithdrawn}) {
			t.Fatalf("the provider's reasons %v, want withdrawn", codes)
		}
	})
}

// revisionPending agrees an SSA between a provider that holds revisions for its operator and
// a requester, and has the requester revise it; it returns both, the SSA in force and the
// revision's ID.
func revisionPending(t *testing.T, edit func(*Config), opts Options) (prov, req *Agent, inForce, revision string) {
	t.Helper()
	ctx := context.Background()
	prov = newTestAgentWith(t, "provider", func(c *Config) {
		c.Accept = "manual"
		if edit != nil {
			edit(c)
		}
	}, opts)
	req = newTestAgentWith(t, "requester", edit, opts)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	rec, err := req.Request(ctx, addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	a, err := req.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Expires != 0 {
		t.Fatalf("the agreement carries the proposal's validity limit %s", a.Expires)
	}
	v := a.Clone()
	v.Policy.Handling.TLP = protocol.TLPRed
	r, err := req.Revise(ctx, rec.SSAID, v)
	if err != nil || r.State != protocol.StateRevisionSent {
		t.Fatalf("revise: %+v, %v", r, err)
	}
	waitState(t, prov, r.SSAID, protocol.StateRevisionReceived)
	return prov, req, rec.SSAID, r.SSAID
}

func TestCancelDuringRevision(t *testing.T) {
	ctx := context.Background()
	for _, who := range []string{"reviser", "holder"} {
		t.Run(who+" cancels", func(t *testing.T) {
			prov, req, inForce, revision := revisionPending(t, nil, Options{})
			canceller := map[string]*Agent{"reviser": req, "holder": prov}[who]
			got, err := canceller.Cancel(ctx, revision)
			if err != nil || got.State != protocol.StateAnnulled || got.SSAID != inForce {
				t.Fatalf("cancel: %+v, %v; want %s annulled", got, err, inForce)
			}
			for _, a := range []*Agent{prov, req} {
				waitState(t, a, inForce, protocol.StateAnnulled)
				ann, err := a.store.Agreement(inForce)
				if err != nil || ann.Status != protocol.StatusAnnulment {
					t.Fatalf("annulment: %+v, %v", ann, err)
				}
				if _, err := a.store.Agreement(revision); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("the dropped revision was agreed: %v", err)
				}
			}
			waitFor(t, 5*time.Second, func() (bool, string) {
				return prov.mgr.run(inForce) == nil, "the provider still shares under the cancelled SSA"
			})
		})
	}
	t.Run("holder declines", func(t *testing.T) {
		prov, req, inForce, revision := revisionPending(t, nil, Options{})
		if got, err := prov.Decide(ctx, revision, Decline, "not now"); err != nil || got.State != protocol.StateApproved {
			t.Fatalf("decline: %+v, %v", got, err)
		}
		waitState(t, req, inForce, protocol.StateApproved)
		if codes := reasonCodes(t, req, inForce); !slices.Equal(codes, []protocol.Code{protocol.CodeDeclined}) {
			t.Fatalf("reasons %v, want declined", codes)
		}
	})
}

// TestRestartDuringRevision: an agent restarted while a revision is pending keeps sharing
// under the SSA in force, and the revision goes on.
func TestRestartDuringRevision(t *testing.T) {
	prov, req, inForce, revision := revisionPending(t, nil, Options{})
	for _, a := range []**Agent{&prov, &req} {
		home := (*a).home
		(*a).Close()
		*a = reopen(t, home)
		if (*a).mgr.run(inForce) == nil {
			t.Fatalf("%s: the SSA in force is not implemented after a restart", home)
		}
		if v, err := (*a).ShowNegotiation(revision); err != nil || v.Phase != PhaseExecution {
			t.Fatalf("%s: %+v, %v; want phase execution", home, v, err)
		}
	}
	if err := req.host.Connect(context.Background(), addrInfo(prov)); err != nil {
		t.Fatal(err)
	}
	if as, err := req.Monitor(context.Background(), revision); err != nil || as.SSAID != inForce || as.Phase != PhaseExecution {
		t.Fatalf("monitor during the revision: %+v, %v; want %s in execution", as, err, inForce)
	}
	approve(t, prov, req, revision)
	if prov.mgr.run(revision) == nil || prov.mgr.run(inForce) != nil {
		t.Fatal("the revision is not in force in place of the SSA it supersedes")
	}
}

func TestRequestExpiresOnBothSides(t *testing.T) {
	var clock movableClock // shared: the agents agree on the time, as NTP makes them
	const validity = time.Minute
	prov := newTestAgentWith(t, "provider", nil, clock.options())
	addOffer(t, prov, func(o *protocol.Offer) { o.Approval = protocol.ApprovalManual })
	req := newTestAgentWith(t, "requester", func(c *Config) { c.RequestValidity = Duration(validity) }, clock.options())
	rec := heldRequest(t, req, prov)
	clock.advance(validity)
	for _, a := range []*Agent{req, prov} {
		waitState(t, a, rec.SSAID, protocol.StateExpired)
		if codes := reasonCodes(t, a, rec.SSAID); !slices.Equal(codes, []protocol.Code{protocol.CodeRequestExpired}) {
			t.Fatalf("reasons %v, want request-expired", codes)
		}
	}
	if got, _ := prov.Negotiation(rec.SSAID); got.Note != "" {
		t.Errorf("the expired request still says %q", got.Note)
	}
	if _, err := prov.Decide(context.Background(), rec.SSAID, Approve, ""); !errors.Is(err, ErrNotDecidable) {
		t.Fatalf("approving an expired request: %v", err)
	}
}

func TestRevisionExpiresOnBothSides(t *testing.T) {
	var clock movableClock
	const validity = time.Minute
	prov, req, inForce, revision := revisionPending(t, func(c *Config) { c.RequestValidity = Duration(validity) }, clock.options())
	clock.advance(validity)
	for _, a := range []*Agent{req, prov} {
		waitState(t, a, inForce, protocol.StateApproved)
		if codes := reasonCodes(t, a, inForce); !slices.Equal(codes, []protocol.Code{protocol.CodeRevisionExpired}) {
			t.Fatalf("reasons %v, want revision-expired", codes)
		}
		if a.mgr.run(inForce) == nil {
			t.Fatal("the SSA in force stopped with the revision")
		}
	}
	if _, err := prov.Decide(context.Background(), revision, Approve, ""); !errors.Is(err, ErrNotDecidable) {
		t.Fatalf("approving an expired revision: %v", err)
	}
}

// TestCancellationCrossesConfirmation: the requester cancels while the provider confirms its
// revision; the confirmation prevails (protocol.Cancel), so the requester's agent cancels
// again, the revised SSA now in force: both end with it annulled.
func TestCancellationCrossesConfirmation(t *testing.T) {
	ctx := context.Background()
	prov, req, inForce, revision := revisionPending(t, nil, Options{})
	hear := withholdConfirmations(req)
	if got, err := prov.Decide(ctx, revision, Approve, ""); err != nil || got.State != protocol.StateApproved || got.Delivered {
		t.Fatalf("approve the revision: %+v, %v; want approved, not delivered", got, err)
	}
	got, err := req.Cancel(ctx, revision)
	if err != nil || got.State != protocol.StateCancellationSent {
		t.Fatalf("cancel: %+v, %v", got, err)
	}
	hear()
	for _, a := range []*Agent{prov, req} {
		waitState(t, a, revision, protocol.StateAnnulled)
		ann, err := a.store.Agreement(revision)
		if err != nil || ann.Status != protocol.StatusAnnulment {
			t.Fatalf("the revised SSA's annulment: %+v, %v", ann, err)
		}
		// The store says annulled once the step is committed; the management point hears of
		// it right after.
		waitFor(t, 5*time.Second, func() (bool, string) {
			return a.mgr.run(revision) == nil && a.mgr.run(inForce) == nil, "an SSA is still in force"
		})
	}
}
