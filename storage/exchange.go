package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// The Exchange phase (X.1205 Suppl. 20 Appendix I, steps ⑦–⑪). The provider's SSP enforcement
// point puts the records it lets through in the SSA's outbox (Enqueue), which the agent
// delivers (Pending, MarkSent) until the requester acknowledges them (Ack); the requester
// stores what it receives in the SSA's inbox (Receive, inbox.go), exactly once and in order.
// Every write goes through the committer (commit.go), so that the queues of all SSAs and the
// negotiations share fsyncs. This file holds the outbox and what both queues share.

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

// OutboxState is an SSA's outbox on the provider side: refined records waiting for delivery
// to the requester, numbered 1, 2, 3, … per SSA, and the counters that monitoring reports.
type OutboxState struct {
	Ingested uint64 // raw records offered to this SSA's enforcement point
	Refined  uint64 // records the SSP let through (== last sequence number enqueued)
	Dropped  uint64 // raw records the SSP filtered out or that failed to parse
	Acked    uint64 // highest sequence number the requester acknowledged
	Sent     uint64 // highest sequence number sent at least once
}

// QueuedRecord is a refined record in an outbox.
type QueuedRecord struct {
	Seq  uint64
	Data []byte
}

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
	keys   []byte // len(Records) keys of keyLen bytes; apply writes their seq
	keyLen int
	// A large request (splitter) writes Records[:pre] first, numbered from base+1.
	pre  int
	base uint64
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
		prefix := outboxPrefix(b.SSAID)
		p := &r.parts[i]
		*p = outboxPart{Batch: b, keyLen: len(prefix) + 8}
		p.keys = make([]byte, len(b.Records)*p.keyLen)
		r.size += entrySize(len(prefixOutboxState)+len(b.SSAID), 64)
		r.entries += len(b.Records) + 1
		for j, rec := range b.Records {
			if len(rec) > MaxRecordSize {
				return nil, fmt.Errorf("storage: enqueue for SSA %q: record of %d bytes, limit %d", b.SSAID, len(rec), MaxRecordSize)
			}
			copy(p.keys[j*p.keyLen:], prefix)
			r.size += entrySize(p.keyLen, len(rec))
		}
	}
	return r, nil
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

// key returns record i's key, numbered seq.
func (p *outboxPart) key(i int, seq uint64) []byte {
	k := p.keys[i*p.keyLen : (i+1)*p.keyLen : (i+1)*p.keyLen]
	binary.BigEndian.PutUint64(k[p.keyLen-8:], seq)
	return k
}

// recordsSize is what records[from:] add to a batch.
func (p *outboxPart) recordsSize(from int) int {
	n := 0
	for _, rec := range p.Records[from:] {
		n += entrySize(p.keyLen, len(rec))
	}
	return n
}

