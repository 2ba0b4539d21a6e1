package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ssanet/ssanet/protocol"
)

// rawPeer is a bare libp2p host that speaks the negotiation protocol by hand.
type rawPeer struct {
	h  host.Host
	id *protocol.Identity
}

func newRawPeer(t *testing.T) *rawPeer {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(k), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	id, err := protocol.NewIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	return &rawPeer{h: h, id: id}
}

// exchange opens a stream to a, writes raw bytes and returns the answer frame, or an error
// when the agent resets the stream.
func (p *rawPeer) exchange(t *testing.T, a *Agent, raw []byte) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.h.Connect(ctx, addrInfo(a)); err != nil {
		return nil, err
	}
	st, err := p.h.NewStream(ctx, a.ID(), ProtocolNegotiate)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write(raw); err != nil {
		return nil, err
	}
	return readFrame(bufio.NewReader(st), protocol.MaxMessageSize)
}

// stream opens a stream of protocol proto to a, closed when the test ends.
func (p *rawPeer) stream(t *testing.T, a *Agent, proto libp2pprotocol.ID) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.h.Connect(ctx, addrInfo(a)); err != nil {
		t.Fatal(err)
	}
	st, err := p.h.NewStream(ctx, a.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// sealedRequest makes a valid request envelope from signer for provider a: negotiation and
// SSA IDs are made from seq.
func sealedRequest(t *testing.T, signer *protocol.Identity, a *Agent, seq uint64) *protocol.Envelope {
	t.Helper()
	nid := binary.BigEndian.AppendUint64([]byte("bad-inpu"), seq)
	m, err := protocol.NewRequester(signer, a.ID(), nid)
	if err != nil {
		t.Fatal(err)
	}
	s := requestTemplate(t)
	s.ID = fmt.Sprintf("ssa-bad-input-%d", seq)
	out, err := m.Step(time.Now(), protocol.Start{SSA: s})
	if err != nil {
		t.Fatal(err)
	}
	return out.Send
}

func TestBadInputRefused(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, nil)
	mallory := newRawPeer(t)
	other := newRawPeer(t)

	oversized := binary.AppendUvarint(nil, protocol.MaxMessageSize+1)
	tests := []struct {
		name string
		raw  []byte
	}{
		{"garbage bytes", frame([]byte("this is not a COSE_Sign1 envelope"))},
		{"oversized frame", oversized},
		{"truncated varint", []byte{0xff, 0xff}},
		{"signed by another key", frame(sealedRequest(t, other.id, prov, 1).Bytes())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ans, err := mallory.exchange(t, prov, tc.raw); err == nil {
				t.Fatalf("the agent answered %d bytes instead of resetting the stream", len(ans))
			}
		})
	}

	// The agent still serves everyone: an honest request is answered with a proposal, and
	// the same request replayed gets the same answer without a second negotiation.
	env := sealedRequest(t, mallory.id, prov, 2)
	first, err := mallory.exchange(t, prov, frame(env.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := protocol.Open(first)
	if err != nil || ans.Header.Type != protocol.MsgProposal {
		t.Fatalf("answer %v, %v", ans, err)
	}
	again, err := mallory.exchange(t, prov, frame(env.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(first) {
		t.Fatal("a replayed request was not answered with the original proposal")
	}
	tr, err := prov.store.Transcript(env.Header.Negotiation)
	if err != nil || len(tr) != 2 {
		t.Fatalf("transcript %d messages, %v; want 2", len(tr), err)
	}
}

func TestAllowList(t *testing.T) {
	friend := newRawPeer(t)
	prov := newTestAgent(t, "provider", func(c *Config) { c.Allow = []string{friend.h.ID().String()} })
	addOffer(t, prov, nil)
	stranger := newRawPeer(t)
	if _, err := stranger.exchange(t, prov, frame(sealedRequest(t, stranger.id, prov, 3).Bytes())); err == nil {
		t.Fatal("a peer outside the allow-list negotiated")
	}
	if _, err := friend.exchange(t, prov, frame(sealedRequest(t, friend.id, prov, 4).Bytes())); err != nil {
		t.Fatalf("a peer on the allow-list was refused: %v", err)
	}
}

// TestSlowPeerTimesOut: a stream that starts a frame and stops is reset at the message
// timeout; one that opens and sends nothing, at firstFrameTimeout even when the message
// timeout is longer.
func TestSlowPeerTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		sends   []byte
		within  time.Duration
	}{
		{"the start of a length, then nothing", 300 * time.Millisecond, []byte{0x80}, 2 * time.Second},
		{"nothing at all", time.Minute, nil, firstFrameTimeout + 2*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prov := newTestAgent(t, "provider", func(c *Config) { c.MessageTimeout = Duration(tc.timeout) })
			st := newRawPeer(t).stream(t, prov, ProtocolNegotiate)
			// Opens the stream on the wire (the protocol is negotiated with the first write).
			if _, err := st.Write(tc.sends); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			st.SetReadDeadline(start.Add(tc.within + time.Second))
			_, err := st.Read(make([]byte, 1))
			if err == nil || time.Since(start) > tc.within {
				t.Fatalf("the agent kept a silent stream open (%v after %s)", err, time.Since(start))
			}
		})
	}
}

