package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// The requester's side of the Exchange phase: the inbox of the records delivered under each
// SSA, stored exactly once and in order, and deleted by retention. See exchange.go; the
// evidence of violations is in evidence.go.

// InboxState is an SSA's inbox on the requester side.
type InboxState struct {
	Last       uint64 // highest sequence number stored (records 1..Last were all received)
	Stored     uint64 // records currently held (after retention deletions)
	Deleted    uint64 // records deleted by retention
	Violations uint64 // records with verification findings
}

// StoredRecord is a delivered record in an inbox.
type StoredRecord struct {
	Seq        uint64
	Data       []byte
	ReceivedAt time.Time
}

// Receive stores in the SSA's inbox a batch of records numbered first, first+1, …, received
// at receivedAt. It is idempotent and ordered: records with seq <= Last are skipped
// (duplicates); a batch whose first seq is beyond Last+1 is refused with ErrGap, storing
// nothing; the rest is stored with the new Last, durably (fsynced, in a transaction shared
// with concurrent writers) and atomically. violations counts the records of this batch with
// findings: it is added to the SSA's count only as far as the batch stored new records (at
// most their number), so a batch received twice counts once. It returns how many new records
// were stored and the new Last.
//
// The records go to the inbox's segment files, synced before the transaction that indexes
// them and moves Last commits (segment.go): after a crash the whole batch is there, with its
// counters, or nothing of it is.
//
// The records are not copied: the caller must not change them before Receive returns.
func (s *Store) Receive(ssaID string, first uint64, records [][]byte, receivedAt time.Time, violations uint64) (stored int, last uint64, err error) {
	if len(records) == 0 {
		st, err := s.InboxState(ssaID)
		return 0, st.Last, err
	}
	r, err := newReceiveRequest(s, ssaID, first, records, receivedAt, violations)
	if err != nil {
		return 0, 0, err
	}
	if err := s.commit(r); err != nil {
		return 0, 0, fmt.Errorf("storage: receive records %d-%d of SSA %q: %w", first, r.end(), ssaID, err)
	}
	return r.stored, r.last, nil
}

type receiveRequest struct {
	waiter
	s          *Store
	ssaID      string
	first      uint64
	records    [][]byte
	run, at    []byte // the run's key and value (see doc.go)
	violations uint64
	size       int
	entries    int
	// The outcome.
	stored int
	last   uint64
}

func newReceiveRequest(s *Store, ssaID string, first uint64, records [][]byte, at time.Time, violations uint64) (*receiveRequest, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return nil, err
	}
	if first == 0 {
		return nil, fmt.Errorf("storage: receive for SSA %q: records are numbered from 1", ssaID)
	}
	if first+uint64(len(records)) < first {
		return nil, fmt.Errorf("storage: receive for SSA %q: sequence numbers overflow", ssaID)
	}
	r := &receiveRequest{waiter: newWaiter(), s: s, ssaID: ssaID, first: first, records: records, violations: violations,
		at: binary.BigEndian.AppendUint64(nil, uint64(unixNano(at)))}
	r.run = seqKey(runPrefix(ssaID), r.end())
	for _, rec := range records {
		if len(rec) > MaxRecordSize {
			return nil, fmt.Errorf("storage: receive for SSA %q: record of %d bytes, limit %d", ssaID, len(rec), MaxRecordSize)
		}
	}
	blocks := indexEntries(records)
	r.size = entrySize(len(prefixInboxState)+len(ssaID), 32) + entrySize(len(r.run), len(r.at)) +
		blocks*entrySize(len(inboxPrefix(ssaID))+8, blockRefLen)
	r.entries = blocks + 2
	return r, nil
}

func (r *receiveRequest) cost() (int, int) { return r.size, r.entries }

func (r *receiveRequest) end() uint64 { return r.first + uint64(len(r.records)) - 1 }

func (r *receiveRequest) apply(txn *badger.Txn) (refused, failed error) {
	st, err := getInbox(txn, r.ssaID)
	if err != nil {
		return refuseOrFail(err)
	}
	if r.first > st.Last+1 {
		return fmt.Errorf("%w: records from %d, %d stored", ErrGap, r.first, st.Last), nil
	}
	skip := int(min(st.Last+1-r.first, uint64(len(r.records))))
	if skip == len(r.records) {
		r.stored, r.last = 0, st.Last
		return nil, nil
	}
	keys, values, err := r.s.recs.append(inboxPrefix(r.ssaID), r.first+uint64(skip), r.records[skip:])
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		if err := txn.Set(k, values[i]); err != nil {
			return nil, err
		}
	}
	if err := txn.Set(r.run, r.at); err != nil {
		return nil, err
	}
	r.stored = len(r.records) - skip
	st.Last = r.end()
	st.Violations += min(r.violations, uint64(r.stored))
	if err := putInbox(txn, r.ssaID, &st); err != nil {
		return nil, err
	}
	r.last = st.Last
	return nil, nil
}

