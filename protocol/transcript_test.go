package protocol

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// raws is a negotiation's transcript as its store holds it: every message's bytes, in order.
func raws(n *Negotiation) [][]byte {
	var out [][]byte
	for _, e := range n.Transcript() {
		out = append(out, e.Bytes())
	}
	return out
}

// TestVerifyTranscript replays transcripts of every scenario from a third party's viewpoint:
// each side's transcript verifies, both sides reach the states the parties are in, and the
// agreement it makes is byte for byte the one the parties hold.
func TestVerifyTranscript(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(pr *pair)
	}{
		{"approved", func(pr *pair) { pr.approve() }},
		{"request rejected", func(pr *pair) {
			pr.request()
			pr.deliver(pr.r, pr.step(pr.p, Reject{[]Reason{{Code: CodeNoOffer, Component: "information", Text: "no"}}}).Send)
		}},
		{"proposal rejected", func(pr *pair) {
			pr.request()
			pr.deliver(pr.r, pr.propose())
			pr.deliver(pr.p, pr.step(pr.r, Reject{}).Send)
		}},
		{"unanswered proposal", func(pr *pair) {
			pr.request()
			pr.deliver(pr.r, pr.propose())
		}},
		{"late acceptance", func(pr *pair) { pr.lateAcceptance() }},
		{"revised, then annulled", func(pr *pair) {
			pr.approve()
			pr.deliver(pr.p, pr.step(pr.r, Revise{revisedSSA(pr.r, "ssa-test-2")}).Send)
			pr.deliver(pr.r, pr.step(pr.p, Accept{}).Send)
			pr.deliver(pr.r, pr.deliver(pr.p, pr.step(pr.r, Cancel{}).Send).Send)
		}},
		{"revision rejected", func(pr *pair) {
			pr.approve()
			pr.deliver(pr.r, pr.step(pr.p, Revise{revisedSSA(pr.p, "ssa-test-2")}).Send)
			pr.deliver(pr.p, pr.step(pr.r, Reject{}).Send)
		}},
		{"crossed cancellations", func(pr *pair) {
			pr.approve()
			fromR := pr.step(pr.r, Cancel{}).Send
			fromP := pr.step(pr.p, Cancel{}).Send
			pr.deliver(pr.p, fromR) // gives way to the provider's
			pr.deliver(pr.p, pr.deliver(pr.r, fromP).Send)
		}},
		{"the provider's revision crossed by a cancellation", func(pr *pair) {
			pr.approve()
			fromR := pr.step(pr.r, Cancel{}).Send
			fromP := pr.step(pr.p, Revise{revisedSSA(pr.p, "ssa-test-2")}).Send
			pr.deliver(pr.r, fromP) // gives way to the requester's cancellation
			pr.deliver(pr.r, pr.deliver(pr.p, fromR).Send)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := newPair(t)
			tc.run(pr)
			for _, n := range []*Negotiation{pr.r, pr.p} {
				c, err := VerifyTranscript(raws(n))
				if err != nil {
					t.Fatalf("the %s's transcript: %v", n.Role(), err)
				}
				// The side whose message gave way in a crossing holds one message more.
				other := pr.p
				if n == pr.p {
					other = pr.r
				}
				if want := max(0, len(n.Transcript())-len(other.Transcript())); len(c.GaveWay) != want {
					t.Errorf("the %s's transcript: %d messages gave way, want %d", n.Role(), len(c.GaveWay), want)
				}
				if c.RequesterState != pr.r.State() || c.ProviderState != pr.p.State() {
					t.Errorf("the %s's transcript leaves the requester %s and the provider %s; they are %s and %s",
						n.Role(), c.RequesterState, c.ProviderState, pr.r.State(), pr.p.State())
				}
				if c.Requester != pr.rid.PeerID() || c.Provider != pr.pid.PeerID() || !bytes.Equal(c.Negotiation, pr.r.ID()) {
					t.Errorf("parties %s and %s, negotiation %x", c.Requester, c.Provider, c.Negotiation)
				}
				want := n.Agreement()
				if (want == nil) != (c.Agreement == nil) {
					t.Fatalf("the %s's transcript: agreement %v, the parties hold %v", n.Role(), c.Agreement, want)
				}
				if want != nil && !bytes.Equal(mustEncode(t, want), mustEncode(t, c.Agreement)) {
					t.Errorf("the %s's transcript makes another agreement than the parties hold", n.Role())
				}
				if want != nil && len(c.Signers) != 2 {
					t.Errorf("signers %+v", c.Signers)
				}
			}
		})
	}
}

