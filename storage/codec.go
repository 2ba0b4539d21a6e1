package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// Records are encoded with protocol.Marshal and decoded with protocol.Unmarshal: the encoding
// on the wire, so that one configuration writes everything ssanet keeps. Stores written when
// this package had its own encoder (core deterministic, without protocol's explicit TimeUnix,
// which is the default) hold the same bytes; TestStoredRecordsCompatible pins them.

// Keys. See the layout in doc.go.
var keySchema = []byte("m/schema")

const (
	prefixNegotiation = "n/"
	prefixTranscript  = "t/"
	prefixAgreement   = "a/"
	prefixIndex       = "i/"
	prefixOffer       = "o/"
	prefixOutboxState = "s/"
	prefixInboxState  = "v/"
	prefixInboxRun    = "u/"
	prefixEvidence    = "e/"
	prefixFilePos     = "f/"
	// The records' index (segment.go): one entry per block of records, keyed by its last
	// sequence number. Since schema version 3; before, the records were the values of keys
	// under q/ and r/, and large batches left marks under w/ (migrateRecords, migrate.go).
	prefixOutboxIndex = "x/"
	prefixInboxIndex  = "y/"
)

// The exchange queues' states, runs and marks sort after their records since schema version
// 2 (migrateQueueKeys, migrate.go): each write of a queue writes its state (and a run, a
// mark) with its newest records, and a table that holds both spans every older record of the
// queue, so that each compaction of such a table rewrote every table of the next level that
// held them (ExchangeThroughput -benchtime 60x: 35.6-36.9 cpu-µs/record before, 29.2-29.6
// after, interleaved). Version 1 keyed them before:
const (
	v1PrefixOutboxState = "Q/"
	v1PrefixInboxState  = "R/"
	v1PrefixInboxRun    = "b/"
	v1PrefixMark        = "p/"
)

// nidLen is the length of a negotiation ID.
const nidLen = 16

// maxIDLen bounds SSA and offer IDs, which become keys (Badger caps keys near 64 KiB).
const maxIDLen = 1024

func negotiationKey(nid []byte) []byte { return append([]byte(prefixNegotiation), nid...) }

func transcriptPrefix(nid []byte) []byte {
	k := make([]byte, 0, len(prefixTranscript)+nidLen+1+4)
	k = append(k, prefixTranscript...)
	k = append(k, nid...)
	return append(k, '/')
}

func transcriptKey(nid []byte, seq uint32) []byte {
	return binary.BigEndian.AppendUint32(transcriptPrefix(nid), seq)
}

func agreementKey(ssaID string) []byte { return []byte(prefixAgreement + ssaID) }

func indexKey(ssaID string) []byte { return []byte(prefixIndex + ssaID) }

func offerKey(id string) []byte { return []byte(prefixOffer + id) }

// negotiationRecord is a Negotiation as stored under n/<nid>; the ID is the key's. Integer
// keys are never renumbered or reused.
type negotiationRecord struct {
	Role      uint8             `cbor:"1,keyasint"`
	Peer      string            `cbor:"2,keyasint,omitempty"`
	State     uint8             `cbor:"3,keyasint"`
	SSAID     string            `cbor:"4,keyasint,omitempty"`
	OfferID   string            `cbor:"5,keyasint,omitempty"`
	Note      string            `cbor:"6,keyasint,omitempty"`
	Reasons   []protocol.Reason `cbor:"7,keyasint,omitempty"`
	Created   int64             `cbor:"8,keyasint,omitempty"` // Unix nanoseconds; 0: zero time
	Updated   int64             `cbor:"9,keyasint,omitempty"`
	Delivered bool              `cbor:"10,keyasint,omitempty"`
	// Messages is the transcript's length: the next entry's seq.
	Messages uint32 `cbor:"11,keyasint,omitempty"`
}

func encodeNegotiation(n *Negotiation, messages uint32) ([]byte, error) {
	b, err := protocol.Marshal(&negotiationRecord{
		Role: uint8(n.Role), Peer: n.Peer, State: uint8(n.State), SSAID: n.SSAID, OfferID: n.OfferID,
		Note: n.Note, Reasons: n.Reasons, Created: unixNano(n.Created), Updated: unixNano(n.Updated),
		Delivered: n.Delivered, Messages: messages,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: encode negotiation %x: %w", n.ID, err)
	}
	return b, nil
}

func decodeNegotiation(nid, b []byte) (*Negotiation, uint32, error) {
	var r negotiationRecord
	if err := protocol.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("%w: negotiation %x: %v", ErrCorrupt, nid, err)
	}
	if err := checkSSAID(r.SSAID, true); err != nil {
		return nil, 0, fmt.Errorf("%w: negotiation %x: %v", ErrCorrupt, nid, err)
	}
	return &Negotiation{
		ID: append([]byte(nil), nid...), Role: protocol.Role(r.Role), Peer: r.Peer, State: protocol.State(r.State),
		SSAID: r.SSAID, OfferID: r.OfferID, Note: r.Note, Reasons: r.Reasons,
		Created: fromUnixNano(r.Created), Updated: fromUnixNano(r.Updated), Delivered: r.Delivered,
	}, r.Messages, nil
}

// unixNano maps the zero time to 0, which time.Time.UnixNano leaves undefined.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func encodeOffer(o *protocol.Offer) ([]byte, error) {
	b, err := protocol.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("storage: encode offer %s: %w", o.ID, err)
	}
	return b, nil
}

func decodeOffer(id string, b []byte) (*protocol.Offer, error) {
	var o protocol.Offer
	if err := protocol.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("%w: offer %s: %v", ErrCorrupt, id, err)
	}
	if o.ID != id {
		return nil, fmt.Errorf("%w: offer stored under %q has ID %q", ErrCorrupt, id, o.ID)
	}
	return &o, nil
}

// decodeAgreement decodes and verifies an agreement stored under ssaID; a failure is
// ErrCorrupt.
func decodeAgreement(ssaID string, b []byte) (*protocol.SSA, error) {
	a, err := readAgreement(ssaID, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if _, err := protocol.VerifySSA(a); err != nil {
		return nil, fmt.Errorf("%w: agreement %s: %w", ErrCorrupt, ssaID, err)
	}
	return a, nil
}

// readAgreement decodes an agreement stored, or to be stored, under ssaID.
func readAgreement(ssaID string, b []byte) (*protocol.SSA, error) {
	a, err := protocol.DecodeSSA(b)
	if err != nil {
		return nil, fmt.Errorf("agreement %s: %w", ssaID, err)
	}
	if a.ID != ssaID {
		return nil, fmt.Errorf("agreement stored under %q has ID %q", ssaID, a.ID)
	}
	return a, nil
}
