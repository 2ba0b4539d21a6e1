package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// Group commit. Badger's SyncWrites syncs the memtable's write-ahead log once per transaction,
// even when its writer goroutine batches several transactions together, so concurrent Commits
// in their own transactions would each pay a full fsync. Instead one committer goroutine
// takes every Commit waiting when it becomes free and writes them all in one transaction: one
// fsync for the group. While it syncs, the next group gathers.

// Bounds of a group, well below Badger's transaction limits (15% of the memtable size, about
// 1.2 MiB, and the entries that fit in it): a group never fails for its size because of
// another request in it.
const (
	maxGroupBytes   = 512 << 10
	maxGroupEntries = 2048
)

// commitRequest is one Commit, checked and encoded as far as possible without the store.
type commitRequest struct {
	nid       []byte
	n         Negotiation
	msgs      [][]byte
	agreement *protocol.SSA
	agreed    []byte // agreement's encoding
	size      int    // estimate of the Badger batch bytes it adds
	done      chan error
}

func (r *commitRequest) entries() int { return len(r.msgs) + 4 }

// entrySize estimates what an entry adds to a Badger batch: values at or above valueThreshold
// go to the value log and leave a pointer.
func entrySize(key, value int) int {
	if value >= valueThreshold {
		value = 12
	}
	return key + value + 32
}

// commit hands r to the committer and waits until its group is written and synced.
func (s *Store) commit(r *commitRequest) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.commits <- r
	return <-r.done
}

// committer runs until Close, writing the commits waiting each time it is free as one group.
func (s *Store) committer() {
	defer close(s.done)
	var next *commitRequest // taken from the channel, but too large for the last group
	for {
		group := make([]*commitRequest, 0, 16)
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
		size, entries := group[0].size, group[0].entries()
	gather:
		for size < maxGroupBytes && entries < maxGroupEntries {
			select {
			case r := <-s.commits:
				if size+r.size > maxGroupBytes || entries+r.entries() > maxGroupEntries {
					next = r
					break gather
				}
				group = append(group, r)
				size, entries = size+r.size, entries+r.entries()
			default:
				break gather
			}
		}
		s.writeGroup(group)
	}
}

// writeGroup writes a group in one transaction and answers each request. A request the store
// refuses is answered with its reason and leaves nothing in the transaction. If the
// transaction fails, each request is tried again alone, so one cannot fail the others.
func (s *Store) writeGroup(group []*commitRequest) {
	refused, err := s.writeTxn(group)
	if err != nil && len(group) > 1 {
		for _, r := range group {
			s.writeGroup([]*commitRequest{r})
		}
		return
	}
	for i, r := range group {
		if err != nil {
			r.done <- err
		} else {
			r.done <- refused[i]
		}
	}
}

// writeTxn applies a group in one transaction and commits it. It returns each request's
// refusal, or an error if the transaction failed as a whole.
func (s *Store) writeTxn(group []*commitRequest) ([]error, error) {
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
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrConflict) {
			return nil, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return nil, err
	}
	s.groups.Add(1)
	return refused, nil
}
