package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	msmux "github.com/multiformats/go-multistream"

	"github.com/ssanet/ssanet/protocol"
)

// TestResendBackoff: a request to a provider that is down is sent again less and less often;
// when the provider is back and a connection comes up, it is sent at once rather than at the
// end of the wait it had reached.
func TestResendBackoff(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, nil)
	home, info := prov.home, addrInfo(prov)
	if err := prov.Close(); err != nil {
		t.Fatal(err)
	}
	interval := 100 * time.Millisecond
	req := newTestAgent(t, "requester", func(c *Config) { c.RetryInterval = Duration(interval) })
	rec, err := req.Request(ctx, info, requestTemplate(t))
	if err != nil || rec.State != protocol.StateRequestSent {
		t.Fatalf("%+v, %v", rec, err)
	}
	wait := func() time.Duration {
		req.neg.mu.Lock()
		defer req.neg.mu.Unlock()
		if r := req.neg.undelivered[string(rec.ID)]; r != nil {
			return r.delay
		}
		return -1
	}
	reached := 32 * interval // after six failed attempts
	waitFor(t, 20*time.Second, func() (bool, string) {
		w := wait()
		return w >= reached, fmt.Sprintf("the wait between attempts reached %v, want %v", w, reached)
	})

	back, err := New(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	start := time.Now()
	if err := back.host.Connect(ctx, addrInfo(req)); err != nil {
		t.Fatal(err)
	}
	waitState(t, req, rec.SSAID, protocol.StateApproved)
	if took := time.Since(start); took >= reached/2 {
		t.Errorf("approved %v after the connection came up: the request waited out its back-off (%v)", took, reached)
	}
}

// blackHole is a peer that takes negotiation streams and never answers: every attempt to
// deliver to it waits for the message timeout.
func blackHole(t *testing.T) peer.AddrInfo {
	t.Helper()
	p := newRawPeer(t)
	p.h.SetStreamHandler(ProtocolNegotiate, func(st network.Stream) { io.Copy(io.Discard, st) })
	return peer.AddrInfo{ID: p.h.ID(), Addrs: p.h.Addrs()}
}

// TestResendPeerByPeer: messages to peers that never answer hold up only themselves; a
// message to a peer that is back goes out in the same round without waiting for them.
func TestResendPeerByPeer(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, nil)
	timeout := time.Second
	req := newTestAgent(t, "requester", func(c *Config) {
		c.RetryInterval = Duration(time.Hour) // the test runs the rounds itself
		c.MessageTimeout = Duration(timeout)
	})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := req.Request(ctx, blackHole(t), requestTemplate(t)); err != nil {
				t.Error(err)
			}
		})
	}
	// And one to the provider while the two cannot reach each other.
	req.host.Peerstore().ClearAddrs(prov.ID())
	rec, err := req.Request(ctx, peer.AddrInfo{ID: prov.ID()}, requestTemplate(t))
	if err != nil || rec.State != protocol.StateRequestSent {
		t.Fatalf("%+v, %v", rec, err)
	}
	wg.Wait()
	req.neg.mu.Lock()
	pending := len(req.neg.undelivered)
	for _, r := range req.neg.undelivered {
		r.at = time.Time{} // all due in the next round
	}
	req.neg.mu.Unlock()
	if pending != 4 {
		t.Fatalf("%d messages wait for delivery, want 4", pending)
	}
	req.host.Peerstore().AddAddrs(prov.ID(), prov.Host().Addrs(), time.Hour)
	if sw, ok := req.host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(prov.ID())
	}

	round := make(chan struct{})
	start := time.Now()
	go func() { defer close(round); req.neg.resendPending(ctx) }()
	waitState(t, req, rec.SSAID, protocol.StateApproved)
	if took := time.Since(start); took >= timeout {
		t.Errorf("the request to the provider went out after %v, behind the black holes (%v each)", took, timeout)
	}
	<-round
}

