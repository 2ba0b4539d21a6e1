package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Disk that retention gives back. Records live in the LSM tree, compressed (see store.go),
// and a tombstone frees nothing until a compaction happens to merge it with the record it
// hides, which Badger schedules by level sizes, not by what was deleted: on a quiet store,
// never. So retention writes no tombstones: it moves the inbox's Head past the expired
// records, which makes them invisible (readers start after Head), and then reclaimInbox
// drops them with Badger's DropPrefix, which flushes the memtables and rewrites, at each
// level, only the tables that hold the dropped keys. Sequence numbers are big-endian, so the
// records of a block of 256 (seq>>8 alike) share a prefix of all but the key's last byte:
// the whole blocks up to Head go as one prefix each, and the few records of the block that
// Head is in go as keys of their own (a key is a prefix of itself only: every record key of
// an SSA has the same length). The records are off the disk when DeleteRecordsReceivedBefore
// returns, whatever the compactions do.
//
// reclaimInbox starts from the oldest record key still stored, so records that a crash or
// a failed drop left below Head go with the next call.
//
// The provider's outbox gives back the same way: an acknowledgement (or DropOutbox) moves
// the outbox's Head, and reclaimOutbox drops the records up to it. A drop flushes the
// memtables and rewrites tables, too much for every Ack (several a second), so an Ack marks
// its outbox due and the Store's collector drops every outbox due each reclaimInterval, and
// Close once more; DropOutbox drops at once. The first Ack after a start marks its outbox
// due whatever it acknowledges, so records a crash left below Head go then; the collector's
// first round marks every outbox due, for those no Ack will trim again (dropped, expired).

const (
	// reclaimBlockBits is the seq bits a block prefix leaves out: blocks of 256 records.
	reclaimBlockBits = 8
	// reclaimMaxPrefixes is the most prefixes one DropPrefix is given: Badger checks each
	// against the store with an iterator of its own. 1024 blocks are 262,144 records.
	reclaimMaxPrefixes = 1024
)

// reclaimInbox drops the records of ssaID's inbox up to its Head from the tables.
func (s *Store) reclaimInbox(ssaID string) error {
	_, err := s.reclaim(inboxPrefix(ssaID), func(txn *badger.Txn) (uint64, error) {
		st, err := getInbox(txn, ssaID)
		return st.Head, err
	})
	return err
}

// reclaimOutbox drops the records of ssaID's outbox up to its Head (acknowledged or
// dropped: invisible, see trim) from the tables, and returns that Head.
func (s *Store) reclaimOutbox(ssaID string) (uint64, error) {
	return s.reclaim(outboxPrefix(ssaID), func(txn *badger.Txn) (uint64, error) {
		st, err := getOutbox(txn, ssaID)
		return st.Head, err
	})
}

// reclaimOutboxes drops from the tables the records the outboxes that trim marked due have
// below their Head. The Store's collector calls it every reclaimInterval, Close once more.
func (s *Store) reclaimOutboxes() error {
	s.reclaimMu.Lock()
	due := s.reclaimDue
	s.reclaimDue = make(map[string]bool)
	s.reclaimMu.Unlock()
	var errs []error
	for ssaID := range due {
		errs = append(errs, s.reclaimDueOutbox(ssaID))
	}
	return errors.Join(errs...)
}

// markOutboxesDue marks every outbox that has a state due, so that the records below its Head
// that a crash left on the disk go at the next round, also for an SSA that no Ack will
// trim again (dropped, expired). The collector calls it once, at its first round; an outbox
// with nothing below its Head costs that round one seek.
func (s *Store) markOutboxesDue() error {
	var ids []string
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixOutboxState), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ids = append(ids, string(it.Item().Key()[len(prefixOutboxState):]))
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.reclaimMu.Lock()
	for _, id := range ids {
		s.reclaimDue[id] = true
	}
	s.reclaimMu.Unlock()
	return nil
}

// reclaimDueOutbox drops ssaID's outbox records below its Head from the tables, takes it off
// the outboxes due and records how far it went; on failure it leaves it due for the next
// round. DropOutbox calls it for its outbox alone, not the other outboxes due.
func (s *Store) reclaimDueOutbox(ssaID string) error {
	s.reclaimMu.Lock()
	delete(s.reclaimDue, ssaID)
	s.reclaimMu.Unlock()
	head, err := s.reclaimOutbox(ssaID)
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	if err != nil {
		s.reclaimDue[ssaID] = true // the next round tries again
		return fmt.Errorf("storage: outbox of SSA %q: %w", ssaID, err)
	}
	s.reclaimed[ssaID] = max(s.reclaimed[ssaID], head)
	return nil
}

// reclaim drops the records of the queue whose keys start with prefix, from the oldest still
// stored up to the one numbered by head, from the tables, and returns head.
func (s *Store) reclaim(prefix []byte, head func(*badger.Txn) (uint64, error)) (uint64, error) {
	var lo, hi uint64
	found := false
	err := s.view(func(txn *badger.Txn) error {
		var err error
		if hi, err = head(txn); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		seq, ok := parseSeq(it.Item().Key(), len(prefix))
		if !ok {
			return fmt.Errorf("%w: queue %q: key %x", ErrCorrupt, prefix, it.Item().Key())
		}
		lo, found = seq, seq <= hi
		return nil
	})
	if err != nil || !found {
		return hi, err
	}
	// Each round drops up to reclaimMaxPrefixes prefixes, at least one record: the rounds
	// are bounded by the records to drop.
	for {
		prefixes, next, more := reclaimPrefixes(prefix, lo, hi)
		if err := s.dropPrefixes(prefixes); err != nil {
			end := hi
			if more {
				end = next - 1
			}
			return hi, fmt.Errorf("reclaim the disk of records %d to %d: %w", lo, end, err)
		}
		if !more {
			return hi, nil
		}
		lo = next
	}
}

// reclaimPrefixes returns the prefixes of the records from lo to head, at most
// reclaimMaxPrefixes of them, the record after the last one they cover, and whether records
// up to head are left.
func reclaimPrefixes(prefix []byte, lo, head uint64) (out [][]byte, next uint64, more bool) {
	seq := lo
	for len(out) < reclaimMaxPrefixes {
		block := seq >> reclaimBlockBits
		last := block<<reclaimBlockBits | (1<<reclaimBlockBits - 1)
		if last <= head {
			k := seqKey(prefix, seq)
			out = append(out, k[:len(k)-1])
			if last == head {
				return out, 0, false
			}
			seq = last + 1
			continue
		}
		out = append(out, seqKey(prefix, seq))
		if seq == head {
			return out, 0, false
		}
		seq++
	}
	return out, seq, true
}

// dropPrefixes removes every key with one of prefixes from the store's files. DropPrefix
// refuses writes while it runs (ErrBlockedWrites), so it takes gcMu alone, like a value log
// rewrite: writes wait for it instead.
func (s *Store) dropPrefixes(prefixes [][]byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	start := time.Now()
	err := s.db.DropPrefix(prefixes...)
	if d := time.Since(start); d >= slowDrop {
		s.log.Warn("storage: dropping deleted records from the disk was slow; writes waited for it", "duration", d.Round(time.Millisecond), "prefixes", len(prefixes))
	}
	return err
}

// slowDrop is how long a drop (which blocks writes) may take before it is logged.
const slowDrop = 5 * time.Second
