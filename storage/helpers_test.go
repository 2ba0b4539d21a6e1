package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/ssanet/ssanet/protocol"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// identities are fixed per seed byte and cached: key generation is the slow part of a fixture.
var identities sync.Map // byte -> *protocol.Identity

func identity(t testing.TB, b byte) *protocol.Identity {
	t.Helper()
	if id, ok := identities.Load(b); ok {
		return id.(*protocol.Identity)
	}
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{b}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	identities.Store(b, id)
	return id
}

// testNID returns the 16-byte negotiation ID numbered i.
func testNID(i uint64) []byte {
	nid := make([]byte, 16)
	copy(nid, "nid:")
	binary.BigEndian.PutUint64(nid[8:], i)
	return nid
}

// sim is a requester and a provider negotiating in memory, every message sealed by its
// sender and opened from its bytes by its receiver. The store records the requester's side.
type sim struct {
	t    testing.TB
	now  time.Time
	nid  []byte
	r, p *protocol.Negotiation
	seen int // requester transcript entries already handed out
}

func newSim(t testing.TB, nid []byte) *sim {
	t.Helper()
	r, err := protocol.NewRequester(identity(t, 1), identity(t, 2).PeerID(), nid)
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, now: t0, nid: nid, r: r, p: protocol.NewProvider(identity(t, 2))}
}

func (s *sim) step(n *protocol.Negotiation, ev protocol.Event) protocol.Output {
	s.t.Helper()
	out, err := n.Step(s.now, ev)
	if err != nil {
		s.t.Fatalf("%s %T in %s: %v", n.Role(), ev, n.State(), err)
	}
	return out
}

func (s *sim) deliver(n *protocol.Negotiation, env *protocol.Envelope) protocol.Output {
	s.t.Helper()
	got, err := protocol.Open(env.Bytes())
	if err != nil {
		s.t.Fatal(err)
	}
	return s.step(n, protocol.Receive{Env: got})
}

// news returns the requester's transcript entries not handed out yet.
func (s *sim) news() [][]byte {
	var out [][]byte
	for _, e := range s.r.Transcript()[s.seen:] {
		out = append(out, e.Bytes())
	}
	s.seen = len(s.r.Transcript())
	return out
}

// request starts the negotiation with an SSA of this ID and returns the request.
func (s *sim) request(ssaID string) [][]byte {
	s.t.Helper()
	req, err := protocol.ParseSSAYAML(protocol.ExampleRequester, s.now)
	if err != nil {
		s.t.Fatal(err)
	}
	req.ID = ssaID
	s.deliver(s.p, s.step(s.r, protocol.Start{SSA: req}).Send)
	return s.news()
}

// approve answers the request with the meet of the example offer, accepts and confirms. It
// returns the proposal, acceptance and confirmation, and the agreement.
func (s *sim) approve() ([][]byte, *protocol.SSA) {
	s.t.Helper()
	offer, err := protocol.ParseOfferYAML(protocol.ExampleProvider, s.now)
	if err != nil {
		s.t.Fatal(err)
	}
	prop, conflicts := protocol.Meet(s.p.Pending(), offer, protocol.FromTime(s.now))
	if conflicts != nil {
		s.t.Fatalf("meet: %v", conflicts)
	}
	s.deliver(s.r, s.step(s.p, protocol.Propose{SSA: prop}).Send)
	pout := s.deliver(s.p, s.step(s.r, protocol.Accept{}).Send)
	rout := s.deliver(s.r, pout.Send)
	return s.news(), rout.Agreement
}

// revise makes the requester revise the SSA in force under a new ID and the provider accept.
func (s *sim) revise(ssaID string) ([][]byte, *protocol.SSA) {
	s.t.Helper()
	v := s.r.Agreement().Clone()
	v.ID = ssaID
	s.deliver(s.p, s.step(s.r, protocol.Revise{SSA: v}).Send)
	rout := s.deliver(s.r, s.step(s.p, protocol.Accept{}).Send)
	return s.news(), rout.Agreement
}

// cancel makes the requester cancel the SSA in force and the provider confirm.
func (s *sim) cancel() ([][]byte, *protocol.SSA) {
	s.t.Helper()
	pout := s.deliver(s.p, s.step(s.r, protocol.Cancel{}).Send)
	rout := s.deliver(s.r, pout.Send)
	return s.news(), rout.Agreement
}

// record is the requester's negotiation record as the agent would write it.
func (s *sim) record() *Negotiation {
	n := &Negotiation{
		ID: s.nid, Role: s.r.Role(), Peer: s.r.Peer().String(), State: s.r.State(),
		Created: t0, Updated: s.now,
	}
	if a := s.r.Agreement(); a != nil {
		n.SSAID = a.ID
	}
	if p := s.r.Pending(); p != nil {
		n.SSAID = p.ID
	}
	return n
}

// approved is one fixture negotiation: four messages and the agreement.
type approved struct {
	msgs      [][]byte
	agreement *protocol.SSA
}

var (
	fixtureOnce sync.Once
	fixture     approved
)

// approvedFixture returns a 4-message approved negotiation (negotiation ID testNID(0), SSA ID
// "ssa-fixture"), computed once.
func approvedFixture(t testing.TB) approved {
	fixtureOnce.Do(func() {
		s := newSim(t, testNID(0))
		msgs := s.request("ssa-fixture")
		more, a := s.approve()
		fixture = approved{msgs: append(msgs, more...), agreement: a}
	})
	return fixture
}

var (
	poolMu sync.Mutex
	pool   []*protocol.SSA
)

// agreementPool returns n distinct verified agreements, grown and cached across calls.
func agreementPool(t testing.TB, n int) []*protocol.SSA {
	t.Helper()
	poolMu.Lock()
	defer poolMu.Unlock()
	if len(pool) < n {
		pool = append(pool, makeAgreements(t, fmt.Sprintf("pool%d", len(pool)), n-len(pool))...)
	}
	return pool[:n]
}

// makeAgreements returns n distinct verified agreements with IDs "<prefix>-<k>-<version>". Each
// negotiation yields an approval and as many revisions as its transcript allows; two
// goroutines share the signing.
func makeAgreements(t testing.TB, prefix string, n int) []*protocol.SSA {
	t.Helper()
	const perNegotiation = (protocol.MaxMessages - 4) / 2 // the approval and 125 revisions
	negotiations := (n + perNegotiation - 1) / perNegotiation
	out := make([][]*protocol.SSA, negotiations)
	var wg sync.WaitGroup
	for w := range min(negotiations, 2) {
		wg.Go(func() {
			for k := w; k < negotiations; k += 2 {
				s := newSim(panicTB{t}, testNID(uint64(k)))
				s.request(fmt.Sprintf("%s-%d-1", prefix, k))
				_, a := s.approve()
				out[k] = append(out[k], a)
				for v := 2; v <= perNegotiation && k*perNegotiation+v <= n; v++ {
					_, a := s.revise(fmt.Sprintf("%s-%d-%d", prefix, k, v))
					out[k] = append(out[k], a)
				}
			}
		})
	}
	wg.Wait()
	return slices.Concat(out...)
}

// panicTB is a testing.TB for goroutines other than the test's, where Fatal must not be
// called: it panics instead.
type panicTB struct{ testing.TB }

func (panicTB) Helper() {}

func (panicTB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
