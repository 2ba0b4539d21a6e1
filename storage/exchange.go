package storage

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/ssanet/ssanet/protocol"
)

// The Exchange phase (X.1205 Suppl. 20 Appendix I, steps ⑦–⑪). The provider's SSP enforcement
// point puts the records it lets through in the SSA's outbox (Enqueue), which the agent
// delivers (Pending, MarkSent) until the requester acknowledges them (Ack); the requester
// stores what it receives in the SSA's inbox (Receive, inbox.go), exactly once and in order.
// Every write goes through the committer (commit.go), so that the queues of all SSAs and the
// negotiations share fsyncs. The provider's side is in enqueue.go and outbox.go, the
// requester's in inbox.go and evidence.go, and the records of both are in segment files
// (segment.go). This file holds what they share: errors, limits and keys.

// Errors of the exchange queues.
var (
	// ErrGap means a batch starts after the next record expected: records are missing
	// before it. Nothing was stored.
	ErrGap = errors.New("storage: batch leaves a gap in the sequence")
	// ErrNotEnqueued means Ack or MarkSent names a record beyond the last one enqueued.
	// Nothing was written.
	ErrNotEnqueued = errors.New("storage: sequence number beyond the last record enqueued")
)

// MaxRecordSize bounds a record in the queues: records travel in signed batches, which
// protocol caps at protocol.MaxMessageSize.
const MaxRecordSize = protocol.MaxMessageSize

// Deletions per transaction: expired records (DeleteRecordsReceivedBefore) are deleted in
// chunks of at most deleteChunk, each chunk with the counters that record it, and a
// transaction takes at most dropChunk blocks out of a queue's index (segment.go).
const (
	deleteChunk = 4096
	dropChunk   = 64
)

// refuseOrFail sorts an error reading the store: a corrupt record refuses the request, any
// other error fails the transaction.
func refuseOrFail(err error) (refused, failed error) {
	if errors.Is(err, ErrCorrupt) {
		return err, nil
	}
	return nil, err
}

// ssaPrefix returns prefix, the length of ssaID (2 bytes, big-endian) and ssaID, with room
// for extra bytes: the length makes the prefix of one SSA's keys never a prefix of another's.
func ssaPrefix(prefix, ssaID string, extra int) []byte {
	k := make([]byte, 0, len(prefix)+2+len(ssaID)+extra)
	k = append(k, prefix...)
	k = binary.BigEndian.AppendUint16(k, uint16(len(ssaID)))
	return append(k, ssaID...)
}

// outboxPrefix and inboxPrefix are the prefixes of a queue's index entries (segment.go).
func outboxPrefix(ssaID string) []byte { return ssaPrefix(prefixOutboxIndex, ssaID, 8) }

func inboxPrefix(ssaID string) []byte { return ssaPrefix(prefixInboxIndex, ssaID, 8) }

func runPrefix(ssaID string) []byte { return ssaPrefix(prefixInboxRun, ssaID, 8) }

func evidencePrefix(ssaID string) []byte { return ssaPrefix(prefixEvidence, ssaID, 16) }

func outboxStateKey(ssaID string) []byte { return []byte(prefixOutboxState + ssaID) }

func inboxStateKey(ssaID string) []byte { return []byte(prefixInboxState + ssaID) }

// seqKey returns prefix followed by seq (8 bytes, big-endian), in a new slice.
func seqKey(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(prefix), seq)
}

// parseSeq returns the seq of a key made by seqKey with a prefix of n bytes.
func parseSeq(k []byte, n int) (uint64, bool) {
	if len(k) != n+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[n:]), true
}

func maxU64(a uint64, b ...uint64) uint64 {
	for _, x := range b {
		a = max(a, x)
	}
	return a
}
