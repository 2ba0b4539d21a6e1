package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// reseal signs env's header and body again with another identity.
func reseal(t testing.TB, id *Identity, h Header, env *Envelope) *Envelope {
	t.Helper()
	var body any = env.SSA
	if env.Rejection != nil {
		body = env.Rejection
	}
	out, err := Seal(id, h, body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// coseSign makes a tagged COSE_Sign1 with go-cose directly, with any content type and any
// external AAD, as a forger with a participant's key could.
func coseSign(t testing.TB, id *Identity, h Header, ct string, payload, aad []byte) []byte {
	t.Helper()
	hb, err := Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
			cose.HeaderLabelKeyID:       []byte(id.PeerID()),
			cose.HeaderLabelContentType: ct,
			headerLabel:                 hb,
		}},
		Payload: payload,
	}
	if err := msg.Sign(nil, aad, coseSigner(t, id)); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// detachedOf turns a tagged COSE_Sign1 into the detached signature an agreed SSA carries.
func detachedOf(t testing.TB, raw []byte) []byte {
	t.Helper()
	var m sign1
	if err := decMode.Unmarshal(raw[1:], &m); err != nil {
		t.Fatal(err)
	}
	m.Payload = nil
	b, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0xd2}, b...)
}

// isAny reports whether err is one of targets.
func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

func TestOpenRefusesTampering(t *testing.T) {
	cases := goldenCases(t)
	prop := cases["proposal"]
	env, err := Open(prop)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int, mask byte) []byte {
		c := bytes.Clone(b)
		c[i] ^= mask
		return c
	}
	payloadAt := bytes.Index(prop, env.Payload())
	protectedAt := bytes.Index(prop, env.protected)
	if payloadAt < 0 || protectedAt < 0 {
		t.Fatal("cannot find the payload or the protected header in the message")
	}
	idAt := bytes.Index(prop, env.Header.ID)
	affAt := bytes.Index(prop, []byte("Example National CERT"))
	targeted := []struct {
		name string
		raw  []byte
		want []error
	}{
		{"payload: a letter of the requester's affiliation", flip(prop, affAt+3, 0x20), []error{ErrBadSignature}},
		{"payload: the first byte", flip(prop, payloadAt, 0x01), []error{ErrBadSignature, ErrMalformed}},
		{"protected header: the message ID", flip(prop, idAt+5, 0x01), []error{ErrBadSignature}},
		{"protected header: the map header", flip(prop, protectedAt, 0x01), []error{ErrBadSignature, ErrMalformed}},
		{"signature: first byte", flip(prop, len(prop)-64, 0x01), []error{ErrBadSignature}},
		{"signature: last byte", flip(prop, len(prop)-1, 0x80), []error{ErrBadSignature}},
		{"not tagged", flip(prop, 0, 0x01), []error{ErrMalformed}},
		{"a byte appended", append(bytes.Clone(prop), 0x00), []error{ErrMalformed}},
		{"truncated", prop[:len(prop)-1], []error{ErrMalformed}},
		{"empty", nil, []error{ErrMalformed}},
		{"over the size limit", make([]byte, MaxMessageSize+1), []error{ErrTooLarge}},
	}
	for _, tc := range targeted {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(tc.raw); !isAny(err, tc.want...) {
				t.Fatalf("Open: %v, want one of %v", err, tc.want)
			}
		})
	}
	t.Run("unprotected header not empty", func(t *testing.T) {
		var m sign1
		if err := decMode.Unmarshal(prop[1:], &m); err != nil {
			t.Fatal(err)
		}
		m.Unprotected = map[int64]any{4: []byte("kid")}
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(append([]byte{0xd2}, b...)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Open: %v", err)
		}
	})
	t.Run("rejection content type on an SSA", func(t *testing.T) {
		raw := coseSign(t, testIdentity(t, 2), env.Header, ctRejection, env.Payload(), aadSSA)
		if _, err := Open(raw); !isAny(err, ErrMalformed) {
			t.Fatalf("Open: %v", err)
		}
	})
	// Every single-bit change anywhere in a message is refused, whatever it hits.
	for _, name := range []string{"proposal", "rejection"} {
		t.Run("every byte of a "+name, func(t *testing.T) {
			raw := cases[name]
			for i := range raw {
				for _, mask := range []byte{0x01, 0x80} {
					_, err := Open(flip(raw, i, mask))
					if !isAny(err, ErrBadSignature, ErrMalformed, ErrInvalidSSA, ErrUnsupportedKey) {
						t.Fatalf("byte %d ^ %#x: Open: %v", i, mask, err)
					}
				}
			}
		})
	}
}