// TestUndeliveredProposalSurvives: a proposal the requester never got (it was away when the
// operator approved) is still sent after the provider restarts, and after it expires, so the
// requester's negotiation ends (approved, or expired) instead of waiting for good.
func TestUndeliveredProposalSurvives(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity protocol.Duration // seconds
		restart  bool
		want     protocol.State
	}{
		{"provider restarts", 3600, true, protocol.StateApproved},
		{"proposal expires", 60, false, protocol.StateExpired}, // long enough for a loaded machine; the clock skips it
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var clock movableClock
			prov := newTestAgentWith(t, "provider", nil, clock.options())
			addOffer(t, prov, func(o *protocol.Offer) {
				o.Approval, o.ProposalValidity = protocol.ApprovalManual, tc.validity
			})
			req := newTestAgentWith(t, "requester", nil, clock.options())
			rec := heldRequest(t, req, prov)
			reqHome := req.home
			req.Close() // away while the operator decides
			if p, err := prov.Decide(ctx, rec.SSAID, Approve, ""); err != nil || p.Delivered {
				t.Fatalf("%+v, %v", p, err)
			}
			if tc.restart {
				home := prov.home
				prov.Close()
				prov = reopenWith(t, home, clock.options())
			}
			if tc.want == protocol.StateExpired {
				clock.advance(time.Duration(tc.validity) * time.Second)
			}
			// Wait for the resend loop to have checked the proposal's validity once.
			waitFor(t, 10*time.Second, func() (bool, string) {
				prov.neg.mu.Lock()
				defer prov.neg.mu.Unlock()
				exp, ok := prov.neg.expiries[string(rec.ID)]
				return !ok || !exp.IsZero(), "the provider never checked the proposal's validity"
			})
			if tc.want == protocol.StateExpired {
				waitState(t, prov, rec.SSAID, protocol.StateExpired)
			}
			if p, err := prov.Negotiation(rec.SSAID); err != nil || p.Delivered {
				t.Fatalf("the provider holds its proposal as delivered: %+v, %v", p, err)
			}
			req = reopenWith(t, reqHome, clock.options())
			if err := req.host.Connect(ctx, addrInfo(prov)); err != nil {
				t.Fatal(err)
			}
			waitState(t, req, rec.SSAID, tc.want)
		})
	}
}

// onFixedPort is newTestAgent listening on a loopback TCP port of its own that it keeps when
// reopened.
func onFixedPort(t *testing.T, name string, edit func(*Config)) *Agent {
	t.Helper()
	_, port, err := net.SplitHostPort(freePort(t, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	return newTestAgent(t, name, func(c *Config) {
		c.Listen = []string{"/ip4/127.0.0.1/tcp/" + port}
		if edit != nil {
			edit(c)
		}
	})
}

// TestPeerAddressesSurviveRestart: an agent that restarts while it still has to reach a
// peer by itself (a request not yet delivered; a request held for its operator) finds the
// peer at the address it had, with no directory to ask.
func TestPeerAddressesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	t.Run("requester with a request not delivered", func(t *testing.T) {
		prov := onFixedPort(t, "provider", nil)
		addOffer(t, prov, nil)
		info, provHome := addrInfo(prov), prov.home
		prov.Close()
		req := newTestAgent(t, "requester", nil)
		rec, err := req.Request(ctx, info, requestTemplate(t))
		if err != nil || rec.State != protocol.StateRequestSent || rec.Delivered {
			t.Fatalf("%+v, %v", rec, err)
		}
		reqHome := req.home
		req.Close()
		reopen(t, provHome)
		req = reopen(t, reqHome)
		waitState(t, req, rec.SSAID, protocol.StateApproved)
	})
	t.Run("provider with a request held for its operator", func(t *testing.T) {
		prov := newTestAgent(t, "provider", nil)
		addOffer(t, prov, func(o *protocol.Offer) { o.Approval = protocol.ApprovalManual })
		req := onFixedPort(t, "requester", nil)
		rec := heldRequest(t, req, prov)
		provHome := prov.home
		prov.Close()
		approve(t, reopen(t, provHome), req, rec.SSAID)
	})
}

// lateIdentify makes p answer identify (which brings its listen addresses to the peers it
// connects to) only once release is closed.
func lateIdentify(t *testing.T, p *rawPeer, release <-chan struct{}) {
	t.Helper()
	// The host's own identify handler, found by negotiating its protocol over a pipe.
	c, s := net.Pipe()
	go msmux.SelectProtoOrFail(identify.ID, c)
	_, answer, err := p.h.Mux().Negotiate(s)
	c.Close()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.h.SetStreamHandler(identify.ID, func(st network.Stream) {
		<-release
		answer(identify.ID, st)
	})
}

// TestHeldRequestKeepsLateAddresses: a provider that holds a request for its operator keeps
// the requester's listen addresses for a restart even when identify, which brings them, ends
// after the request arrived; after the restart it can reach the requester.
func TestHeldRequestKeepsLateAddresses(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, func(o *protocol.Offer) { o.Approval = protocol.ApprovalManual })
	req := newRawPeer(t)
	release := make(chan struct{})
	lateIdentify(t, req, release)
	env := sealedRequest(t, req.id, prov, 1)
	ssaID := env.SSA.ID
	done := make(chan struct{})
	defer close(done)
	// Identify answers once the provider has recorded the request (without waiting for
	// identify, it does so at once), or after a second (it waits for identify).
	go func() {
		defer close(release)
		for range 50 {
			if _, err := prov.Negotiation(ssaID); err == nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	if _, err := req.exchange(t, prov, frame(env.Bytes())); err != nil {
		t.Fatal(err)
	}
	waitState(t, prov, ssaID, protocol.StateRequestReceived)
	home := prov.home
	prov.Close()
	prov = reopen(t, home)
	if addrs := prov.host.Peerstore().Addrs(req.h.ID()); len(addrs) == 0 {
		t.Fatalf("the restarted provider knows no address of the requester (%s, listening on %v)", req.h.ID(), req.h.Addrs())
	}
}
