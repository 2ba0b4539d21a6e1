package storage

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// The provider's side of the Exchange phase, writing: Enqueue and EnqueueAll put refined
// records in outboxes (outbox.go), in segment files (segment.go).

// Enqueue appends refined records (may be empty) to the SSA's outbox and adds ingested and
// dropped to its counters, atomically and durably: they are fsynced before Enqueue returns,
// in a transaction shared with concurrent writers. It returns the sequence number of the
// last record in the queue after the call. Concurrent Enqueues for one SSA get distinct,
// consecutive sequence numbers, in the order the committer takes them.
//
// The records are not copied: the caller must not change them before Enqueue returns.
func (s *Store) Enqueue(ssaID string, records [][]byte, ingested, dropped uint64) (last uint64, err error) {
	lasts, err := s.EnqueueAll([]Batch{{SSAID: ssaID, Records: records, Ingested: ingested, Dropped: dropped}}, nil)
	if err != nil {
		return 0, err
	}
	return lasts[0], nil
}

// Batch is what EnqueueAll adds to one SSA's outbox: refined records, and the counts of raw
// records offered to the SSA's enforcement point (Ingested) and dropped by it (Dropped).
type Batch struct {
	SSAID    string
	Records  [][]byte
	Ingested uint64
	Dropped  uint64
}

// EnqueueAll is Enqueue for several SSAs at once (a chunk of raw records refined for each SSA
// that shares its format) and, when pos is not nil, moves the followed file's position to pos:
// all of it in one atomic, durable commit. So a crash leaves either the records and the
// position that follows them, or neither: the file is read again from exactly where the
// queued records end, and no record is queued twice or lost. With no batches it only moves the
// position. The SSA IDs must be distinct. It returns each batch's last sequence number.
//
// The records are not copied: the caller must not change them before EnqueueAll returns.
func (s *Store) EnqueueAll(batches []Batch, pos *FilePos) (last []uint64, err error) {
	r, err := newEnqueueRequest(s, batches, pos)
	if err != nil {
		return nil, err
	}
	if err := s.commit(r); err != nil {
		return nil, fmt.Errorf("storage: enqueue for %s: %w", r, err)
	}
	last = make([]uint64, len(r.parts))
	for i := range r.parts {
		last[i] = r.parts[i].last
	}
	return last, nil
}

type enqueueRequest struct {
	waiter
	s     *Store
	parts []outboxPart
	pos   *FilePos
	// size and entries: cost() of the whole request.
	size, entries int
}

// outboxPart is one batch of an enqueueRequest.
type outboxPart struct {
	Batch
	last uint64 // the outcome: Refined after the request
}

func newEnqueueRequest(s *Store, batches []Batch, pos *FilePos) (*enqueueRequest, error) {
	r := &enqueueRequest{waiter: newWaiter(), s: s, parts: make([]outboxPart, len(batches)), pos: pos}
	if pos != nil {
		if err := checkFilePos(pos); err != nil {
			return nil, err
		}
		r.size, r.entries = entrySize(len(prefixFilePos)+len(pos.Path), 32), 1
	}
	seen := make(map[string]bool, len(batches))
	for i, b := range batches {
		if err := checkID("SSA", b.SSAID, false); err != nil {
			return nil, err
		}
		if seen[b.SSAID] {
			return nil, fmt.Errorf("storage: enqueue: SSA %q named twice in one commit: merge its batches", b.SSAID)
		}
		seen[b.SSAID] = true
		r.parts[i] = outboxPart{Batch: b}
		for _, rec := range b.Records {
			if len(rec) > MaxRecordSize {
				return nil, fmt.Errorf("storage: enqueue for SSA %q: record of %d bytes, limit %d", b.SSAID, len(rec), MaxRecordSize)
			}
		}
		blocks := indexEntries(b.Records)
		r.size += entrySize(len(prefixOutboxState)+len(b.SSAID), 64) + blocks*entrySize(len(outboxPrefix(b.SSAID))+8, blockRefLen)
		r.entries += blocks + 1
	}
	return r, nil
}

// indexEntries bounds the blocks that records make (segment.go): a block closes only when
// the next record would take it over blockRaw, so two blocks in a row hold more than
// blockRaw bytes.
func indexEntries(records [][]byte) int {
	return min(len(records), 2*(sumLen(records)+len(records)*binary.MaxVarintLen32)/blockRaw+1)
}

// String names what the request writes, for errors.
func (r *enqueueRequest) String() string {
	var names []string
	for _, p := range r.parts {
		names = append(names, fmt.Sprintf("SSA %q", p.SSAID))
	}
	if r.pos != nil {
		names = append(names, fmt.Sprintf("followed file %q", r.pos.Path))
	}
	return strings.Join(names, ", ")
}

func (r *enqueueRequest) cost() (int, int) { return r.size, r.entries }

func (r *enqueueRequest) apply(txn *badger.Txn) (refused, failed error) {
	// Every state is read before anything is written, so that a refused request (a corrupt
	// outbox) leaves nothing in txn or in the segment files.
	states := make([]outboxRecord, len(r.parts))
	for i := range r.parts {
		st, err := getOutbox(txn, r.parts[i].SSAID)
		if err != nil {
			return refuseOrFail(err)
		}
		states[i] = st
	}
	for i := range r.parts {
		p, st := &r.parts[i], &states[i]
		keys, values, err := r.s.recs.append(outboxPrefix(p.SSAID), st.Refined+1, p.Records)
		if err != nil {
			return nil, err
		}
		for j, k := range keys {
			if err := txn.Set(k, values[j]); err != nil {
				return nil, err
			}
		}
		st.Refined += uint64(len(p.Records))
		st.Ingested += p.Ingested
		st.Dropped += p.Dropped
		r.s.mergeSent(p.SSAID, st)
		if err := putOutbox(txn, p.SSAID, st); err != nil {
			return nil, err
		}
		p.last = st.Refined
	}
	// The position is written here, in the transaction that moves every outbox past its
	// records. A crash before it commits leaves the records unindexed (Open cuts them from
	// the segment files) and the position where it was, so they are read and queued again,
	// once; a crash after it leaves both.
	if r.pos != nil {
		return nil, putFilePos(txn, r.pos)
	}
	return nil, nil
}