func mustEncode(t *testing.T, s *SSA) []byte {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyTranscriptRefuses: a transcript that is not what both parties signed and accepted
// is refused with the reason, whichever message is wrong.
func TestVerifyTranscriptRefuses(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	good := raws(pr.r)
	other := newPair(t)
	other.r, _ = NewRequester(other.rid, other.pid.PeerID(), testNID(9))
	other.approve()

	// The requester signs an acceptance of terms other than the proposal's: its own
	// viewpoint records what it sent without judging it; the provider's refuses it.
	forged := newPair(t)
	forged.request()
	prop := forged.propose()
	forged.deliver(forged.r, prop)
	bad := prop.SSA.Clone()
	bad.Status, bad.Date = StatusApproval, FromTime(forged.now)
	bad.Schedule.End++
	acc, err := Seal(forged.rid, Header{Type: MsgAcceptance, Negotiation: testNID(7), ID: testNID(3), Time: forged.now.UnixMilli(), Prev: prop.Hash()}, bad)
	if err != nil {
		t.Fatal(err)
	}
	third := testIdentity(t, 3)
	intruder, err := Seal(third, Header{Type: MsgCancellation, Negotiation: testNID(7), ID: testNID(4), Time: pr.now.UnixMilli(), Prev: pr.r.Transcript()[3].Hash()}, pr.r.Agreement())
	if err != nil {
		t.Fatal(err)
	}

	flip := func(i, at int) [][]byte {
		c := slices.Clone(good)
		c[i] = bytes.Clone(c[i])
		c[i][at] ^= 0x01
		return c
	}
	for _, tc := range []struct {
		name string
		msgs [][]byte
		want error
	}{
		{"no message", nil, ErrMalformed},
		{"a byte of the proposal's terms flipped", flip(1, len(good[1])/2), ErrBadSignature},
		{"a byte of the confirmation's signature flipped", flip(3, len(good[3])-2), ErrBadSignature},
		{"the proposal left out", slices.Delete(slices.Clone(good), 1, 2), ErrBrokenChain},
		{"the confirmation left out", good[:3], nil},
		{"acceptance and confirmation swapped", [][]byte{good[0], good[1], good[3], good[2]}, ErrBrokenChain},
		{"not beginning with the request", good[1:], ErrUnexpected},
		{"a message of another negotiation", [][]byte{good[0], good[1], good[2], raws(other.r)[3]}, ErrBrokenChain},
		{"the requester's acceptance of other terms", [][]byte{raws(forged.r)[0], prop.Bytes(), acc.Bytes()}, ErrTermsChanged},
		{"a message signed by a third party", append(slices.Clone(good), intruder.Bytes()), ErrWrongSender},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyTranscript(tc.msgs)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("a transcript that stops early is valid: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestTranscriptFile: an exported transcript reads back to its messages; an SSA, another
// version or garbage does not pass for one.
func TestTranscriptFile(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	msgs := raws(pr.p)
	b, err := EncodeTranscript(msgs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTranscript(b)
	if err != nil || !slices.EqualFunc(got, msgs, bytes.Equal) {
		t.Fatalf("read back %d messages (%v), wrote %d", len(got), err, len(msgs))
	}
	v2, err := Marshal(&transcriptFile{Format: TranscriptFormat, Version: 2, Messages: msgs})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := Marshal(&transcriptFile{Format: TranscriptFormat, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"an exported SSA", mustEncode(t, pr.p.Agreement()), ErrNotTranscript},
		{"garbage", []byte("ssanet-transcript"), ErrNotTranscript},
		{"format version 2", v2, ErrMalformed},
		{"no messages", empty, ErrMalformed},
		{"over the size limit", make([]byte, MaxTranscriptFile+1), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeTranscript(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestGoldenTranscriptFile fails when the exported transcript's container changes (its keys,
// format name or version); the messages inside are placeholders, pinned by TestGolden.
func TestGoldenTranscriptFile(t *testing.T) {
	msgs := [][]byte{{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40}, {0x01, 0x02, 0x03}}
	got, err := EncodeTranscript(msgs)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeTranscript(checkGolden(t, "transcript-file", got))
	if err != nil || !slices.EqualFunc(back, msgs, bytes.Equal) {
		t.Fatalf("the golden transcript file reads back as %x (%v)", back, err)
	}
}

// FuzzDecodeTranscript: no file makes DecodeTranscript or VerifyTranscript panic, and what
// decodes re-encodes to the same bytes.
func FuzzDecodeTranscript(f *testing.F) {
	pr := newPair(f)
	pr.approve()
	pr.deliver(pr.r, pr.deliver(pr.p, pr.step(pr.r, Cancel{}).Send).Send)
	for _, n := range []*Negotiation{pr.r, pr.p} {
		b, err := EncodeTranscript(raws(n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := DecodeTranscript(data)
		if err != nil {
			return
		}
		again, err := EncodeTranscript(msgs)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("the transcript re-encodes differently: %v", err)
		}
		if c, err := VerifyTranscript(msgs); err == nil && len(c.Messages) != len(msgs) {
			t.Fatalf("verified %d of %d messages", len(c.Messages), len(msgs))
		}
	})
}
