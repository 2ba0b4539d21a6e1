package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// newTestAgent initialises a home in a temp dir and starts an agent on loopback TCP.
func newTestAgent(t testing.TB, name string, edit func(*Config)) *Agent {
	t.Helper()
	return newTestAgentWith(t, name, edit, Options{})
}

// newTestAgentWith is newTestAgent with opts.
func newTestAgentWith(t testing.TB, name string, edit func(*Config), opts Options) *Agent {
	t.Helper()
	home := filepath.Join(t.TempDir(), name)
	cfg := DefaultConfig()
	cfg.Contact = protocol.Participant{Name: name, Affiliation: name + " org"}
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.RetryInterval = Duration(200 * time.Millisecond)
	cfg.MDNS = false // tests send nothing beyond loopback
	if edit != nil {
		edit(&cfg)
	}
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	a, err := New(home, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// movableClock follows the wall clock and can be moved forward, so that a test reaches a
// validity limit or an expiry at once instead of sleeping until it.
type movableClock struct {
	mu    sync.Mutex
	ahead time.Duration
}

func (c *movableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.ahead)
}

func (c *movableClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ahead += d
}

// options are the agent options of an agent on c.
func (c *movableClock) options() Options { return Options{Now: c.now} }

func addrInfo(a *Agent) peer.AddrInfo {
	return peer.AddrInfo{ID: a.ID(), Addrs: a.Host().Addrs()}
}

func requestTemplate(t testing.TB) *protocol.SSA {
	t.Helper()
	s, err := protocol.ParseSSAYAML(protocol.ExampleRequester, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func addOffer(t testing.TB, a *Agent, edit func(*protocol.Offer)) {
	t.Helper()
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(o)
	}
	if err := a.store.PutOffer(o); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 20 ms until it holds; after timeout the test fails with what cond
// last said.
func waitFor(t testing.TB, timeout time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState polls a's record of ssaID until it reaches want.
func waitState(t testing.TB, a *Agent, ssaID string, want protocol.State) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		rec, err := a.Negotiation(ssaID)
		return err == nil && rec.State == want, fmt.Sprintf("%s never reached %s (last: %+v, %v)", ssaID, want, rec, err)
	})
}

// agreedPair is a provider with the example offer and a requester that agreed an SSA with it
// from tmpl; both hold it approved.
func agreedPair(t testing.TB, tmpl *protocol.SSA) (prov, req *Agent, rec *storage.Negotiation) {
	t.Helper()
	prov = newTestAgent(t, "provider", nil)
	req = newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)
	rec, err := req.Request(context.Background(), addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	return prov, req, rec
}

// heldRequest has req request from prov, whose offers hold requests for the operator, and
// waits until prov holds it.
func heldRequest(t testing.TB, req, prov *Agent) *storage.Negotiation {
	t.Helper()
	rec, err := req.Request(context.Background(), addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateRequestSent {
		t.Fatalf("%+v, %v; want request-sent", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateRequestReceived)
	return rec
}

// approve has a's operator approve what waits for a decision in ssaID, and waits until both
// agents hold the SSA approved.
func approve(t testing.TB, a, other *Agent, ssaID string) {
	t.Helper()
	if _, err := a.Decide(context.Background(), ssaID, Approve, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, ssaID, protocol.StateApproved)
	waitState(t, other, ssaID, protocol.StateApproved)
}

func TestNegotiateOverLibp2p(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)

	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != protocol.StateApproved {
		t.Fatalf("requester state %s, want approved", rec.State)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	a, err := req.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prov.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	ab, _ := a.Encode()
	bb, _ := b.Encode()
	if string(ab) != string(bb) {
		t.Fatal("the two agents hold different agreements")
	}

	// Revision by the provider, then cancellation by the requester.
	v2 := a.Clone()
	v2.Policy.Handling.TLP = protocol.TLPRed
	r2, err := prov.Revise(ctx, rec.SSAID, v2)
	if err != nil {
		t.Fatal(err)
	}
	if r2.State != protocol.StateApproved || r2.SSAID == rec.SSAID {
		t.Fatalf("after revision: %s %s", r2.State, r2.SSAID)
	}
	waitState(t, req, r2.SSAID, protocol.StateApproved)
	if _, err := req.Cancel(ctx, r2.SSAID); err != nil {
		t.Fatal(err)
	}
	waitState(t, prov, r2.SSAID, protocol.StateAnnulled)
	waitState(t, req, r2.SSAID, protocol.StateAnnulled)
	ann, err := prov.store.Agreement(r2.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := protocol.VerifySSA(ann); err != nil || ann.Status != protocol.StatusAnnulment {
		t.Fatalf("annulment %s: %v", ann.Status, err)
	}
	for _, a := range []*Agent{prov, req} {
		if held := a.neg.sessions.len(); held != 0 {
			t.Errorf("%d negotiations at rest are still held in memory", held)
		}
	}
}

func TestRejectedAndManual(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, func(o *protocol.Offer) { o.Terms.Information = o.Terms.Information[2:] })

	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != protocol.StateRejected || len(rec.Reasons) == 0 || rec.Reasons[0].Code != protocol.CodeNoOffer {
		t.Fatalf("state %s reasons %v", rec.State, rec.Reasons)
	}

	addOffer(t, prov, func(o *protocol.Offer) { o.ID, o.Approval = "manual", protocol.ApprovalManual })
	approve(t, prov, req, heldRequest(t, req, prov).SSAID)
}

func TestMetricsEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := newTestAgent(t, "metrics", func(c *Config) { c.Metrics = addr })
	if _, err := a.Ingest(context.Background(), protocol.FormatEVE, strings.NewReader("{}\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"ssanet_records_ingested_total 1", "libp2p_"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestUnansweredProposalExpires(t *testing.T) {
	ctx := context.Background()
	var clock movableClock // shared: the agents agree on the time, as NTP makes them
	const validity = time.Second
	prov := newTestAgentWith(t, "provider", nil, clock.options())
	req := newTestAgentWith(t, "requester", func(c *Config) { c.Accept = "manual" }, clock.options())
	addOffer(t, prov, func(o *protocol.Offer) { o.ProposalValidity = protocol.Duration(validity / time.Second) })
	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateProposalReceived {
		t.Fatalf("%+v, %v", rec, err)
	}
	clock.advance(validity)
	waitState(t, req, rec.SSAID, protocol.StateExpired)
	waitState(t, prov, rec.SSAID, protocol.StateExpired)
	if _, err := req.Decide(ctx, rec.SSAID, Approve, ""); !errors.Is(err, ErrNotDecidable) && !errors.Is(err, protocol.ErrProposalExpired) {
		t.Fatalf("approving an expired proposal: %v", err)
	}

	// An operator who approves an expired proposal before the agent noticed it has expired
	// is told so, and the negotiation is expired in the store too.
	late := newTestAgentWith(t, "late", func(c *Config) { c.Accept, c.RetryInterval = "manual", Duration(time.Hour) }, clock.options())
	rec, err = late.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateProposalReceived {
		t.Fatalf("%+v, %v", rec, err)
	}
	clock.advance(validity)
	if _, err := late.Decide(ctx, rec.SSAID, Approve, ""); !errors.Is(err, protocol.ErrProposalExpired) {
		t.Fatalf("approving an expired proposal: %v", err)
	}
	if got, err := late.store.Negotiation(rec.ID); err != nil || got.State != protocol.StateExpired {
		t.Fatalf("stored after the refused approval: %+v, %v", got, err)
	}
}

// TestSSAIDInUse: a request whose SSA ID already names another negotiation's SSA is refused
// with a reason, by the provider (another requester chose the same ID) and by the requester
// itself (a template with a fixed id used twice); the first negotiation keeps its ID.
func TestSSAIDInUse(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	other := newTestAgent(t, "other", nil)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.ID = "ssa-fixed-0001"

	first, err := req.Request(ctx, addrInfo(prov), tmpl)
	if err != nil || first.State != protocol.StateApproved {
		t.Fatalf("first request: %+v, %v", first, err)
	}
	if _, err := req.Request(ctx, addrInfo(prov), tmpl); !errors.Is(err, storage.ErrSSAInUse) || !strings.Contains(err.Error(), "leave id out") {
		t.Fatalf("the same id again from the same requester: %v", err)
	}
	rec, err := other.Request(ctx, addrInfo(prov), tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != protocol.StateRejected || len(rec.Reasons) != 1 || rec.Reasons[0].Code != protocol.CodeSSAIDInUse {
		t.Fatalf("the same id from another requester: state %s, reasons %v", rec.State, rec.Reasons)
	}
	kept, err := prov.Negotiation(tmpl.ID)
	if err != nil || !bytes.Equal(kept.ID, first.ID) || kept.State != protocol.StateApproved {
		t.Fatalf("the provider's negotiation of %s: %+v, %v", tmpl.ID, kept, err)
	}
	recs, err := prov.store.Negotiations()
	if err != nil || len(recs) != 2 {
		t.Fatalf("provider holds %d negotiations (%v), want the approved one and the refused one", len(recs), err)
	}
}

// TestCrossingCancellations has both sides cancel or revise an approved SSA while they cannot
// reach each other, so that each message is persisted before the other's arrives; when they
// reconnect, the resend loops deliver both and the crossing is settled the same way on both
// sides (protocol.TestCrossing has the rule) instead of each refusing the other's forever.
func TestCrossingCancellations(t *testing.T) {
	type act func(a *Agent, ssaID string) (*storage.Negotiation, error)
	ctx := context.Background()
	cancel := func(a *Agent, id string) (*storage.Negotiation, error) { return a.Cancel(ctx, id) }
	revise := func(a *Agent, id string) (*storage.Negotiation, error) {
		s, err := a.store.Agreement(id)
		if err != nil {
			return nil, err
		}
		v := s.Clone()
		v.Policy.Handling.TLP = protocol.TLPRed // stricter: the requester accepts it
		return a.Revise(ctx, id, v)
	}
	tests := []struct {
		name      string
		req, prov act
		want      protocol.State
		providers bool // the provider's revision prevails (else the original SSA is annulled)
	}{
		{"both cancel", cancel, cancel, protocol.StateAnnulled, false},
		{"requester cancels, provider revises", cancel, revise, protocol.StateAnnulled, false},
		{"both revise", revise, revise, protocol.StateApproved, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prov, req, rec := agreedPair(t, requestTemplate(t))

			// Cut the two apart: no connection, no address to dial.
			addrs := map[*Agent]peer.AddrInfo{req: addrInfo(prov), prov: addrInfo(req)}
			for a, p := range addrs {
				a.host.Peerstore().ClearAddrs(p.ID)
				a.host.Network().ClosePeer(p.ID)
			}
			r1, err := tt.req(req, rec.SSAID)
			if err != nil {
				t.Fatal(err)
			}
			p1, err := tt.prov(prov, rec.SSAID)
			if err != nil {
				t.Fatal(err)
			}
			if r1.Delivered || p1.Delivered {
				t.Fatalf("delivered while cut apart: requester %v, provider %v", r1.Delivered, p1.Delivered)
			}
			for a, p := range addrs {
				if sw, ok := a.host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
					sw.Backoff().Clear(p.ID)
				}
				a.host.Peerstore().AddAddrs(p.ID, p.Addrs, time.Hour)
			}

			final := rec.SSAID
			if tt.providers {
				final = p1.SSAID
			}
			waitState(t, req, final, tt.want)
			waitState(t, prov, final, tt.want)
			a, err := req.store.Agreement(final)
			if err != nil {
				t.Fatal(err)
			}
			b, err := prov.store.Agreement(final)
			if err != nil {
				t.Fatal(err)
			}
			ab, _ := a.Encode()
			bb, _ := b.Encode()
			if !bytes.Equal(ab, bb) {
				t.Fatal("the two agents hold different agreements")
			}
			for _, x := range []*Agent{req, prov} {
				waitDelivered(t, x, final)
			}
		})
	}
}

// waitDelivered waits until a's last message in the negotiation of ssaID is acknowledged:
// nothing is left for the resend loop.
func waitDelivered(t testing.TB, a *Agent, ssaID string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		rec, err := a.Negotiation(ssaID)
		return err == nil && rec.Delivered, fmt.Sprintf("%s: the last message is never acknowledged (%+v, %v)", ssaID, rec, err)
	})
}

// TestFailedCommitRollsBack: when a step cannot be persisted, the session goes back to what
// the store holds, for every goroutine that holds it, and nothing unsaved is sent; the same
// decision succeeds once the store takes it.
func TestFailedCommitRollsBack(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", func(c *Config) { c.Accept = "manual" })
	addOffer(t, prov, nil)
	rec, err := req.Request(ctx, addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateProposalReceived {
		t.Fatalf("%+v, %v", rec, err)
	}
	held, err := req.neg.acquire(rec.ID, "") // as a goroutine waiting for the session would
	if err != nil {
		t.Fatal(err)
	}
	defer req.neg.release(held)
	held.mu.Lock()
	held.rec.Reasons = []protocol.Reason{{Text: "\xc3"}} // the store refuses what is not UTF-8
	held.mu.Unlock()
	if _, err := req.Decide(ctx, rec.SSAID, Approve, ""); err == nil {
		t.Fatal("the acceptance was taken although it could not be persisted")
	}
	held.mu.Lock()
	state, n := held.machine.State(), len(held.machine.Transcript())
	held.mu.Unlock()
	if state != protocol.StateProposalReceived || n != 2 {
		t.Fatalf("after the failed commit the session is %s with %d messages, want %s with 2", state, n, protocol.StateProposalReceived)
	}
	if got, err := prov.Negotiation(rec.SSAID); err != nil || got.State != protocol.StateProposalSent {
		t.Fatalf("the provider got something: %+v, %v", got, err)
	}
	approve(t, req, prov, rec.SSAID)
}

// reopen starts the agent of home again, closed when the test ends.
func reopen(t *testing.T, home string) *Agent {
	t.Helper()
	return reopenWith(t, home, Options{})
}

// reopenWith is reopen with opts.
func reopenWith(t *testing.T, home string, opts Options) *Agent {
	t.Helper()
	a, err := New(home, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestAcquire: goroutines that want the same negotiation at once while it is read back from
// the store share one session, dropped from memory when the last lets go (it is at rest); a
// negotiation the store does not know is an error for each of them and leaves nothing in
// memory.
func TestAcquire(t *testing.T) {
	_, req, rec := agreedPair(t, requestTemplate(t))
	if n := req.neg.sessions.len(); n != 0 {
		t.Fatalf("%d sessions in memory after an approval", n)
	}
	for _, tc := range []struct {
		name string
		nid  []byte
		err  error
	}{
		{"stored", rec.ID, nil},
		{"unknown", []byte("no such negotiation"), storage.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 8
			got := make([]*session, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { got[i], errs[i] = req.neg.acquire(tc.nid, "") })
			}
			wg.Wait()
			for i := range n {
				if !errors.Is(errs[i], tc.err) || (tc.err == nil) != (got[i] != nil) || got[i] != got[0] {
					t.Fatalf("acquire %d: %p, %v; first %p", i, got[i], errs[i], got[0])
				}
				if got[i] != nil {
					req.neg.release(got[i])
				}
			}
			if n := req.neg.sessions.len(); n != 0 {
				t.Fatalf("%d sessions left in memory", n)
			}
		})
	}
}
