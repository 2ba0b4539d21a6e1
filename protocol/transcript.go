package protocol

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// An exported transcript: every signed message of one negotiation, as one side sent and
// received it, in a file that anyone can check without either party (README, "Verifying an
// exported transcript"). It is the canonical CBOR map
//
//	{1: "ssanet-transcript", 2: 1, 3: [message, message, …]}
//
// where each message is the byte string of a tagged COSE_Sign1 exactly as it travelled.

// TranscriptFormat is the format name an exported transcript carries under key 1.
const TranscriptFormat = "ssanet-transcript"

// TranscriptVersion is the version of the exported transcript format this package writes and
// reads.
const TranscriptVersion = 1

// MaxTranscriptFile is the largest exported transcript read: MaxTranscript messages of at
// most MaxMessageSize bytes each, and the map around them.
const MaxTranscriptFile = MaxTranscript*(MaxMessageSize+8) + 64

// ErrNotTranscript means bytes are not an exported transcript at all (they may be an SSA).
var ErrNotTranscript = errors.New("protocol: not an exported transcript")

type transcriptFile struct {
	Format   string   `cbor:"1,keyasint"`
	Version  uint64   `cbor:"2,keyasint"`
	Messages [][]byte `cbor:"3,keyasint"`
}

// EncodeTranscript writes the messages of a transcript, as sent and received and in order,
// as an exported transcript.
func EncodeTranscript(msgs [][]byte) ([]byte, error) {
	if len(msgs) > MaxTranscript {
		return nil, fmt.Errorf("%w: %d messages, limit %d", ErrTooManyMessages, len(msgs), MaxTranscript)
	}
	return Marshal(&transcriptFile{Format: TranscriptFormat, Version: TranscriptVersion, Messages: msgs})
}

// DecodeTranscript reads an exported transcript and returns its messages, unchecked (see
// VerifyTranscript). Bytes that are not a transcript file at all are ErrNotTranscript.
func DecodeTranscript(b []byte) ([][]byte, error) {
	if len(b) > MaxTranscriptFile {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxTranscriptFile)
	}
	var f transcriptFile
	if err := decodeCanonical(b, &f); err != nil || f.Format != TranscriptFormat {
		return nil, ErrNotTranscript
	}
	if f.Version != TranscriptVersion {
		return nil, fmt.Errorf("%w: transcript format version %d, this ssanet reads version %d", ErrMalformed, f.Version, TranscriptVersion)
	}
	if len(f.Messages) == 0 {
		return nil, fmt.Errorf("%w: the transcript holds no message", ErrMalformed)
	}
	if len(f.Messages) > MaxTranscript {
		return nil, fmt.Errorf("%w: %d messages, limit %d", ErrTooManyMessages, len(f.Messages), MaxTranscript)
	}
	return f.Messages, nil
}

// TranscriptCheck is what VerifyTranscript established about a transcript.
type TranscriptCheck struct {
	// Negotiation is the negotiation ID every message carries.
	Negotiation []byte
	Requester   peer.ID
	Provider    peer.ID
	// Messages are the transcript's messages, opened, in order.
	Messages []*Envelope
	// GaveWay are the positions in Messages of the exporting side's cancellations or
	// revisions that crossed the peer's on the network and gave way to it: signed and
	// chained, but answered by nothing.
	GaveWay []int
	// RequesterState and ProviderState are where the messages leave each side.
	RequesterState, ProviderState State
	// Agreement is the SSA in force (or annulled) after the last message, with both
	// signatures, as the messages make it; nil if they never agreed on one.
	Agreement *SSA
	// Signers are the Agreement's signatures, as VerifySSA reads them.
	Signers []Signer
}