// InboxState returns an SSA's inbox counters: the zero state for an SSA never received from.
func (s *Store) InboxState(ssaID string) (InboxState, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return InboxState{}, err
	}
	var st inboxRecord
	err := s.view(func(txn *badger.Txn) error {
		var err error
		st, err = getInbox(txn, ssaID)
		return err
	})
	if err != nil {
		return InboxState{}, fmt.Errorf("storage: inbox of SSA %q: %w", ssaID, err)
	}
	return InboxState{Last: st.Last, Stored: st.Last - st.Head, Deleted: st.Head, Violations: st.Violations}, nil
}

// Records returns up to max records of the SSA's inbox with Seq > after, in order, and at
// most maxBytes of Data in total, but always at least one record if any is stored after
// after, even over maxBytes. Each Data is capped at its own length and shared with the
// store's cache: it must not be changed.
func (s *Store) Records(ssaID string, after uint64, max, maxBytes int) ([]StoredRecord, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	var out []StoredRecord
	err := s.viewRecords(func(txn *badger.Txn) error {
		st, err := getInbox(txn, ssaID)
		if err != nil {
			return err
		}
		from := maxU64(after, st.Head) // as in Pending: from+1 would wrap at MaxUint64
		if from >= st.Last {
			return nil
		}
		start := from + 1
		n := int(min(uint64(max), st.Last-from))
		out = make([]StoredRecord, 0, n)
		runs := newRunIterator(txn, ssaID, start)
		defer runs.close()
		err = s.scanRecords(txn, inboxPrefix(ssaID), start, n, maxBytes, func(seq uint64, data []byte) error {
			at, err := runs.at(seq)
			if err != nil {
				return err
			}
			out = append(out, StoredRecord{Seq: seq, Data: data, ReceivedAt: fromUnixNano(at)})
			return nil
		})
		if err != nil {
			return fmt.Errorf("inbox of %q: %w", ssaID, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: records of SSA %q: %w", ssaID, err)
	}
	return out, nil
}

// runIterator walks an inbox's runs (see doc.go) alongside its records.
type runIterator struct {
	it     *badger.Iterator
	prefix []byte
	end    uint64 // last record of the current run (before the first: the record before seq)
	when   int64  // when it was received
}

// newRunIterator returns an iterator positioned at the run that holds record seq.
func newRunIterator(txn *badger.Txn, ssaID string, seq uint64) *runIterator {
	prefix := runPrefix(ssaID)
	r := &runIterator{it: txn.NewIterator(badger.IteratorOptions{Prefix: prefix}), prefix: prefix, end: seq - 1}
	r.it.Seek(seqKey(prefix, seq))
	return r
}

func (r *runIterator) close() { r.it.Close() }

// next reads the run at the iterator and moves past it; false at the end.
func (r *runIterator) next() (bool, error) {
	if !r.it.Valid() {
		return false, nil
	}
	item := r.it.Item()
	end, ok := parseSeq(item.Key(), len(r.prefix))
	if !ok || end <= r.end {
		return false, fmt.Errorf("%w: run key %x", ErrCorrupt, item.Key())
	}
	err := item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: run %d of %d bytes", ErrCorrupt, end, len(v))
		}
		r.end, r.when = end, int64(binary.BigEndian.Uint64(v))
		return nil
	})
	r.it.Next()
	return err == nil, err
}

// at returns when record seq was received; seq must not go back between calls.
func (r *runIterator) at(seq uint64) (int64, error) {
	for seq > r.end {
		ok, err := r.next()
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("%w: no run holds record %d", ErrCorrupt, seq)
		}
	}
	return r.when, nil
}