func (r *enqueueRequest) apply(txn *badger.Txn) (refused, failed error) {
	// Every state is read before anything is written, so that a refused request (a corrupt
	// outbox) leaves nothing in txn.
	states := make([]outboxRecord, len(r.parts))
	for i := range r.parts {
		p := &r.parts[i]
		st, err := getOutbox(txn, p.SSAID)
		if err != nil {
			return refuseOrFail(err)
		}
		if p.pre > 0 && st.Refined != p.base {
			return nil, fmt.Errorf("storage: outbox of %q moved from %d to %d during a large enqueue", p.SSAID, p.base, st.Refined)
		}
		states[i] = st
	}
	for i := range r.parts {
		p, st := &r.parts[i], &states[i]
		for j := p.pre; j < len(p.Records); j++ {
			if err := txn.Set(p.key(j, st.Refined+1+uint64(j)), p.Records[j]); err != nil {
				return nil, err
			}
		}
		if p.pre > 0 {
			if err := txn.Delete(markKey(outboxPrefix(p.SSAID))); err != nil {
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
	// records: the last one of a large request, after its bulk (prewrite). A crash before
	// this transaction leaves the records invisible (Open deletes them as orphans) and the
	// position where it was, so they are read and queued again, once; a crash after it
	// leaves both. Written with the bulk instead, the position would skip records that a
	// crash before the last transaction then deletes.
	if r.pos != nil {
		return nil, putFilePos(txn, r.pos)
	}
	return nil, nil
}

// prewrite writes the records that do not fit in the last transaction, numbered after each
// outbox's last record: invisible (Pending reads no further than Refined) until apply moves
// Refined past them. If the process dies before, the next Open deletes them (deleteOrphans).
// It goes through the batches in turn, each written until its remainder, the remainders of
// the batches before it, all of the batches after it, and every state, mark and position
// fit in one transaction.
func (r *enqueueRequest) prewrite(s *Store) error {
	rest, restEntries := 0, 0
	if r.pos != nil {
		rest, restEntries = entrySize(len(prefixFilePos)+len(r.pos.Path), 32), 1
	}
	for i := range r.parts {
		p := &r.parts[i]
		rest += entrySize(len(prefixOutboxState)+len(p.SSAID), 64) + entrySize(len(markKey(outboxPrefix(p.SSAID))), 0) + p.recordsSize(0)
		restEntries += 2 + len(p.Records)
	}
	for i := range r.parts {
		p := &r.parts[i]
		var st outboxRecord
		err := s.db.View(func(txn *badger.Txn) error {
			var err error
			st, err = getOutbox(txn, p.SSAID)
			return err
		})
		if err != nil {
			return err
		}
		p.base = st.Refined
		rest, restEntries = rest-p.recordsSize(0), restEntries-len(p.Records)
		p.pre, err = s.prewriteBulk(outboxPrefix(p.SSAID), 0, len(p.Records), rest, restEntries, func(j int) ([]byte, []byte) {
			return p.key(j, st.Refined+1+uint64(j)), p.Records[j]
		})
		if err != nil {
			return err
		}
		rest, restEntries = rest+p.recordsSize(p.pre), restEntries+len(p.Records)-p.pre
	}
	return nil
}

// prewriteBulk writes entries [from, n) of a large request to the queue whose record keys
// start with queue, in transactions of their own, as many as fit in each, until the entries
// left and the rest of the request (restBytes in restEntries, and the deletion of the
// queue's mark) fit in one transaction. The first of them also writes the mark, which the
// request's last transaction deletes; before them, deleteOrphans deletes what an earlier
// batch of the queue left. It returns the first entry it did not write.
func (s *Store) prewriteBulk(queue []byte, from, n, restBytes, restEntries int, entry func(i int) (k, v []byte)) (int, error) {
	if err := s.deleteOrphans(queue); err != nil {
		return 0, err
	}
	mark := markKey(queue)
	left := restBytes + entrySize(len(mark), 0)
	restEntries++
	for i := from; i < n; i++ {
		k, v := entry(i)
		left += entrySize(len(k), len(v))
	}
	keys, values := [][]byte{mark}, [][]byte{nil}
	size := entrySize(len(mark), 0)
	for from < n && (left > maxGroupBytes || n-from+restEntries > maxGroupEntries) {
		for ; from < n && len(keys) < maxGroupEntries; from++ {
			k, v := entry(from)
			e := entrySize(len(k), len(v))
			if size+e > maxGroupBytes && len(keys) > 0 {
				break
			}
			keys, values = append(keys, k), append(values, v)
			size += e
			left -= e
		}
		if err := s.writeChunk(keys, values); err != nil {
			return 0, fmt.Errorf("storage: write part of a large batch: %w", err)
		}
		keys, values, size = keys[:0], values[:0], 0
	}
	return from, nil
}

// Orphans. The bulk of a large batch (prewriteBulk) lies beyond its queue's end until the
// batch's last transaction moves the end past it and deletes the queue's mark, which the
// bulk's first transaction wrote. A mark left behind means that the process died in between
// (or a write failed): the records beyond the end are orphans, which no Ack, DropOutbox or
// retention would reach, as they stop at the end. deleteOrphans deletes them, at Open and
// before the queue's next large batch.

// deleteOrphans deletes the records beyond the end of the queue whose record keys start
// with queue, and its mark, if it is marked: a chunk per transaction. Its caller must be the
// only writer of the queue: Open before it starts the committer, or the committer.
func (s *Store) deleteOrphans(queue []byte) error {
	mark := markKey(queue)
	from := uint64(0) // no orphan before from
	for more := true; more; {
		err := s.db.Update(func(txn *badger.Txn) error {
			if _, err := get(txn, mark); errors.Is(err, ErrNotFound) {
				more = false
				return nil
			} else if err != nil {
				return err
			}
			end, err := queueEnd(txn, queue)
			if err != nil {
				return err
			}
			from = max(from, end+1)
			var keys [][]byte
			it := txn.NewIterator(badger.IteratorOptions{Prefix: queue}) // keys only
			for it.Seek(seqKey(queue, from)); it.Valid() && len(keys) < deleteChunk; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			if more = len(keys) == deleteChunk; more {
				from, _ = parseSeq(keys[len(keys)-1], len(queue))
				from++
				return nil
			}
			return txn.Delete(mark)
		})
		if err != nil {
			return fmt.Errorf("storage: delete the invisible records an interrupted large batch left in the queue %q "+
				"(Open and the queue's next large batch try again): %w", queue, err)
		}
	}
	return nil
}

// deleteAllOrphans deletes the orphans of every marked queue (Open). A queue whose state is
// corrupt keeps its mark and its orphans, with a warning: its own calls report ErrCorrupt, and
// the other queues are not held up.
func (s *Store) deleteAllOrphans() error {
	var queues [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, []byte(prefixMark), func(k, _ []byte) error {
			queues = append(queues, bytes.Clone(k[len(prefixMark):]))
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("storage: read the marks of large batches: %w", err)
	}
	for _, q := range queues {
		err := s.deleteOrphans(q)
		if errors.Is(err, ErrCorrupt) {
			s.log.Warn("storage: orphans of a large batch left in place", "err", err)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// queueEnd returns the last record of the queue whose record keys start with queue: an
// outbox's Refined, an inbox's Last.
func queueEnd(txn *badger.Txn, queue []byte) (uint64, error) {
	n := len(prefixOutbox) // == len(prefixInbox)
	if len(queue) < n+2 || int(binary.BigEndian.Uint16(queue[n:])) != len(queue)-n-2 {
		return 0, fmt.Errorf("%w: mark of a large batch for the queue %q", ErrCorrupt, queue)
	}
	ssaID := string(queue[n+2:])
	switch string(queue[:n]) {
	case prefixOutbox:
		st, err := getOutbox(txn, ssaID)
		return st.Refined, err
	case prefixInbox:
		st, err := getInbox(txn, ssaID)
		return st.Last, err
	}
	return 0, fmt.Errorf("%w: mark of a large batch for the queue %q", ErrCorrupt, queue)
}

// Pending returns up to max records of the SSA's outbox with Seq > after, and at most
// maxBytes of Data in total, but always at least one record if any is pending, even over
// maxBytes. Records acknowledged or dropped are not pending, whatever after is. The records
// share one buffer, each Data capped at its own length.
func (s *Store) Pending(ssaID string, after uint64, max, maxBytes int) ([]QueuedRecord, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	var out []QueuedRecord
	err := s.view(func(txn *badger.Txn) error {
		st, err := getOutbox(txn, ssaID)
		if err != nil {
			return err
		}
		// from, the last record not to return, may be MaxUint64: from+1 would wrap.
		from := maxU64(after, st.Acked, st.Drop, st.Head)
		if from >= st.Refined {
			return nil
		}
		start := from + 1
		n := int(min(uint64(max), st.Refined-from))
		out = make([]QueuedRecord, 0, n)
		err = scanChunk(txn, outboxPrefix(ssaID), start, n, maxBytes, func(seq uint64, data []byte) error {
			out = append(out, QueuedRecord{Seq: seq, Data: data})
			return nil
		})
		if err != nil {
			return fmt.Errorf("outbox of %q: %w", ssaID, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: pending records of SSA %q: %w", ssaID, err)
	}
	return out, nil
}

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

// MarkSent records that the SSA's records up to seq were sent at least once; a seq beyond
// the last record enqueued is refused with ErrNotEnqueued. It is advisory, for the counters,
// and costs no write: the highest seq is kept in memory and stored with the SSA's next
// Enqueue or Ack, so after a crash Sent may go back, but never below Acked.
func (s *Store) MarkSent(ssaID string, seq uint64) error {
	if err := checkID("SSA", ssaID, false); err != nil {
		return err
	}
	err := s.view(func(txn *badger.Txn) error {
		st, err := getOutbox(txn, ssaID)
		if err != nil {
			return err
		}
		if seq > st.Refined {
			return fmt.Errorf("%w: %d records enqueued", ErrNotEnqueued, st.Refined)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: mark records up to %d of SSA %q sent: %w", seq, ssaID, err)
	}
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	if seq > s.sent[ssaID] {
		s.sent[ssaID] = seq
	}
	return nil
}

// mergeSent raises st.Sent to what MarkSent recorded.
func (s *Store) mergeSent(ssaID string, st *outboxRecord) {
	s.sentMu.Lock()
	sent := s.sent[ssaID]
	s.sentMu.Unlock()
	st.Sent = min(maxU64(st.Sent, sent, st.Acked), st.Refined)
}

// Ack records that the requester holds every record of the SSA up to seq, durably, and
// deletes them from the outbox. Acks never go backwards: a seq at or below the last one is a
// no-op (and costs no write). A seq beyond the last record enqueued is refused with
// ErrNotEnqueued.
//
// The new Acked is durable in the first transaction, with the first deleteChunk deletions;
// a longer run is deleted by more transactions before Ack returns. If the process dies in
// between, records up to Acked are no longer pending, and the next Ack or DropOutbox deletes
// what is left.
func (s *Store) Ack(ssaID string, seq uint64) error {
	if err := s.trim(ssaID, seq, false); err != nil {
		return fmt.Errorf("storage: ack %d for SSA %q: %w", seq, ssaID, err)
	}
	return nil
}

// DropOutbox deletes an SSA's queued records (cancelled or expired SSA), keeping its
// counters. Records enqueued later are queued as usual.
func (s *Store) DropOutbox(ssaID string) error {
	if err := s.trim(ssaID, 0, true); err != nil {
		return fmt.Errorf("storage: drop outbox of SSA %q: %w", ssaID, err)
	}
	return nil
}

// trim raises Acked to ack, or with drop marks every record enqueued so far for deletion,
// then deletes what is marked, a chunk per transaction.
func (s *Store) trim(ssaID string, ack uint64, drop bool) error {
	if err := checkID("SSA", ssaID, false); err != nil {
		return err
	}
	keyLen := len(outboxPrefix(ssaID)) + 8
	for {
		var st outboxRecord
		err := s.view(func(txn *badger.Txn) error {
			var err error
			st, err = getOutbox(txn, ssaID)
			return err
		})
		if err != nil {
			return err
		}
		target := maxU64(st.Acked, st.Drop, ack)
		if drop {
			target = max(target, st.Refined)
		}
		if ack > st.Refined {
			return fmt.Errorf("%w: %d records enqueued", ErrNotEnqueued, st.Refined)
		}
		if target <= st.Head && ack <= st.Acked && (!drop || st.Drop >= st.Refined) {
			return nil
		}
		r := &trimRequest{waiter: newWaiter(), s: s, ssaID: ssaID, ack: ack, drop: drop,
			deletes: int(min(target-st.Head, deleteChunk)), keyLen: keyLen}
		if err := s.commit(r); err != nil {
			return err
		}
		if !r.more {
			return nil
		}
		drop = false // marked: what is left is deleted like acknowledged records
	}
}

type trimRequest struct {
	waiter
	s       *Store
	ssaID   string
	ack     uint64
	drop    bool
	deletes int // at most this many deletions
	keyLen  int
	more    bool // the outcome: records are left to delete
}

func (r *trimRequest) cost() (int, int) {
	return r.deletes*entrySize(r.keyLen, 0) + entrySize(len(prefixOutboxState)+len(r.ssaID), 64), r.deletes + 1
}

func (r *trimRequest) apply(txn *badger.Txn) (refused, failed error) {
	st, err := getOutbox(txn, r.ssaID)
	if err != nil {
		return refuseOrFail(err)
	}
	if r.ack > st.Refined {
		return fmt.Errorf("%w: %d records enqueued", ErrNotEnqueued, st.Refined), nil
	}
	st.Acked = max(st.Acked, r.ack)
	if r.drop {
		st.Drop = st.Refined
	}
	target := max(st.Acked, st.Drop)
	end := min(target, st.Head+uint64(r.deletes))
	// One allocation for the keys: an Ack deletes a batch's worth of records.
	prefix := outboxPrefix(r.ssaID)
	n := int(end - min(end, st.Head))
	keys := make([]byte, n*r.keyLen)
	for i := range n {
		k := keys[i*r.keyLen : (i+1)*r.keyLen : (i+1)*r.keyLen]
		copy(k, prefix)
		binary.BigEndian.PutUint64(k[len(prefix):], st.Head+1+uint64(i))
		if err := txn.Delete(k); err != nil {
			return nil, err
		}
	}
	st.Head = max(st.Head, end)
	r.s.mergeSent(r.ssaID, &st)
	if err := putOutbox(txn, r.ssaID, &st); err != nil {
		return nil, err
	}
	r.more = st.Head < target
	return nil, nil
}

// OutboxState returns an SSA's outbox counters: the zero state for an SSA never enqueued to.
func (s *Store) OutboxState(ssaID string) (OutboxState, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return OutboxState{}, err
	}
	var st outboxRecord
	err := s.view(func(txn *badger.Txn) error {
		var err error
		st, err = getOutbox(txn, ssaID)
		return err
	})
	if err != nil {
		return OutboxState{}, fmt.Errorf("storage: outbox of SSA %q: %w", ssaID, err)
	}
	s.mergeSent(ssaID, &st)
	return OutboxState{Ingested: st.Ingested, Refined: st.Refined, Dropped: st.Dropped, Acked: st.Acked, Sent: st.Sent}, nil
}

// outboxRecord is an SSA's outbox state as stored under Q/<ssaID>. Integer keys are never
// renumbered or reused.
type outboxRecord struct {
	Ingested uint64 `cbor:"1,keyasint,omitempty"`
	Refined  uint64 `cbor:"2,keyasint,omitempty"`
	Dropped  uint64 `cbor:"3,keyasint,omitempty"`
	Acked    uint64 `cbor:"4,keyasint,omitempty"`
	Sent     uint64 `cbor:"5,keyasint,omitempty"`
	// Head: every record up to Head is deleted.
	Head uint64 `cbor:"6,keyasint,omitempty"`
	// Drop: DropOutbox marked every record up to Drop for deletion.
	Drop uint64 `cbor:"7,keyasint,omitempty"`
}

func getOutbox(txn *badger.Txn, ssaID string) (outboxRecord, error) {
	var st outboxRecord
	b, err := get(txn, outboxStateKey(ssaID))
	if errors.Is(err, ErrNotFound) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := protocol.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: outbox state of %q: %v", ErrCorrupt, ssaID, err)
	}
	if st.Acked > st.Refined || st.Drop > st.Refined || st.Head > max(st.Acked, st.Drop) {
		return st, fmt.Errorf("%w: outbox state of %q: %+v", ErrCorrupt, ssaID, st)
	}
	return st, nil
}

func putOutbox(txn *badger.Txn, ssaID string, st *outboxRecord) error {
	b, err := protocol.Marshal(st)
	if err != nil {
		return err
	}
	return txn.Set(outboxStateKey(ssaID), b)
}

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

// markKey returns the mark of the queue whose record keys start with queue (see deleteOrphans).
func markKey(queue []byte) []byte { return append([]byte(prefixMark), queue...) }

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
