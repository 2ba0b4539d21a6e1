package storage

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// The provider's side of the Exchange phase, writing: Enqueue and EnqueueAll put refined
// records in outboxes (outbox.go), a large batch in several transactions (large.go).

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
