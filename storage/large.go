package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Large batches. An Enqueue or Receive too large for one transaction (a splitter, commit.go)
// writes its bulk first, invisible beyond its queue's end, and the rest with the counters that
// make the whole visible at once.

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
	for from < n && (left > s.groupBytes || n-from+restEntries > s.groupEntries) {
		for ; from < n && len(keys) < s.groupEntries; from++ {
			k, v := entry(from)
			e := entrySize(len(k), len(v))
			if size+e > s.groupBytes && len(keys) > 0 {
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
		s.gcMu.RLock()
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
				// The next seek starts past what was deleted, not over its tombstones. A
				// key of another length (corrupt) is deleted all the same, and the next
				// seek starts where this one did.
				if seq, ok := parseSeq(keys[len(keys)-1], len(queue)); ok {
					from = seq + 1
				}
				return nil
			}
			return txn.Delete(mark)
		})
		s.gcMu.RUnlock()
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

// markKey returns the mark of the queue whose record keys start with queue (see deleteOrphans).
func markKey(queue []byte) []byte { return append([]byte(prefixMark), queue...) }