// DeleteRecordsReceivedBefore deletes the SSA's records received before t (retention) and
// returns how many it deleted. Records arrive in order, so it deletes from the oldest up to
// the first received at or after t (a record received later with an earlier time, the clock
// having gone back, waits for the next call that passes it). It reads the runs, never the
// records, and deletes at most deleteChunk records per transaction, durably, with the
// counters. The blocks of the records deleted leave the index with them, and their disk is
// given back after each transaction (segment.go), so that they are off the disk when it
// returns, but for the part of a block that holds records not deleted yet.
func (s *Store) DeleteRecordsReceivedBefore(ssaID string, t time.Time) (int, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return 0, err
	}
	deleted := 0
	before := unixNano(t)
	for {
		// Find the end of the last run received before t, no further than a chunk.
		var through, head uint64
		runs := 0 // runs to delete, the last one maybe in part
		// Blocks up to Head are left in the index: by the last transaction (dropChunk at a
		// time), or by a crash between two (TestTrimAfterCrash).
		dead := false
		err := s.view(func(txn *badger.Txn) error {
			st, err := getInbox(txn, ssaID)
			if err != nil {
				return err
			}
			head = st.Head
			if dead, err = s.deadIndexed(txn, inboxPrefix(ssaID), st.Head); err != nil {
				return err
			}
			it := newRunIterator(txn, ssaID, st.Head+1)
			defer it.close()
			for it.end < min(st.Head+deleteChunk, st.Last) {
				ok, err := it.next()
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("%w: inbox of %q: no run holds records %d to %d", ErrCorrupt, ssaID, it.end+1, st.Last)
				}
				if it.when >= before {
					break
				}
				through = min(it.end, st.Head+deleteChunk, st.Last)
				runs++
			}
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("storage: delete records of SSA %q: %w", ssaID, err)
		}
		if through <= head && !dead {
			return deleted, nil
		}
		r := &retainRequest{waiter: newWaiter(), s: s, ssaID: ssaID, through: through,
			keyLen: len(runPrefix(ssaID)) + 8, deletes: int(max(through, head) - head), runs: runs}
		if err := s.commit(r); err != nil {
			return deleted, fmt.Errorf("storage: delete records of SSA %q: %w", ssaID, err)
		}
		deleted += r.deleted
	}
}

type retainRequest struct {
	waiter
	s       *Store
	ssaID   string
	through uint64
	deletes int // at most this many records
	runs    int // and this many runs
	keyLen  int
	// The outcome: records deleted, and what it took out of the index.
	deleted int
	dropped indexDrop
}

func (r *retainRequest) cost() (int, int) {
	return r.runs*entrySize(r.keyLen, 0) + dropChunk*entrySize(r.keyLen, 0) + entrySize(len(prefixInboxState)+len(r.ssaID), 32),
		r.runs + dropChunk + 1
}

func (r *retainRequest) apply(txn *badger.Txn) (refused, failed error) {
	st, err := getInbox(txn, r.ssaID)
	if err != nil {
		return refuseOrFail(err)
	}
	// Another call may have deleted some already; never delete more than cost allows.
	if end := min(r.through, st.Last, st.Head+uint64(r.deletes)); end > st.Head {
		// The runs that end in the range go with it; the run that ends after it stays.
		runs := runPrefix(r.ssaID)
		var ends []uint64
		it := txn.NewIterator(badger.IteratorOptions{Prefix: runs})
		for it.Seek(seqKey(runs, st.Head+1)); it.Valid() && len(ends) < r.runs; it.Next() {
			e, ok := parseSeq(it.Item().Key(), len(runs))
			if !ok || e > end {
				break
			}
			ends = append(ends, e)
		}
		it.Close()
		for _, e := range ends {
			if err := txn.Delete(seqKey(runs, e)); err != nil {
				return nil, err
			}
		}
		r.deleted = int(end - st.Head)
		st.Head = end
		if err := putInbox(txn, r.ssaID, &st); err != nil {
			return nil, err
		}
	}
	// The blocks left up to Head (more) go with the next request: its caller sees them.
	r.dropped, err = r.s.dropIndex(txn, inboxPrefix(r.ssaID), st.Head, dropChunk)
	return nil, err
}

func (r *retainRequest) release() error {
	return r.s.recs.release(inboxPrefix(r.ssaID), r.dropped, true)
}

// inboxRecord is an SSA's inbox state as stored under v/<ssaID>. Records Head+1..Last are
// stored; those up to Head were deleted by retention.
type inboxRecord struct {
	Last       uint64 `cbor:"1,keyasint,omitempty"`
	Head       uint64 `cbor:"2,keyasint,omitempty"`
	Violations uint64 `cbor:"3,keyasint,omitempty"`
}

func getInbox(txn *badger.Txn, ssaID string) (inboxRecord, error) {
	var st inboxRecord
	b, err := get(txn, inboxStateKey(ssaID))
	if errors.Is(err, ErrNotFound) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := protocol.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: inbox state of %q: %v", ErrCorrupt, ssaID, err)
	}
	if st.Head > st.Last || st.Violations > st.Last {
		return st, fmt.Errorf("%w: inbox state of %q: %+v", ErrCorrupt, ssaID, st)
	}
	return st, nil
}

func putInbox(txn *badger.Txn, ssaID string, st *inboxRecord) error {
	b, err := protocol.Marshal(st)
	if err != nil {
		return err
	}
	return txn.Set(inboxStateKey(ssaID), b)
}