// TestWrongSigner re-signs, with a third identity, every message the table accepts from the
// peer: the same header and body, another key. Step refuses each with ErrWrongSender and
// changes nothing.
func TestWrongSigner(t *testing.T) {
	stranger := testIdentity(t, 3)
	for _, pl := range placements() {
		for typ := MsgType(1); int(typ) <= len(msgNames); typ++ {
			n, peerID, now := pl.build(t)
			env := peerMessage(t, n, peerID, typ, now)
			if expectReceive(pl.role, n, env, now).refused {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s/%s/%s", pl.role, pl.state, pl.name, typ), func(t *testing.T) {
				for _, who := range []struct {
					name string
					id   *Identity
				}{{"a stranger", stranger}, {"this agent itself", n.self}} {
					forged := reseal(t, who.id, env.Header, env)
					before := snap(n)
					if _, err := n.Step(now, Receive{forged}); !errors.Is(err, ErrWrongSender) {
						t.Fatalf("signed by %s: %v, want ErrWrongSender", who.name, err)
					}
					if err := before.check(n); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := n.Step(now, Receive{env}); err != nil {
					t.Fatalf("the genuine message after the forgeries: %v", err)
				}
			})
		}
	}
}

// delivery is a message, its receiver and the answer the receiver sent at once (nil if none).
type delivery struct {
	env    *Envelope
	to     *Negotiation
	answer *Envelope
}

// typeOf names a message's type for a failure message.
func typeOf(e *Envelope) string {
	if e == nil {
		return "nothing"
	}
	return "a " + e.Header.Type.String()
}

// replayFlow runs a negotiation through every message type (approved, revised by the
// provider, cancelled by the requester), delivering each message twice in a row, and returns
// the deliveries.
func replayFlow(t *testing.T, pr *pair) []delivery {
	var ds []delivery
	send := func(from *Negotiation, ev Event) *Envelope { return pr.step(from, ev).Send }
	recv := func(to *Negotiation, env *Envelope) *Envelope {
		out := pr.deliver(to, env)
		ds = append(ds, delivery{env, to, out.Send})
		// The same message again, at once: a duplicate answered with the same answer.
		before := snap(to)
		again := pr.deliver(to, env)
		if !again.Duplicate || again.Record != nil || again.Agreement != nil ||
			(out.Send == nil) != (again.Send == nil) || (out.Send != nil && !bytes.Equal(again.Send.Bytes(), out.Send.Bytes())) {
			t.Fatalf("%s redelivered: duplicate %v, answered %s, first answer %s", env.Header.Type, again.Duplicate, typeOf(again.Send), typeOf(out.Send))
		}
		if err := before.check(to); err != nil {
			t.Fatalf("%s redelivered: %v", env.Header.Type, err)
		}
		return out.Send
	}
	recv(pr.p, send(pr.r, Start{exampleRequest(t, pr.now)}))
	prop, _ := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	recv(pr.r, send(pr.p, Propose{prop}))
	recv(pr.r, recv(pr.p, send(pr.r, Accept{})))
	recv(pr.r, send(pr.p, Revise{revisedSSA(pr.p, "ssa-test-2")}))
	recv(pr.p, send(pr.r, Accept{}))
	recv(pr.r, recv(pr.p, send(pr.r, Cancel{})))
	if pr.r.State() != StateAnnulled || pr.p.State() != StateAnnulled {
		t.Fatalf("states %s/%s", pr.r.State(), pr.p.State())
	}
	return ds
}