// VerifyTranscript checks an exported transcript from neither party's side: every message's
// signature (Open), that every message is signed by the requester (the request's signer) or
// the provider it names, that each one names the SHA-256 of the message before it as Prev
// (the first none), and that every message is one its receiver had to accept: the
// negotiation is replayed from each role's viewpoint, so each party's messages are checked by
// the rules the other party applies (transitions, terms, origin). The agreement it returns
// is the one the messages make; both viewpoints must reach the same one, and it must verify
// as an exported SSA does (VerifySSA).
//
// A transcript that one side exported may hold a cancellation or revision of that side which
// crossed the peer's on the network and gave way to it: it names the same previous message
// as the peer's that follows it. The other side never recorded it, so it is replayed from
// the exporting side's viewpoint only.
func VerifyTranscript(msgs [][]byte) (*TranscriptCheck, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: the transcript holds no message", ErrMalformed)
	}
	if len(msgs) > MaxTranscript {
		return nil, fmt.Errorf("%w: %d messages, limit %d", ErrTooManyMessages, len(msgs), MaxTranscript)
	}
	c := &TranscriptCheck{}
	for i, raw := range msgs {
		env, err := Open(raw)
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", i+1, err)
		}
		c.Messages = append(c.Messages, env)
	}
	first := c.Messages[0]
	if first.Header.Type != MsgRequest {
		return nil, fmt.Errorf("message 1: %w: a transcript begins with a request, not a %s", ErrUnexpected, first.Header.Type)
	}
	c.Negotiation, c.Requester = first.Header.Negotiation, first.Sender
	if c.Provider = participantPeer(first.SSA.Participants.Provider); c.Provider == "" {
		return nil, fmt.Errorf("message 1: %w: the request names no provider", ErrMalformed)
	}
	for i, env := range c.Messages {
		if env.Sender != c.Requester && env.Sender != c.Provider {
			return nil, fmt.Errorf("message %d: %w: signed by %s, neither the requester nor the provider", i+1, ErrWrongSender, env.Sender)
		}
	}
	common, err := c.chain(msgs)
	if err != nil {
		return nil, err
	}
	views := map[Role]*Negotiation{}
	for _, v := range []struct {
		role Role
		self peer.ID
	}{{RoleRequester, c.Requester}, {RoleProvider, c.Provider}} {
		n, err := Restore(verifier(v.self), v.role, common)
		if err != nil {
			return nil, fmt.Errorf("replayed as the %s received them: %w", v.role, err)
		}
		views[v.role] = n
	}
	if len(c.GaveWay) > 0 {
		// Only the side whose messages gave way holds them: replay its whole transcript.
		exporter := c.Messages[c.GaveWay[0]].Sender
		role := RoleRequester
		if exporter == c.Provider {
			role = RoleProvider
		}
		n, err := Restore(verifier(exporter), role, msgs)
		if err != nil {
			return nil, fmt.Errorf("replayed as the %s recorded them: %w", role, err)
		}
		views[role] = n
	}
	c.RequesterState, c.ProviderState = views[RoleRequester].State(), views[RoleProvider].State()
	ra, pa := views[RoleRequester].Agreement(), views[RoleProvider].Agreement()
	if (ra == nil) != (pa == nil) {
		return nil, fmt.Errorf("%w: the messages leave one side with an agreement and the other without", ErrNotAgreed)
	}
	if ra == nil {
		return c, nil
	}
	rb, err := ra.Encode()
	if err != nil {
		return nil, err
	}
	pb, err := pa.Encode()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(rb, pb) {
		return nil, fmt.Errorf("%w: the two sides' agreements differ", ErrNotAgreed)
	}
	if c.Signers, err = VerifySSA(ra); err != nil {
		return nil, fmt.Errorf("the agreement the messages make: %w", err)
	}
	c.Agreement = ra
	return c, nil
}

// chain checks that every message names the SHA-256 of the one before it, or crossed it (see
// VerifyTranscript), and returns the messages both sides recorded: the transcript without
// the messages that gave way, whose positions it sets in c.GaveWay.
func (c *TranscriptCheck) chain(msgs [][]byte) ([][]byte, error) {
	envs := c.Messages
	if len(envs[0].Header.Prev) != 0 {
		return nil, fmt.Errorf("message 1: %w: the request names a previous message", ErrBrokenChain)
	}
	common := [][]byte{msgs[0]}
	for i := 1; i < len(envs); i++ {
		e, before := envs[i], envs[i-1]
		if !bytes.Equal(e.Header.Prev, before.Hash()) {
			if !crossedBy(before, e) || (len(c.GaveWay) > 0 && envs[c.GaveWay[0]].Sender != before.Sender) {
				return nil, fmt.Errorf("message %d (%s): %w: it names previous message %x, the hash of message %d is %x",
					i+1, e.Header.Type, ErrBrokenChain, e.Header.Prev, i, before.Hash())
			}
			c.GaveWay = append(c.GaveWay, i-1)
			common = common[:len(common)-1]
		}
		common = append(common, msgs[i])
	}
	return common, nil
}

// crossedBy reports whether mine, a cancellation or revision, crossed theirs, one of the
// other party's, on the network: both name the same previous message.
func crossedBy(mine, theirs *Envelope) bool {
	t := mine.Header.Type
	return (t == MsgCancellation || t == MsgRevision) && mine.Sender != theirs.Sender &&
		len(mine.Header.Prev) == sha256.Size && bytes.Equal(mine.Header.Prev, theirs.Header.Prev)
}

// verifier is an identity that only names a party: enough for Restore, which replays
// messages and never signs. It holds no key.
func verifier(id peer.ID) *Identity { return &Identity{id: id, str: id.String()} }
