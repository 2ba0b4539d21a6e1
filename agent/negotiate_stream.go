package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// firstFrameTimeout is how long an inbound negotiation stream may stay silent after it opens.
const firstFrameTimeout = 5 * time.Second

// identified waits, up to timeout, until identify has run on c, the connection of an inbound
// stream, and reports whether it has. Identify brings the peer's listen addresses (an inbound
// connection comes from a port the peer does not listen on) and runs alongside the first
// stream: a message recorded before it ends would find no address of the peer to keep
// (addrBook), and after a restart this agent could not reach the peer by itself.
func identified(c network.Conn, h host.Host, timeout time.Duration) bool {
	ids, ok := h.(interface{ IDService() identify.IDService })
	if !ok {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ids.IDService().IdentifyWait(c):
		return true
	case <-t.C:
		return false
	}
}

// handleStream serves one inbound negotiation stream: frames in, answers out, until the peer
// closes it. Any misbehaviour resets the stream.
func (n *negotiator) handleStream(st network.Stream) {
	remote := st.Conn().RemotePeer()
	log := n.log.With("peer", remote, "proto", ProtocolNegotiate)
	r := bufio.NewReader(st)
	timeout := n.cfg.MessageTimeout
	// The first frame is written as the stream opens: a stream still silent after
	// firstFrameTimeout gives its place (the protocol's streams are bounded) to others.
	st.SetReadDeadline(time.Now().Add(min(timeout, firstFrameTimeout)))
	if _, err := r.Peek(1); errors.Is(err, io.EOF) {
		st.Close()
		return
	} else if err != nil {
		log.Debug("negotiation stream silent", "err", err)
		st.Reset()
		return
	}
	if !identified(st.Conn(), n.host, timeout) {
		log.Debug("peer not identified in time: its listen addresses may not be kept for a restart")
	}
	for {
		st.SetDeadline(time.Now().Add(timeout))
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
				return
			}
			log.Debug("negotiation stream refused", "err", err)
			st.Reset()
			return
		}
		answer, err := n.receive(raw, remote)
		if err != nil {
			n.cfg.Refusals.refused("negotiate", remote, "message refused", err, "proto", ProtocolNegotiate)
			st.Reset()
			return
		}
		var b []byte
		if answer != nil {
			b = answer.Bytes()
		}
		if err := writeFrame(st, b); err != nil {
			log.Debug("answer not sent", "err", err)
			st.Reset()
			return
		}
	}
}

// receive opens a message from remote, steps its negotiation (with the automatic decisions),
// persists, and returns the answer to send back, if any.
func (n *negotiator) receive(raw []byte, remote peer.ID) (*protocol.Envelope, error) {
	env, err := protocol.Open(raw)
	if err != nil {
		return nil, err
	}
	if env.Sender != remote {
		return nil, fmt.Errorf("%w: signed by %s, sent by %s", protocol.ErrWrongSender, env.Sender, remote)
	}
	var requester peer.ID
	if env.Header.Type == protocol.MsgRequest {
		requester = remote
	}
	s, err := n.acquire(env.Header.Negotiation, requester)
	if err != nil {
		return nil, err
	}
	defer n.release(s)
	s.mu.Lock()
	defer s.mu.Unlock()
	answer, err := n.step(s, true, protocol.Receive{Env: env})
	if errors.Is(err, storage.ErrSSAInUse) && env.Header.Type == protocol.MsgRequest && s.machine.State() == protocol.StateNew {
		// The store refused to bind the request's SSA ID to this negotiation (rollback left
		// the session as new): answer with a rejection that says so, kept without the ID.
		s.unbound = true
		return n.step(s, true, protocol.Receive{Env: env})
	}
	return answer, err
}

// deliver sends a message of session s to its peer and goes on answering on the same stream
// until the exchange rests: the peer acknowledges with no answer, or we have nothing to send.
// A failure is remembered for the peer (reachLog) and, if the peer refused this agent or does
// not speak ssanet, ends the negotiation (abandon) instead of leaving it to be sent again
// forever.
func (n *negotiator) deliver(ctx context.Context, s *session, p peer.ID, env *protocol.Envelope) error {
	err := n.exchange(ctx, s, p, env)
	if err == nil {
		n.reach.reached(p)
		return nil
	}
	n.reach.failed(p, err)
	if why, final := finalReason(err); final {
		n.abandon(s, why)
	}
	return err
}

// exchange is deliver's conversation with the peer.
func (n *negotiator) exchange(ctx context.Context, s *session, p peer.ID, env *protocol.Envelope) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.MessageTimeout)
	defer cancel()
	n.cfg.FindAddrs(ctx, p)
	st, err := openMemberStream(ctx, n.host, n.cfg.Member, p, ProtocolNegotiate)
	if err != nil {
		return fmt.Errorf("open negotiation stream to %s: %w", p, err)
	}
	r := bufio.NewReader(st)
	for env != nil {
		sent := env
		st.SetDeadline(time.Now().Add(n.cfg.MessageTimeout))
		if err := writeFrame(st, env.Bytes()); err != nil {
			st.Reset()
			return err
		}
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if errors.Is(err, ErrStreamRefused) {
			return err
		}
		if err != nil {
			st.Reset()
			return fmt.Errorf("%w: %v", ErrNoAnswer, err)
		}
		s.mu.Lock()
		if len(raw) == 0 {
			env, err = nil, n.acknowledged(s, sent)
		} else {
			env, err = n.receiveAnswer(s, raw, p)
		}
		s.mu.Unlock()
		if err != nil {
			st.Reset()
			return err
		}
	}
	return st.Close()
}

// acknowledged records that the peer acknowledged sent, if it is still our last message in
// s (the operator may have added one meanwhile, which waits for its own). The caller holds
// s.mu.
func (n *negotiator) acknowledged(s *session, sent *protocol.Envelope) error {
	last := s.machine.Transcript()
	if len(last) == 0 || !bytes.Equal(last[len(last)-1].Hash(), sent.Hash()) {
		return nil
	}
	s.rec.Delivered = true
	if err := n.store.Commit(s.rec, nil, nil); err != nil {
		n.rollback(s)
		return err
	}
	n.setDelivered(s)
	return nil
}

func (n *negotiator) receiveAnswer(s *session, raw []byte, p peer.ID) (*protocol.Envelope, error) {
	ans, err := protocol.Open(raw)
	if err != nil {
		return nil, err
	}
	if ans.Sender != p {
		return nil, fmt.Errorf("%w: answer signed by %s", protocol.ErrWrongSender, ans.Sender)
	}
	return n.step(s, false, protocol.Receive{Env: ans})
}
