package protocol

import (
	"bytes"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// testIdentity returns a fixed identity for seed byte b, so golden bytes are stable.
func testIdentity(t testing.TB, b byte) *Identity {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{b}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testNID(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

func exampleRequest(t testing.TB, now time.Time) *SSA {
	t.Helper()
	s, err := ParseSSAYAML(ExampleRequester, now)
	if err != nil {
		t.Fatal(err)
	}
	s.ID = "ssa-test-1"
	return s
}

func exampleOffer(t testing.TB, now time.Time) *Offer {
	t.Helper()
	o, err := ParseOfferYAML(ExampleProvider, now)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// pair is a requester and a provider negotiating in memory.
type pair struct {
	t     testing.TB
	r, p  *Negotiation
	offer *Offer
	now   time.Time
	rid   *Identity
	pid   *Identity
}

func newPair(t testing.TB) *pair {
	rid, pid := testIdentity(t, 1), testIdentity(t, 2)
	r, err := NewRequester(rid, pid.PeerID(), testNID(7))
	if err != nil {
		t.Fatal(err)
	}
	return &pair{t: t, r: r, p: NewProvider(pid), offer: exampleOffer(t, t0), now: t0, rid: rid, pid: pid}
}

// step applies ev to n and fails the test on error.
func (pr *pair) step(n *Negotiation, ev Event) Output {
	pr.t.Helper()
	out, err := n.Step(pr.now, ev)
	if err != nil {
		pr.t.Fatalf("%s %T in %s: %v", n.Role(), ev, n.State(), err)
	}
	return out
}

// deliver opens the envelope's bytes, as a network would, and gives it to n.
func (pr *pair) deliver(n *Negotiation, env *Envelope) Output {
	pr.t.Helper()
	got, err := Open(env.Bytes())
	if err != nil {
		pr.t.Fatal(err)
	}
	return pr.step(n, Receive{got})
}

// approve runs the success scenario and returns the requester's and provider's last outputs.
func (pr *pair) approve() (Output, Output) {
	pr.t.Helper()
	out := pr.step(pr.r, Start{exampleRequest(pr.t, pr.now)})
	pr.deliver(pr.p, out.Send)
	prop, conflicts := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	if conflicts != nil {
		pr.t.Fatalf("meet: %v", conflicts)
	}
	out = pr.step(pr.p, Propose{prop})
	pr.deliver(pr.r, out.Send)
	if rs := Satisfies(pr.r.Pending(), exampleRequest(pr.t, pr.now)); len(rs) > 0 {
		pr.t.Fatalf("proposal does not satisfy the request: %v", rs)
	}
	out = pr.step(pr.r, Accept{})
	pout := pr.deliver(pr.p, out.Send)
	rout := pr.deliver(pr.r, pout.Send)
	return rout, pout
}
