package protocol

import (
	"bytes"
	"fmt"
	"testing"
)

// TestCrossing has both parties cancel or revise an approved SSA at the same moment, so that
// each message is on the wire before the other arrives, in every combination and in every
// order of arrival. Both sides must end in the same state with byte-identical agreements
// (the prevailing message's terms, signed by both), each transcript must restore to that
// state, and the message that gave way must have changed nothing on the side that got it.
func TestCrossing(t *testing.T) {
	type kind struct {
		name string
		ev   func(n *Negotiation, id string) Event
	}
	cancel := kind{"cancels", func(*Negotiation, string) Event { return Cancel{} }}
	revise := kind{"revises", func(n *Negotiation, id string) Event { return Revise{revisedSSA(n, id)} }}
	orders := []string{"loser's first", "winner's first", "loser's after the end"}
	for _, rk := range []kind{cancel, revise} {
		for _, pk := range []kind{cancel, revise} {
			for _, order := range orders {
				t.Run(fmt.Sprintf("requester %s, provider %s, %s", rk.name, pk.name, order), func(t *testing.T) {
					pr := newPair(t)
					pr.approve()
					fromR := pr.step(pr.r, rk.ev(pr.r, "ssa-from-requester")).Send
					fromP := pr.step(pr.p, pk.ev(pr.p, "ssa-from-provider")).Send

					// A cancellation prevails over a revision; of two alike, the provider's.
					winner, loser, winMsg, loseMsg := pr.p, pr.r, fromP, fromR
					if rk.name == "cancels" && pk.name == "revises" {
						winner, loser, winMsg, loseMsg = pr.r, pr.p, fromR, fromP
					}
					giveWay := func() {
						t.Helper()
						before := snap(winner)
						out := pr.deliver(winner, loseMsg)
						if !out.Superseded || out.Send != nil || len(out.Record) != 0 || out.Agreement != nil {
							t.Fatalf("the message that gives way: %+v", out)
						}
						if err := before.check(winner); err != nil {
							t.Fatal(err)
						}
					}
					takeWinner := func() *Envelope {
						t.Helper()
						out := pr.deliver(loser, winMsg)
						if winMsg.Header.Type == MsgRevision {
							if loser.State() != StateRevisionReceived {
								t.Fatalf("loser in %s after the winning revision", loser.State())
							}
							out = pr.step(loser, Accept{})
						}
						if out.Send == nil || out.Send.Header.Type != MsgConfirmation || !bytes.Equal(out.Send.Header.Prev, winMsg.Hash()) {
							t.Fatalf("the loser's answer: %+v", out.Send)
						}
						return out.Send
					}
					switch order {
					case "loser's first":
						giveWay()
						pr.deliver(winner, takeWinner())
					case "winner's first":
						conf := takeWinner()
						giveWay()
						pr.deliver(winner, conf)
					default:
						pr.deliver(winner, takeWinner())
						giveWay()
					}

					want, id := StateApproved, winMsg.SSA.ID
					if winMsg.Header.Type == MsgCancellation {
						want = StateAnnulled
					}
					for _, n := range []*Negotiation{pr.r, pr.p} {
						if n.State() != want || n.Agreement() == nil || n.Agreement().ID != id {
							t.Fatalf("%s ends %s with %v, want %s of %s", n.Role(), n.State(), n.Agreement(), want, id)
						}
						if _, err := VerifySSA(n.Agreement()); err != nil {
							t.Fatalf("%s's agreement: %v", n.Role(), err)
						}
					}
					a, _ := pr.r.Agreement().Encode()
					b, _ := pr.p.Agreement().Encode()
					if !bytes.Equal(a, b) {
						t.Fatal("the two sides hold different agreements")
					}
					for n, self := range map[*Negotiation]*Identity{pr.r: pr.rid, pr.p: pr.pid} {
						if m := restoreWith(t, n, self); m.State() != want || m.Agreement().ID != id {
							t.Fatalf("the %s restores to %s %s", n.Role(), m.State(), m.Agreement().ID)
						}
					}
					if got, wantLen := len(loser.Transcript()), len(winner.Transcript())+1; got != wantLen {
						t.Errorf("the loser's transcript holds %d messages, want %d (the winner's and its own that gave way)", got, wantLen)
					}
				})
			}
		}
	}
}

