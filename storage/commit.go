package storage

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/dgraph-io/badger/v4"
)

// Group commit. Badger's SyncWrites syncs the memtable's write-ahead log once per transaction,
// even when its writer goroutine batches several transactions together, so concurrent writes
// in their own transactions would each pay a full fsync. Instead one committer goroutine
// takes every request waiting when it becomes free (Commits, and the exchange queues' writes:
// Enqueue, Ack, Receive, …) and writes them all in one transaction: one fsync for the group.
// While it syncs, the next group gathers. When nothing more is waiting, the committer yields
// its processor (up to gatherYields times in a row) before it writes: goroutines that are
// about to commit (a negotiation's next step, on a busy machine) run and join the group
// instead of paying for syncs of their own. On an idle machine a yield returns at once.
// (16 concurrent negotiations over loopback, two agents in one process: 2.7 groups per
// negotiation without yielding, 1.2 with it.)
//
// The committer is the only writer of the keys its requests touch, so a request reads the
// store in the group's transaction (which sees the writes of the requests before it in the
// group) and never meets a conflict.

// Bounds of a group, below Badger's transaction limits (15% of the memtable size, about 614
// KiB, and that divided by 96 bytes, 6553 entries; TestGroupBounds checks): a group never
// fails for its size because of another request in it. A request that could not fit in one
// group is not one of the exchange queues': their records go to segment files, and only an
// index entry per block counts (segment.go). ProfileSensor's smaller memtables have bounds of their
// own (store.go); a Store keeps its profile's in groupBytes and groupEntries.
const (
	maxGroupBytes   = 512 << 10
	maxGroupEntries = 4096
)

// gatherYields is how many times in a row the committer yields without a new request before
// it writes a group. Between 2 and 16 the negotiation benchmark cannot tell them apart.
const gatherYields = 4

// request is one write waiting for the committer.
type request interface {
	// cost is an upper bound of what the request adds to a Badger batch: bytes (entrySize)
	// and entries.
	cost() (bytes, entries int)
	// apply checks the request against the store as txn sees it, then writes it into txn.
	// It reads before it writes, so a refused request leaves nothing in txn. A failed one
	// (an error from Badger) spoils txn.
	apply(txn *badger.Txn) (refused, failed error)
	// reply is where the caller waits for the request's outcome.
	reply() chan error
}

// releaser is a request that takes blocks of records out of a queue's index: after its
// transaction commits, the committer gives their disk back (segment.go).
type releaser interface {
	request
	release() error
}

// settleRecords ends what a group (or a migration's chunk) appended to the segment files,
// after its transaction: kept if it committed, or if a commit that failed made its index
// entries visible all the same (a sync that failed after Badger's write), so that the index
// never points at bytes cut; cut back otherwise.
func (s *Store) settleRecords(err error) {
	if err == nil || s.recs.groupIndexed(s.db) {
		s.recs.commit()
		return
	}
	if rerr := s.recs.rollback(); rerr != nil {
		s.log.Warn("storage: cut records back after a failed commit (Open cuts them at the next start)", "err", rerr)
	}
}

// waiter answers a request's caller.
type waiter struct{ done chan error }

func newWaiter() waiter { return waiter{done: make(chan error, 1)} }

func (w *waiter) reply() chan error { return w.done }

// entrySize estimates what an entry adds to a Badger batch: values at or above valueThreshold
// go to the value log and leave a pointer.
func entrySize(key, value int) int {
	if value >= valueThreshold {
		value = 12
	}
	return key + value + 32
}

// commit hands r to the committer and waits until its group is written and synced.
func (s *Store) commit(r request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.waiting.Add(1)
	s.commits <- r
	s.waiting.Add(-1)
	return <-r.reply()
}

// committer runs until Close, writing the requests waiting each time it is free as one group.
func (s *Store) committer() {
	defer close(s.done)
	var next request // taken from the channel, but too large for the last group
	for {
		group := make([]request, 0, 16)
		if next != nil {
			group, next = append(group, next), nil
		} else {
			select {
			case r := <-s.commits:
				group = append(group, r)
			case <-s.stop:
				return
			}
		}
		size, entries := group[0].cost()
		yields := 0
	gather:
		for size < s.groupBytes && entries < s.groupEntries {
			select {
			case r := <-s.commits:
				b, n := r.cost()
				if size+b > s.groupBytes || entries+n > s.groupEntries {
					next = r
					break gather
				}
				group = append(group, r)
				size, entries = size+b, entries+n
				yields = 0
			default:
				if yields == gatherYields {
					break gather
				}
				runtime.Gosched()
				yields++
			}
		}
		if group = s.admit(group); len(group) > 0 {
			s.writeGroup(group)
		}
	}
}

// writeGroup writes a group in one transaction and answers each request. A request the store
// refuses is answered with its reason and leaves nothing in the transaction. If the
// transaction fails, each request is tried again alone, so one cannot fail the others.
func (s *Store) writeGroup(group []request) {
	refused, err := s.writeTxn(group)
	if err != nil && len(group) > 1 {
		for _, r := range group {
			s.writeGroup([]request{r})
		}
		return
	}
	for i, r := range group {
		if err != nil {
			r.reply() <- err
		} else {
			r.reply() <- refused[i]
		}
	}
}

// writeTxn applies a group in one transaction and commits it. It returns each request's
// refusal, or an error if the transaction failed as a whole. The records the group appended
// to segment files are written and synced before the transaction that indexes them commits,
// and rolled back if it does not (segment.go).
func (s *Store) writeTxn(group []request) ([]error, error) {
	refused, err := s.commitTxn(group)
	s.settleRecords(err)
	if err != nil {
		return nil, err
	}
	for i, r := range group {
		if rr, ok := r.(releaser); ok && refused[i] == nil {
			if err := rr.release(); err != nil {
				s.log.Warn("storage: give back the disk of deleted records (the next deletion in the queue tries again)", "err", err)
			}
		}
	}
	return refused, nil
}

// commitTxn is writeTxn's transaction.
func (s *Store) commitTxn(group []request) ([]error, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	refused := make([]error, len(group))
	for i, r := range group {
		var err error
		if refused[i], err = r.apply(txn); err != nil {
			if errors.Is(err, badger.ErrTxnTooBig) {
				return nil, fmt.Errorf("storage: commit too large for one transaction: %w", err)
			}
			return nil, err
		}
	}
	if err := s.recs.sync(); err != nil {
		return nil, err
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrConflict) {
			return nil, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return nil, err
	}
	s.groups.Add(1)
	return refused, nil
}
