package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/protocol"
)

// syncBuffer is a log destination that handlers may write from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// TestRefusalsLoggedOncePerPeerAndReason: a peer that sends garbage again and again is logged
// once per reason per minute, not once per message; another peer has a line of its own.
func TestRefusalsLoggedOncePerPeerAndReason(t *testing.T) {
	var logs syncBuffer
	home := filepath.Join(t.TempDir(), "provider")
	cfg := DefaultConfig()
	cfg.Listen, cfg.MDNS = []string{"/ip4/127.0.0.1/tcp/0"}, false
	if _, err := Init(home, cfg); err != nil {
		t.Fatal(err)
	}
	a, err := New(home, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, p := range []*rawPeer{newRawPeer(t), newRawPeer(t)} {
		for range 30 {
			if _, err := p.exchange(t, a, frame([]byte("garbage, not a signed message"))); err == nil {
				t.Fatal("the agent answered garbage")
			}
		}
	}
	if n := logs.count(`msg="message refused"`); n != 2 {
		t.Fatalf("%d lines say a message was refused; want 2 (one per peer):\n%s", n, logs.b.String())
	}
}

// TestRefusalLog: the same peer and reason are logged again once the interval has passed,
// with the count of refusals left out meanwhile; other peers and reasons are logged apart.
func TestRefusalLog(t *testing.T) {
	var logs syncBuffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newRefusalLog(slog.New(slog.NewTextHandler(&logs, nil)), func() time.Time { return now }, nil)
	p1, p2 := peer.ID("peer-one"), peer.ID("peer-two")
	bad := fmt.Errorf("%w: bit flipped in message 7", protocol.ErrBadSignature)
	for range 3511 {
		l.warn(p1, "message refused", bad)
	}
	l.warn(p1, "message refused", errors.New("another reason"))
	l.warn(p2, "message refused", bad)
	if n := logs.count("message refused"); n != 3 {
		t.Fatalf("%d lines; want 3 (two reasons of one peer, one of another)", n)
	}
	now = now.Add(refusalLogEvery)
	l.warn(p1, "message refused", fmt.Errorf("%w: bit flipped in message 8", protocol.ErrBadSignature))
	if n := logs.count("message refused"); n != 4 || logs.count("refusals_not_logged=3510") != 1 {
		t.Fatalf("after a minute: %d lines, want 4, the last saying 3510 were not logged:\n%s", n, logs.b.String())
	}
}