// TestCrossingRefusals: only a cancellation or revision of the peer can cross one of ours,
// and one that crossed must still come from the peer of this negotiation.
func TestCrossingRefusals(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	before := pr.p.Transcript()[len(pr.p.Transcript())-1]
	pr.step(pr.p, Cancel{})
	// A confirmation chained to the message before the provider's cancellation is no
	// crossing: it answers nothing the provider sent.
	h := Header{Type: MsgConfirmation, Negotiation: pr.p.ID(), ID: peerMessageID(pr.p.ID(), pr.rid.PeerID(), 99),
		Time: pr.now.UnixMilli(), Prev: before.Hash()}
	conf, err := Seal(pr.rid, h, baseSSA(t, pr.p, pr.now))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.p.Step(pr.now, Receive{conf}); err == nil {
		t.Fatal("a confirmation off the chain was taken")
	}
	// A cancellation that crossed the provider's, signed by a third party.
	stranger := testIdentity(t, 3)
	fromStranger, err := Seal(stranger, Header{Type: MsgCancellation, Negotiation: pr.p.ID(),
		ID: peerMessageID(pr.p.ID(), stranger.PeerID(), 5), Time: pr.now.UnixMilli(), Prev: pr.p.Transcript()[len(pr.p.Transcript())-1].Header.Prev}, pr.p.Pending())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := pr.p.Step(pr.now, Receive{fromStranger}); err == nil || out.Superseded {
		t.Fatalf("a crossing cancellation from a stranger: %+v, %v", out, err)
	}
}

// TestCrossingAtTheLimit: the messages that gave way do not count towards MaxMessages, so both
// sides count alike however many crossings there were, and an SSA in force can still be
// cancelled at the limit, by a crossing too.
func TestCrossingAtTheLimit(t *testing.T) {
	pr := newPair(t)
	pr.approve()
	crossings := 0
	for pr.p.counted()+room(MsgRevision) <= MaxMessages {
		fromR := pr.step(pr.r, Revise{revisedSSA(pr.r, fmt.Sprintf("ssa-r-%d", crossings))}).Send
		fromP := pr.step(pr.p, Revise{revisedSSA(pr.p, fmt.Sprintf("ssa-p-%d", crossings))}).Send
		if out := pr.deliver(pr.p, fromR); !out.Superseded {
			t.Fatalf("crossing %d: the requester's revision did not give way", crossings)
		}
		pr.deliver(pr.r, fromP)
		pr.deliver(pr.p, pr.step(pr.r, Accept{}).Send)
		crossings++
		if pr.r.counted() != pr.p.counted() {
			t.Fatalf("after %d crossings the requester counts %d messages, the provider %d", crossings, pr.r.counted(), pr.p.counted())
		}
	}
	fromR := pr.step(pr.r, Cancel{}).Send
	fromP := pr.step(pr.p, Cancel{}).Send
	if out := pr.deliver(pr.p, fromR); !out.Superseded {
		t.Fatal("the requester's cancellation did not give way")
	}
	pr.deliver(pr.p, pr.deliver(pr.r, fromP).Send)
	if pr.r.State() != StateAnnulled || pr.p.State() != StateAnnulled {
		t.Fatalf("after %d crossings and crossing cancellations: requester %s, provider %s", crossings, pr.r.State(), pr.p.State())
	}
	if n := len(pr.r.Transcript()); n <= MaxMessages || n > MaxTranscript {
		t.Fatalf("the requester's transcript holds %d messages, want more than %d (the ones that gave way) and at most %d", n, MaxMessages, MaxTranscript)
	}
	if m := restoreWith(t, pr.r, pr.rid); m.State() != StateAnnulled || m.counted() != pr.p.counted() {
		t.Fatalf("restored as %s, counting %d messages (the provider counts %d)", m.State(), m.counted(), pr.p.counted())
	}
}
