package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Version 2 of the layout kept each exchange record as the value of a key of its own, in the
// LSM tree, and the bulk of a large batch under a mark until the batch's last transaction.
const (
	v2PrefixOutbox = "q/"
	v2PrefixInbox  = "r/"
	v2PrefixMark   = "w/"
)

// migrateRecords (version 2 to 3) moves the exchange records out of the LSM tree into the
// queues' segment files (segment.go). See moveRecords.
var migrateRecords = migration{
	to:   3,
	what: "move the exchange records into segment files",
	run:  (*Store).moveRecords,
}

// moveRecords moves the records of every queue, in key order: each transaction takes up to
// migrateChunk records of one queue, appends the live ones (after the queue's Head, up to
// its end) to its segment files as blocks, synced before the transaction commits, and
// writes their index entries and deletes their keys in it; the records up to Head (deleted,
// not dropped from the tables yet) and beyond the end (the bulk of a large batch a crash cut
// short) are deleted without a move. The first key left is always the next to move, so a
// kill at any moment resumes where the last transaction ended: the files' bytes that no
// committed index entry points at are cut at the next Open. Last, the prefixes are dropped
// from the tables with the marks, so that their disk is given back at once.
func (s *Store) moveRecords() error {
	moved, dropped := 0, 0
	for _, p := range []string{v2PrefixOutbox, v2PrefixInbox} {
		for {
			keys, records, err := s.moveChunk([]byte(p))
			if err != nil {
				return err
			}
			if keys == 0 {
				break
			}
			moved, dropped = moved+records, dropped+keys-records
		}
	}
	if err := s.db.DropPrefix([]byte(v2PrefixOutbox), []byte(v2PrefixInbox), []byte(v2PrefixMark)); err != nil {
		return fmt.Errorf("drop the moved records from the tables: %w", err)
	}
	// dropped: deleted records not dropped from the tables yet, and orphans of a large batch.
	s.log.Info("storage: moved the exchange records into segment files", "records", moved, "dropped", dropped)
	return nil
}

// moveChunk moves up to migrateChunk records of the first queue left under prefix (v2
// layout) and returns how many keys it took (0: none is left) and how many records of them it
// moved (the others were below Head or beyond the end).
func (s *Store) moveChunk(prefix []byte) (keysTaken, moved int, err error) {
	var keys, records [][]byte
	var queue []byte // the queue's v2 prefix
	var ssaID string
	var first uint64 // the first live record's seq, 0 for none
	err = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		k := it.Item().Key()
		n := len(prefix)
		if len(k) < n+2 || len(k) != n+2+int(binary.BigEndian.Uint16(k[n:]))+8 {
			return fmt.Errorf("%w: record key %x", ErrCorrupt, k)
		}
		queue = bytes.Clone(k[:len(k)-8])
		ssaID = string(queue[n+2:])
		head, end, err := v2Bounds(txn, string(prefix), ssaID)
		if err != nil {
			return err
		}
		for ; it.Valid() && bytes.HasPrefix(it.Item().Key(), queue) && len(keys) < migrateChunk; it.Next() {
			item := it.Item()
			seq, ok := parseSeq(item.Key(), len(queue))
			if !ok {
				return fmt.Errorf("%w: record key %x", ErrCorrupt, item.Key())
			}
			keys = append(keys, item.KeyCopy(nil))
			if seq <= head || seq > end {
				continue // deleted, or the orphan of a large batch
			}
			if first == 0 {
				first = seq
			} else if seq != first+uint64(len(records)) {
				return fmt.Errorf("%w: queue %q: record %d missing", ErrCorrupt, ssaID, first+uint64(len(records)))
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			records = append(records, v)
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, 0, err
	}
	index := outboxPrefix(ssaID)
	if string(prefix) == v2PrefixInbox {
		index = inboxPrefix(ssaID)
	}
	err = s.update(func(txn *badger.Txn) error {
		if len(records) > 0 {
			// The records must follow what the queue's files hold already.
			if last, err := lastIndexed(txn, index); err != nil {
				return err
			} else if last != 0 && last+1 != first {
				return fmt.Errorf("%w: queue %q: record %d moved after record %d", ErrCorrupt, ssaID, first, last)
			}
			ks, vs, err := s.recs.append(index, first, records)
			if err != nil {
				return err
			}
			for i, k := range ks {
				if err := txn.Set(k, vs[i]); err != nil {
					return err
				}
			}
		}
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return s.recs.sync()
	})
	s.settleRecords(err)
	if err != nil {
		return 0, 0, err
	}
	s.log.Debug("storage: moved exchange records into segment files", "queue", ssaID, "keys", len(keys), "records", len(records))
	return len(keys), len(records), nil
}

// v2Bounds returns the Head and the end (Refined, Last) of a queue of the v2 layout.
func v2Bounds(txn *badger.Txn, prefix, ssaID string) (head, end uint64, err error) {
	if prefix == v2PrefixOutbox {
		st, err := getOutbox(txn, ssaID)
		return st.Head, st.Refined, err
	}
	st, err := getInbox(txn, ssaID)
	return st.Head, st.Last, err
}

// lastIndexed returns the last record the index of a queue holds, 0 for none.
func lastIndexed(txn *badger.Txn, index []byte) (uint64, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: index, Reverse: true})
	defer it.Close()
	it.Seek(append(bytes.Clone(index), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	if !it.Valid() {
		return 0, nil
	}
	last, ok := parseSeq(it.Item().Key(), len(index))
	if !ok {
		return 0, fmt.Errorf("%w: index key %x", ErrCorrupt, it.Item().Key())
	}
	return last, nil
}
