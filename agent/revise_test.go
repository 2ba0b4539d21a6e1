package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// revisionSettled waits until both agents hold the negotiation of ssaID at rest in approved, and
// returns the requester's record: a new SSA ID if the revision was confirmed, the reasons
// of its rejection otherwise.
func revisionSettled(t *testing.T, a, b *Agent, ssaID string) *storage.Negotiation {
	t.Helper()
	var rec *storage.Negotiation
	waitFor(t, 10*time.Second, func() (bool, string) {
		var err error
		rec, err = a.Negotiation(ssaID)
		if err != nil || rec.State != protocol.StateApproved {
			return false, fmt.Sprintf("%s: %+v, %v", ssaID, rec, err)
		}
		other, err := b.Negotiation(ssaID)
		return err == nil && other.State == protocol.StateApproved && other.SSAID == rec.SSAID,
			fmt.Sprintf("%s: the agents hold %s and %+v (%v)", ssaID, rec.SSAID, other, err)
	})
	return rec
}

func components(rs []protocol.Reason) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Component)
	}
	return out
}

// TestRevisionFlowBetweenAgents revises one SSA in turn from both sides. A requester's
// revision is met against the provider's offer as it is now (tightened since the agreement);
// the requester judges a provider's revision against its own last confirmed revision, not
// the original request; a provider cannot revise below its offer; and a revision that
// conflicts is refused by the other side with reasons naming the component and the revision.
func TestRevisionFlowBetweenAgents(t *testing.T) {
	ctx := context.Background()
	prov, req, rec := agreedPair(t, requestTemplate(t))
	addOffer(t, prov, func(o *protocol.Offer) { // as AddOffer stores it: the offers protocol serves it signed
		o.Terms.Policy.Handling.TLP = protocol.TLPRed
		o.Terms.Participants.Provider.PeerID = prov.ID().String()
	})

	type step struct {
		name   string
		by     *Agent
		sets   []string
		refuse []string // components the other side names; none: confirmed
		check  func(t *testing.T, s *protocol.SSA)
	}
	steps := []step{
		{name: "requester: retention, met with the tightened offer", by: req, sets: []string{"handling.retention=30d"},
			check: func(t *testing.T, s *protocol.SSA) {
				if h := s.Policy.Handling; h.TLP != protocol.TLPRed || h.Retention != 30*86400 {
					t.Errorf("handling %+v, want the offer's TLP RED now and retention 30d", h)
				}
			}},
		{name: "requester: drops the request's filter", by: req, sets: []string{"filtering=[]"}},
		{name: "provider: another filter, start now; judged against the requester's last revision", by: prov,
			sets: []string{`filtering=[{expr: 'r["source.ip"] == "2.2.2.2"'}]`, "schedule.start=now"},
			check: func(t *testing.T, s *protocol.SSA) {
				if len(s.Policy.Filtering) != 1 || !strings.Contains(s.Policy.Filtering[0].Expr, "2.2.2.2") {
					t.Errorf("filtering %+v", s.Policy.Filtering)
				}
			}},
		{name: "requester: public IPs unmasked conflicts with the offer", by: req,
			sets: []string{"masking=[{scope: public-ip, method: none}]"}, refuse: []string{"policy.masking"}},
		{name: "provider: a longer schedule than the requester asked", by: prov,
			sets: []string{"schedule.end=now+400d"}, refuse: []string{"schedule"}},
	}
	id := rec.SSAID
	for _, st := range steps {
		other := prov
		if st.by == prov {
			other = req
		}
		sent, err := st.by.ReviseTemplate(ctx, id, nil, st.sets)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := revisionSettled(t, st.by, other, id)
		if st.refuse != nil {
			if got.SSAID != id || !slices.Equal(components(got.Reasons), st.refuse) {
				t.Fatalf("%s: want %s in force and reasons naming %v; got %s, %v", st.name, id, st.refuse, got.SSAID, got.Reasons)
			}
			for _, r := range got.Reasons {
				if strings.Contains(r.Text, "proposal") {
					t.Errorf("%s: a reason about a revision speaks of a proposal: %s", st.name, r)
				}
			}
			continue
		}
		if got.SSAID != sent.SSAID || got.SSAID == id || len(got.Reasons) > 0 {
			t.Fatalf("%s: want %s confirmed, got %s with reasons %v", st.name, sent.SSAID, got.SSAID, got.Reasons)
		}
		id = got.SSAID
		if st.check != nil {
			s, err := other.store.Agreement(id)
			if err != nil {
				t.Fatal(err)
			}
			st.check(t, s)
		}
	}

	_, err := prov.ReviseTemplate(ctx, id, nil, []string{"handling.tlp=green"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "policy.handling") || !strings.Contains(err.Error(), "offer") {
		t.Errorf("a provider's revision below its offer: %v; want ErrInvalid naming policy.handling and the offer", err)
	}
	if _, err := req.ReviseTemplate(ctx, id, nil, []string{"handling.colour=red"}); !errors.Is(err, ErrInvalid) || !errors.Is(err, protocol.ErrRevisionPath) {
		t.Errorf("an unknown path: %v, want ErrInvalid and protocol.ErrRevisionPath", err)
	}
}

// TestRevisionHeldNote: with accept: manual, a revision received is held and the note says
// it is a revision and how to decide it.
func TestRevisionHeldNote(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", func(c *Config) { c.Accept = "manual" })
	addOffer(t, prov, nil)
	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	approve(t, req, prov, rec.SSAID)
	sent, err := prov.ReviseTemplate(ctx, rec.SSAID, nil, []string{"handling.tlp=RED"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, req, sent.SSAID, protocol.StateRevisionReceived)
	held, err := req.Negotiation(sent.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(held.Note, "revision held for an operator: ssanet ssa approve|decline "+sent.SSAID) {
		t.Errorf("note %q", held.Note)
	}
	approve(t, req, prov, sent.SSAID)
}

// TestRevisionPrefersTheAgreedOffer: of two offers that fit a requester's revision, it is
// met with the one the SSA in force satisfies (the offer it was agreed under, which the
// requester is not told), not with one added later that would mask more.
func TestRevisionPrefersTheAgreedOffer(t *testing.T) {
	ctx := context.Background()
	prov, req, rec := agreedPair(t, requestTemplate(t))
	addOffer(t, prov, func(o *protocol.Offer) { // listed first: offers come in the order of their IDs
		o.ID = "aaa-removes-addresses"
		o.Terms.Policy.Masking = []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskRemove}}
		o.Terms.Participants.Provider.PeerID = prov.ID().String()
	})
	addOffer(t, prov, func(o *protocol.Offer) { o.Terms.Participants.Provider.PeerID = prov.ID().String() })
	offers, err := prov.store.Offers()
	if err != nil || len(offers) != 2 || offers[0].ID != "aaa-removes-addresses" {
		t.Fatalf("offers %v, %v: want the later offer listed first", offers, err)
	}
	sent, err := req.ReviseTemplate(ctx, rec.SSAID, nil, []string{"handling.retention=30d"})
	if err != nil {
		t.Fatal(err)
	}
	got := revisionSettled(t, req, prov, rec.SSAID)
	if got.SSAID != sent.SSAID || len(got.Reasons) > 0 {
		t.Fatalf("want %s confirmed, got %s with reasons %v", sent.SSAID, got.SSAID, got.Reasons)
	}
	s, err := req.store.Agreement(got.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Policy.Masking; len(m) != 1 || m[0].Method != protocol.MaskTruncate || m[0].Bits != 8 {
		t.Errorf("masking %+v, want the agreed offer's truncation by 8 bits kept", m)
	}
}
