package agent

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ssanet/ssanet/protocol"
)

// resend is when to send a negotiation's unacknowledged message again. Each failed attempt
// doubles the wait, from the retry interval up to maxResendDelay, so that a peer gone for
// long (decommissioned, or away for days) costs a lookup and a dial now and then, not every
// few seconds. When a connection with the peer comes up, the message is due again at once.
type resend struct {
	peer  string
	at    time.Time
	delay time.Duration
	// err is why the last attempt failed ("" before any failed).
	err string
}

const maxResendDelay = 10 * time.Minute

// resendWorkers is how many peers the resend loop sends to at once.
const resendWorkers = 8

// resendLoop sends again, every retry interval, the last message of each negotiation that
// the peer has not acknowledged (after a dropped connection or a restart), and lets the
// requests, proposals and revisions past their validity expire. The peer's duplicate
// detection makes resending safe.
func (n *negotiator) resendLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.RetryInterval)
	defer t.Stop()
	for {
		n.expireDue()
		n.resendPending(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// resendPending sends the unacknowledged messages that are due, one peer at a time for each
// worker, so that a peer that does not answer (each attempt waits up to message-timeout)
// holds up only the messages to itself.
func (n *negotiator) resendPending(ctx context.Context) {
	byPeer := n.due()
	peers := make(chan [][]byte, len(byPeer))
	for _, ids := range byPeer {
		peers <- ids
	}
	close(peers)
	var wg sync.WaitGroup
	for range min(resendWorkers, len(byPeer)) {
		wg.Go(func() {
			for ids := range peers {
				n.resendTo(ctx, ids)
			}
		})
	}
	wg.Wait()
}

// due returns the negotiations whose unacknowledged message is due, by peer.
func (n *negotiator) due() map[string][][]byte {
	now := n.now()
	n.mu.Lock()
	byPeer := map[string][][]byte{}
	for id, r := range n.undelivered {
		if !now.Before(r.at) {
			byPeer[r.peer] = append(byPeer[r.peer], []byte(id))
		}
	}
	n.mu.Unlock()
	for p, ids := range byPeer {
		kept := ids[:0]
		for _, id := range ids {
			// A session in use is being delivered right now.
			if !n.sessions.inUse(string(id)) {
				kept = append(kept, id)
			}
		}
		if byPeer[p] = kept; len(kept) == 0 {
			delete(byPeer, p)
		}
	}
	return byPeer
}

// resendTo sends the messages of negotiations ids, all to one peer, until one fails: the
// peer is away, and the rest wait too.
func (n *negotiator) resendTo(ctx context.Context, ids [][]byte) {
	for i, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if !n.resend(ctx, id) {
			for _, rest := range ids[i+1:] {
				n.backOff(rest)
			}
			return
		}
	}
}

// resend sends negotiation id's last message again, and backs off if it fails. It reports
// whether the message went through (or there was nothing to send).
func (n *negotiator) resend(ctx context.Context, id []byte) bool {
	s, err := n.acquire(id, "")
	if err != nil {
		n.log.Error("restore negotiation", "err", err)
		n.backOff(id)
		return true // the peer is not to blame
	}
	defer n.release(s)
	s.mu.Lock()
	p, tr := s.machine.Peer(), s.machine.Transcript()
	var last *protocol.Envelope
	if len(tr) > 0 && tr[len(tr)-1].Sender == n.self.PeerID() && !lapsed(s.machine, n.now()) {
		last = tr[len(tr)-1]
	} else { // the peer's message is the last, or ours lapsed: nothing of ours waits
		n.mu.Lock()
		delete(n.undelivered, string(id))
		n.mu.Unlock()
	}
	s.mu.Unlock()
	if last == nil {
		return true
	}
	if err := n.deliver(ctx, s, p, last); err != nil {
		n.log.Debug("resend failed", "peer", p, "err", err)
		n.failed(id, err)
		return false
	}
	return true
}

// lapsed reports whether m ended in a way that leaves its peer nothing to learn from our
// last message: a request abandoned (failed), or expired (the peer expires it too, by its
// own clock). A provider's expired proposal is still sent, so that a requester that was
// away learns of it, until the request's own validity has passed too.
func lapsed(m *protocol.Negotiation, now time.Time) bool {
	switch m.State() {
	case protocol.StateFailed:
		return true
	case protocol.StateExpired:
		if m.Role() == protocol.RoleRequester {
			return true
		}
		req := m.Transcript()[0].SSA
		return req.Expires != 0 && !now.Before(req.Expires.Std())
	}
	return false
}

// failed notes why a delivery of negotiation id's message failed, and backs off.
func (n *negotiator) failed(id []byte, err error) {
	n.noteFailure(id, err)
	n.backOff(id)
}

// noteFailure notes why a delivery of negotiation id's message failed, for the operator.
func (n *negotiator) noteFailure(id []byte, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.undelivered[string(id)]; ok {
		r.err = err.Error()
	}
}

// Attempt is how the delivery of a negotiation's unacknowledged message stands.
type Attempt struct {
	// Next is when the message is sent again (zero: at the next round of the resend loop).
	Next time.Time `json:"next_attempt"`
	// LastError is why the last attempt failed, or "" if none failed yet.
	LastError string `json:"last_error,omitempty"`
}

// attempt is how the delivery of negotiation id's message stands, or nil if nothing of
// ours waits for the peer.
func (n *negotiator) attempt(id []byte) *Attempt {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.undelivered[string(id)]
	if !ok {
		return nil
	}
	return &Attempt{Next: r.at, LastError: r.err}
}

// connected makes the unacknowledged messages to a peer that just connected due at once.
func (n *negotiator) connected(_ network.Network, c network.Conn) {
	p := c.RemotePeer().String()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.undelivered {
		if r.peer == p {
			r.at, r.delay = time.Time{}, 0
		}
	}
}

// backOff doubles the wait before negotiation id's message is sent again, if it is still
// unacknowledged.
func (n *negotiator) backOff(id []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.undelivered[string(id)]
	if !ok {
		return
	}
	r.delay = min(max(2*r.delay, n.cfg.RetryInterval), maxResendDelay)
	r.at = n.now().Add(r.delay)
}

// expireDue lets the requests, proposals, revisions and withdrawals whose validity limit has
// passed expire.
func (n *negotiator) expireDue() {
	now := n.now()
	n.mu.Lock()
	var due [][]byte
	for id, exp := range n.expiries {
		if !now.Before(exp) {
			due = append(due, []byte(id))
		}
	}
	n.mu.Unlock()
	for _, id := range due {
		n.expire(id)
	}
}

// expire steps negotiation id with a tick, which expires what it waits on.
func (n *negotiator) expire(id []byte) {
	s, err := n.acquire(id, "")
	if err != nil {
		n.log.Error("restore negotiation", "err", err)
		return
	}
	defer n.release(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	before, note := s.machine.State(), s.rec.Note
	s.rec.Note = "" // a decision held for the operator is no longer wanted, if it expires
	if _, err := n.step(s, false, protocol.Tick{}); err != nil {
		n.log.Error("expire", "ssa", s.rec.SSAID, "state", before.String(), "err", err)
	}
	if st := s.machine.State(); st == before {
		s.rec.Note = note
	} else {
		n.log.Info("validity passed unanswered", "ssa", s.rec.SSAID, "peer", s.rec.Peer, "was", before.String(), "state", st.String())
	}
}
