package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// The Exchange phase (X.1205 Suppl. 20 Appendix I, steps ⑦–⑪). The provider's SSP enforcement
// point puts the records it lets through in the SSA's outbox (Enqueue), which the agent
// delivers (Pending, MarkSent) until the requester acknowledges them (Ack); the requester
// stores what it receives in the SSA's inbox (Receive, inbox.go), exactly once and in order.
// Every write goes through the committer (commit.go), so that the queues of all SSAs and the
// negotiations share fsyncs. The provider's side is in enqueue.go and outbox.go, the
// requester's in inbox.go and evidence.go, and a batch too large for one transaction is
// written by large.go. This file holds what they share: errors, limits, keys and readers.

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

// Deletions per transaction: acknowledged records (Ack, DropOutbox) and expired ones
// (DeleteRecordsReceivedBefore) are deleted in chunks of at most this many, each chunk with
// the counters that record it.
const deleteChunk = 4096

// scanSeqs calls fn with the values of the n consecutive keys prefix+seq from start, which
// must all be there: a missing one is ErrCorrupt. v is valid during the call only.
func scanSeqs(txn *badger.Txn, prefix []byte, start uint64, n int, fn func(seq uint64, v []byte) error) error {
	// Values are not prefetched: for values in the tree or in the page cache, the goroutine
	// Badger starts per item to prefetch one costs more than it saves (BenchmarkPendingAck).
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	seq, end := start, start+uint64(n)
	for it.Seek(seqKey(prefix, start)); it.Valid() && seq < end; it.Next() {
		item := it.Item()
		if got, ok := parseSeq(item.Key(), len(prefix)); !ok || got != seq {
			return fmt.Errorf("%w: key %x where record %d was expected", ErrCorrupt, item.Key(), seq)
		}
		err := item.Value(func(v []byte) error { return fn(seq, v) })
		if err != nil {
			return err
		}
		seq++
	}
	if seq < end {
		return fmt.Errorf("%w: record %d missing", ErrCorrupt, seq)
	}
	return nil
}

// scanChunk is scanSeqs for the readers that return records (Pending, Records): it copies
// the values into one buffer, each capped at its own length, and stops before the value that
// would take them over maxBytes in total, but always copies the first, even over maxBytes.
// fn gets the copy, which stays valid.
func scanChunk(txn *badger.Txn, prefix []byte, start uint64, n, maxBytes int, fn func(seq uint64, data []byte) error) error {
	var buf []byte
	err := scanSeqs(txn, prefix, start, n, func(seq uint64, v []byte) error {
		if seq > start && len(buf)+len(v) > maxBytes {
			return errFull
		}
		if buf == nil {
			// Room for n records like the first, but no more than maxBytes or 4 MiB (and
			// at least the first): the buffer grows from there if need be.
			buf = make([]byte, 0, max(min(len(v)*n, maxBytes, 4<<20), len(v)))
		}
		i := len(buf)
		buf = append(buf, v...)
		return fn(seq, buf[i:len(buf):len(buf)])
	})
	if errors.Is(err, errFull) {
		return nil
	}
	return err
}

// errFull stops an iteration whose result is full.
var errFull = errors.New("full")

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

func outboxPrefix(ssaID string) []byte { return ssaPrefix(prefixOutbox, ssaID, 8) }

func inboxPrefix(ssaID string) []byte { return ssaPrefix(prefixInbox, ssaID, 8) }

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
