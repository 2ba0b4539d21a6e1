package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"

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

func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// sealedRequest makes a valid request envelope from signer for provider a.
func sealedRequest(t *testing.T, signer *protocol.Identity, a *Agent, nid byte) *protocol.Envelope {
	t.Helper()
	m, err := protocol.NewRequester(signer, a.ID(), []byte{nid, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	if err != nil {
		t.Fatal(err)
	}
	s := requestTemplate(t)
	s.ID = "ssa-bad-input"
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

func TestSlowPeerTimesOut(t *testing.T) {
	prov := newTestAgent(t, "provider", func(c *Config) { c.MessageTimeout = Duration(300 * time.Millisecond) })
	slow := newRawPeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := slow.h.Connect(ctx, addrInfo(prov)); err != nil {
		t.Fatal(err)
	}
	st, err := slow.h.NewStream(ctx, prov.ID(), ProtocolNegotiate)
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{0x80}) // the start of a length, then nothing
	start := time.Now()
	st.SetReadDeadline(start.Add(3 * time.Second))
	_, err = st.Read(make([]byte, 1))
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("the agent kept a silent stream open (%v after %s)", err, time.Since(start))
	}
}