func TestReplay(t *testing.T) {
	pr := newPair(t)
	ds := replayFlow(t, pr)
	if len(ds) != 8 {
		t.Fatalf("%d deliveries", len(ds))
	}
	t.Run("every earlier message re-delivered at the end", func(t *testing.T) {
		later := pr.now.Add(time.Hour) // past the clock-skew window: still a duplicate
		for i, d := range ds {
			before := snap(d.to)
			out, err := d.to.Step(later, Receive{d.env})
			if err != nil {
				t.Fatalf("message %d (%s): %v", i, d.env.Header.Type, err)
			}
			if !out.Duplicate || out.Record != nil || out.Agreement != nil || out.Reasons != nil {
				t.Fatalf("message %d (%s): duplicate %v, %d recorded", i, d.env.Header.Type, out.Duplicate, len(out.Record))
			}
			// The original answer: the receiver's own message that followed it, if any.
			var want *Envelope
			tr := d.to.Transcript()
			if j := slices.IndexFunc(tr, func(e *Envelope) bool { return bytes.Equal(e.Bytes(), d.env.Bytes()) }); j+1 < len(tr) && tr[j+1].Sender == d.to.self.PeerID() {
				want = tr[j+1]
			}
			if d.answer != nil && d.answer != want {
				t.Fatalf("message %d (%s): the immediate answer is not the next message", i, d.env.Header.Type)
			}
			if (out.Send == nil) != (want == nil) || (want != nil && !bytes.Equal(out.Send.Bytes(), want.Bytes())) {
				t.Fatalf("message %d (%s): answered %s, originally %s", i, d.env.Header.Type, typeOf(out.Send), typeOf(want))
			}
			if err := before.check(d.to); err != nil {
				t.Fatalf("message %d (%s): %v", i, d.env.Header.Type, err)
			}
		}
	})
	t.Run("another message reusing an old message ID", func(t *testing.T) {
		pr := newPair(t)
		pr.approve()
		prop := pr.r.Transcript()[1] // the provider's proposal, processed by the requester
		rev := pr.step(pr.p, Revise{revisedSSA(pr.p, "ssa-test-2")}).Send
		h := rev.Header
		h.ID = prop.Header.ID
		forged := reseal(t, pr.pid, h, rev)
		before := snap(pr.r)
		if _, err := pr.r.Step(pr.now, Receive{forged}); !errors.Is(err, ErrBrokenChain) {
			t.Fatalf("a revision under the proposal's ID: %v", err)
		}
		if err := before.check(pr.r); err != nil {
			t.Fatal(err)
		}
		// The same header and body signed by a stranger, after the genuine one was processed.
		stolen := reseal(t, testIdentity(t, 3), prop.Header, prop)
		if _, err := pr.r.Step(pr.now, Receive{stolen}); !isAny(err, ErrBrokenChain, ErrWrongSender) {
			t.Fatalf("a processed message re-signed by a stranger: %v", err)
		}
		if err := before.check(pr.r); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExpiry(t *testing.T) {
	proposed := func(t *testing.T) (*pair, time.Time) {
		pr := newPair(t)
		pr.request()
		pr.deliver(pr.r, pr.propose())
		return pr, pr.r.Pending().Expires.Std()
	}
	t.Run("accepted one second before the limit", func(t *testing.T) {
		pr, exp := proposed(t)
		if _, err := pr.r.Step(exp.Add(-time.Second), Accept{}); err != nil {
			t.Fatal(err)
		}
	})
	for _, at := range []time.Duration{0, time.Second, 24 * time.Hour} {
		t.Run(fmt.Sprintf("accepted %s after the limit", at), func(t *testing.T) {
			pr, exp := proposed(t)
			n := len(pr.r.Transcript())
			out, err := pr.r.Step(exp.Add(at), Accept{})
			if !errors.Is(err, ErrProposalExpired) || out.Send != nil {
				t.Fatalf("Accept: %v, sent %v", err, out.Send)
			}
			if pr.r.State() != StateExpired || len(pr.r.Transcript()) != n {
				t.Fatalf("state %s, %d messages", pr.r.State(), len(pr.r.Transcript()))
			}
			if _, err := pr.r.Step(exp.Add(at), Accept{}); !errors.Is(err, ErrUnexpected) {
				t.Fatalf("second Accept: %v", err)
			}
		})
	}
	t.Run("late acceptance answered with proposal-expired", func(t *testing.T) {
		pr := newPair(t)
		pr.lateAcceptance()
		last := pr.p.Transcript()[len(pr.p.Transcript())-1]
		if pr.p.State() != StateRejected || pr.r.State() != StateRejected || last.Header.Type != MsgRejection ||
			last.Rejection.Reasons[0].Code != CodeProposalExpired || pr.p.Agreement() != nil || pr.r.Agreement() != nil {
			t.Fatalf("states %s/%s, last %s", pr.r.State(), pr.p.State(), last.Header.Type)
		}
	})
	t.Run("expired by a tick, then a late acceptance", func(t *testing.T) {
		pr, exp := proposed(t)
		acc, err := pr.r.Step(exp.Add(-time.Minute), Accept{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pr.p.Step(exp, Tick{}); err != nil || pr.p.State() != StateExpired {
			t.Fatalf("tick: %v, state %s", err, pr.p.State())
		}
		out, err := pr.p.Step(exp.Add(time.Minute), Receive{acc.Send})
		if err != nil || pr.p.State() != StateRejected || out.Send.Rejection.Reasons[0].Code != CodeProposalExpired {
			t.Fatalf("late acceptance: %v, state %s", err, pr.p.State())
		}
	})
	t.Run("a proposal already past its limit is not sent", func(t *testing.T) {
		pr := newPair(t)
		pr.request()
		prop, _ := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
		prop.Expires = FromTime(pr.now.Add(-time.Second))
		before := snap(pr.p)
		if _, err := pr.p.Step(pr.now, Propose{prop}); !errors.Is(err, ErrProposalExpired) {
			t.Fatalf("Propose: %v", err)
		}
		if err := before.check(pr.p); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCrossNegotiation(t *testing.T) {
	// Negotiation A and B between the same two agents: B under another negotiation ID, or
	// (a buggy peer) under the same one with other messages.
	for _, bNID := range []byte{8, 7} {
		t.Run(fmt.Sprintf("B under negotiation ID %d", bNID), func(t *testing.T) {
			a := newPair(t)
			var aMsgs []*Envelope
			a.request()
			aMsgs = append(aMsgs, a.p.Transcript()[0])
			a.deliver(a.r, a.propose())
			aMsgs = append(aMsgs, a.r.Transcript()[1])
			acc := a.step(a.r, Accept{}).Send
			aMsgs = append(aMsgs, acc)
			aMsgs = append(aMsgs, a.deliver(a.p, acc).Send)

			for i, env := range aMsgs {
				for _, stage := range []int{1, 2, 3, 4} {
					b := newPair(t)
					var err error
					if b.r, err = NewRequester(b.rid, b.pid.PeerID(), testNID(bNID)); err != nil {
						t.Fatal(err)
					}
					req := exampleRequest(t, b.now)
					req.ID = "ssa-other"
					out := b.step(b.r, Start{req})
					if stage > 1 {
						b.deliver(b.p, out.Send)
					}
					if stage > 2 {
						b.deliver(b.r, b.propose())
					}
					if stage > 3 {
						b.step(b.r, Accept{})
					}
					to := b.p
					if env.Sender == b.pid.PeerID() {
						to = b.r
					}
					if stage == 1 && to == b.p {
						continue // a fresh provider takes any request: that is a new negotiation
					}
					before := snap(to)
					_, err = to.Step(b.now, Receive{env})
					if !isAny(err, ErrWrongNegotiation, ErrBrokenChain) {
						t.Fatalf("A's message %d (%s) given to B's %s at stage %d: %v", i, env.Header.Type, to.Role(), stage, err)
					}
					if err := before.check(to); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

func TestClockSkew(t *testing.T) {
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{
		// Dated before the proposal it accepts (made at now) by more than MaxSkew: refused
		// too. A message sent long ago and delivered now is TestLateResend.
		{0, true}, {MaxSkew, true}, {-MaxSkew, true},
		{MaxSkew + time.Millisecond, false}, {time.Hour, false}, {-MaxSkew - time.Millisecond, false}, {-24 * time.Hour, false},
	} {
		t.Run(tc.skew.String(), func(t *testing.T) {
			pr := newPair(t)
			pr.request()
			pr.propose()
			// The requester's clock is off by skew: its acceptance is dated now+skew.
			env := peerMessage(t, pr.p, pr.rid, MsgAcceptance, pr.now.Add(tc.skew))
			before := snap(pr.p)
			_, err := pr.p.Step(pr.now, Receive{env})
			if tc.ok {
				if err != nil || pr.p.State() != StateApproved {
					t.Fatalf("Step: %v, state %s", err, pr.p.State())
				}
				return
			}
			if !errors.Is(err, ErrClockSkew) {
				t.Fatalf("Step: %v, want ErrClockSkew", err)
			}
			if err := before.check(pr.p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLateResend: a message sent while the peers were apart arrives a day later, as it was
// signed then (a resend is the same bytes): it is taken, and answered as any other.
func TestLateResend(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	cancel := pr.step(pr.r, Cancel{}).Send
	pr.now = pr.now.Add(24 * time.Hour)
	pr.deliver(pr.r, pr.deliver(pr.p, cancel).Send)
	if pr.r.State() != StateAnnulled || pr.p.State() != StateAnnulled {
		t.Fatalf("a cancellation delivered a day late: requester %s, provider %s", pr.r.State(), pr.p.State())
	}
}

// TestBoundedRounds revises an SSA, from alternate sides, until the transcript is full. Both
// sides must refuse the same revision, hold the same agreement at every point, and still be
// able to cancel it.
func TestBoundedRounds(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	rounds := 0
	for ; ; rounds++ {
		a, b := pr.r, pr.p
		if rounds%2 == 1 {
			a, b = b, a
		}
		before := snap(a)
		out, err := a.Step(pr.now, Revise{revisedSSA(a, fmt.Sprintf("ssa-v%d", rounds+2))})
		if err != nil {
			if !errors.Is(err, ErrTooManyMessages) {
				t.Fatalf("revision %d: %v", rounds+1, err)
			}
			if err := before.check(a); err != nil {
				t.Fatal(err)
			}
			break
		}
		pr.deliver(b, out.Send)
		if rounds%3 == 2 {
			pr.deliver(a, pr.step(b, Reject{[]Reason{{Code: CodeDeclined}}}).Send)
		} else {
			pr.deliver(a, pr.step(b, Accept{}).Send)
		}
		x, _ := pr.r.Agreement().Encode()
		y, _ := pr.p.Agreement().Encode()
		if pr.r.State() != StateApproved || pr.p.State() != StateApproved || !bytes.Equal(x, y) {
			t.Fatalf("after revision %d: states %s/%s, same agreement %v", rounds+1, pr.r.State(), pr.p.State(), bytes.Equal(x, y))
		}
		if rounds > MaxMessages {
			t.Fatal("the number of revisions is not bounded")
		}
	}
	t.Logf("%d revisions, %d messages", rounds, len(pr.r.Transcript()))
	if rounds < MaxMessages/2-4 {
		t.Fatalf("only %d revisions before the limit", rounds)
	}
	// The peer's revision past the limit is refused too, and changes nothing.
	env := peerMessage(t, pr.r, pr.pid, MsgRevision, pr.now)
	before := snap(pr.r)
	if _, err := pr.r.Step(pr.now, Receive{env}); !errors.Is(err, ErrTooManyMessages) {
		t.Fatalf("the peer's revision past the limit: %v", err)
	}
	if err := before.check(pr.r); err != nil {
		t.Fatal(err)
	}
	// The SSA in force can still be cancelled.
	pr.deliver(pr.p, pr.deliver(pr.r, pr.step(pr.p, Cancel{}).Send).Send)
	if pr.r.State() != StateAnnulled || pr.p.State() != StateAnnulled || len(pr.r.Transcript()) > MaxMessages {
		t.Fatalf("states %s/%s with %d messages", pr.r.State(), pr.p.State(), len(pr.r.Transcript()))
	}
}

func TestVerifySSARefuses(t *testing.T) {
	pr := newPair(t)
	rout, _ := pr.approve()
	agreed := rout.Agreement
	payload, err := agreed.SigningBytes()
	if err != nil {
		t.Fatal(err)
	}
	conf := pr.r.Transcript()[3]
	stranger := testIdentity(t, 3)
	// signature makes a detached signature of s by id, in a message of type typ.
	signature := func(s *SSA, id *Identity, typ MsgType) []byte {
		h := conf.Header
		h.Type = typ
		env, err := Seal(id, h, s)
		if err != nil {
			t.Fatal(err)
		}
		return env.detached()
	}
	rejection, err := Seal(pr.pid, Header{Type: MsgRejection, Negotiation: conf.Header.Negotiation, ID: conf.Header.ID, Time: conf.Header.Time},
		&Rejection{SSAID: agreed.ID})
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(s *SSA)) *SSA {
		s := agreed.Clone()
		f(s)
		return s
	}
	sigs := agreed.Signatures
	cases := []struct {
		name string
		ssa  *SSA
		want error
	}{
		{"one signature", with(func(s *SSA) { s.Signatures = sigs[:1] }), ErrNotAgreed},
		{"no signature", with(func(s *SSA) { s.Signatures = nil }), ErrNotAgreed},
		{"three signatures", with(func(s *SSA) { s.Signatures = append(s.Signatures, sigs[0]) }), ErrNotAgreed},
		{"status proposal", with(func(s *SSA) { s.Status = StatusProposal }), ErrNotAgreed},
		{"no status", with(func(s *SSA) { s.Status = 0 }), ErrNotAgreed},
		{"terms modified after signing", with(func(s *SSA) { s.Policy.Handling.TLP = TLPClear }), ErrBadSignature},
		{"schedule extended after signing", with(func(s *SSA) { s.Schedule.End += 86400 }), ErrBadSignature},
		{"a participant swapped after signing", with(func(s *SSA) {
			s.Participants.Provider.PeerID = stranger.PeerID().String()
		}), ErrBadSignature},
		{"signed by a non-participant", with(func(s *SSA) { s.Signatures[1] = signature(agreed, stranger, MsgConfirmation) }), ErrNotAgreed},
		{"the same signature twice", with(func(s *SSA) { s.Signatures[1] = sigs[0] }), ErrNotAgreed},
		{"two signatures by the requester", with(func(s *SSA) { s.Signatures[1] = signature(agreed, pr.rid, MsgConfirmation) }), ErrNotAgreed},
		{"a request's signature", with(func(s *SSA) { s.Signatures[0] = signature(agreed, pr.rid, MsgRequest) }), ErrNotAgreed},
		{"a rejection's signature transplanted", with(func(s *SSA) { s.Signatures[1] = rejection.detached() }), ErrBadSignature},
		{"a signature made in the rejection domain", with(func(s *SSA) {
			s.Signatures[1] = detachedOf(t, coseSign(t, pr.pid, conf.Header, ctSSA, payload, aadRejection))
		}), ErrBadSignature},
		{"a signature with its payload attached", with(func(s *SSA) {
			s.Signatures[1] = coseSign(t, pr.pid, conf.Header, ctSSA, payload, aadSSA)
		}), ErrBadSignature},
		{"a signature that is not CBOR", with(func(s *SSA) { s.Signatures[1] = []byte{0xd2, 0xff} }), ErrMalformed},
		{"an annulment signed with acceptances", with(func(s *SSA) {
			s.Status, s.Signatures = StatusAnnulment, nil
			s.Signatures = [][]byte{signature(s, pr.rid, MsgAcceptance), signature(s, pr.pid, MsgAcceptance)}
		}), ErrNotAgreed},
	}
	if _, err := VerifySSA(agreed); err != nil {
		t.Fatalf("the genuine agreement: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signers, err := VerifySSA(tc.ssa)
			if !errors.Is(err, tc.want) || signers != nil {
				t.Fatalf("VerifySSA: %v, %v; want %v", signers, err, tc.want)
			}
		})
	}
}