// TestOpenNegotiationsBounded: a peer can keep at most maxOpenPerPeer negotiations open
// (here requests held for the operator); its next request is refused, while another peer is
// still served, and the held ones are still there.
func TestOpenNegotiationsBounded(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, func(o *protocol.Offer) { o.Approval = protocol.ApprovalManual })
	mallory := newRawPeer(t)
	st := mallory.stream(t, prov, ProtocolNegotiate)
	r := bufio.NewReader(st)
	const last = 8 // requests sent at once, when the peer has room for that many more
	for i := range uint64(maxOpenPerPeer - last) {
		st.SetDeadline(time.Now().Add(10 * time.Second))
		if err := writeFrame(st, sealedRequest(t, mallory.id, prov, i).Bytes()); err != nil {
			t.Fatal(err)
		}
		if ans, err := readFrame(r, protocol.MaxMessageSize); err != nil || len(ans) != 0 {
			t.Fatalf("request %d: answer of %d bytes, %v; want it held", i, len(ans), err)
		}
	}
	// Three times as many as fit, on streams of their own: the bound still holds.
	var envs [][]byte
	for i := range uint64(3 * last) {
		envs = append(envs, frame(sealedRequest(t, mallory.id, prov, maxOpenPerPeer+10+i).Bytes()))
	}
	var taken atomic.Int32
	var wg sync.WaitGroup
	for _, env := range envs {
		wg.Go(func() {
			if ans, err := mallory.exchange(t, prov, env); err == nil && len(ans) == 0 {
				taken.Add(1)
			}
		})
	}
	wg.Wait()
	if n := taken.Load(); n != last {
		t.Fatalf("%d of %d requests sent at once were taken, room for %d", n, len(envs), last)
	}
	if _, err := mallory.exchange(t, prov, frame(sealedRequest(t, mallory.id, prov, maxOpenPerPeer).Bytes())); err == nil {
		t.Fatal("a request over the bound was taken")
	}
	other := newRawPeer(t)
	if ans, err := other.exchange(t, prov, frame(sealedRequest(t, other.id, prov, maxOpenPerPeer+1).Bytes())); err != nil || len(ans) != 0 {
		t.Fatalf("another peer's request: %d bytes, %v", len(ans), err)
	}
	recs, err := prov.store.Negotiations()
	if err != nil || len(recs) != maxOpenPerPeer+1 {
		t.Fatalf("%d negotiations stored, want %d: %v", len(recs), maxOpenPerPeer+1, err)
	}
	// The bound holds across a restart: it counts what is stored.
	home := prov.home
	prov.Close()
	prov = reopen(t, home)
	if _, err := mallory.exchange(t, prov, frame(sealedRequest(t, mallory.id, prov, maxOpenPerPeer+2).Bytes())); err == nil {
		t.Fatal("after a restart, a request over the bound was taken")
	}
}

// TestCloseEndsInboundStreams: Close resets the streams its handlers still serve (a
// negotiation stream that has sent half a length, with a minute to send the rest) and returns
// only once every handler has (here one that takes a while to finish, as a commit would),
// without waiting for the message timeout.
func TestCloseEndsInboundStreams(t *testing.T) {
	prov := newTestAgent(t, "provider", func(c *Config) { c.MessageTimeout = Duration(time.Minute) })
	const slowProtocol = "/ssanet/test-slow/1.0.0"
	var finished atomic.Bool
	prov.host.SetStreamHandler(slowProtocol, prov.inbound.serve(func(st network.Stream) {
		st.Read(make([]byte, 1)) // until Close resets the stream
		time.Sleep(200 * time.Millisecond)
		finished.Store(true)
	}))
	peer := newRawPeer(t)
	streams := []network.Stream{peer.stream(t, prov, ProtocolNegotiate), peer.stream(t, prov, slowProtocol)}
	for _, st := range streams {
		if _, err := st.Write([]byte{0x80}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		prov.inbound.mu.Lock()
		defer prov.inbound.mu.Unlock()
		return len(prov.inbound.streams) == 2, "the streams never reached their handlers"
	})
	start := time.Now()
	if err := prov.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second || !finished.Load() {
		t.Fatalf("Close returned after %v, the slow handler finished: %v", took, finished.Load())
	}
	for _, st := range streams {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Read(make([]byte, 1)); err == nil {
			t.Fatalf("stream %s is still open", st.Protocol())
		}
	}
}
