package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// The provider's side of the Exchange phase, after Enqueue (enqueue.go): the outbox's
// records read for delivery, marked sent, acknowledged or dropped, and its counters.

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

// Pending returns up to max records of the SSA's outbox with Seq > after, and at most
// maxBytes of Data in total, but always at least one record if any is pending, even over
// maxBytes. Records acknowledged or dropped are not pending, whatever after is. Each Data is
// capped at its own length and shared with the store's cache: it must not be changed.
func (s *Store) Pending(ssaID string, after uint64, max, maxBytes int) ([]QueuedRecord, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, nil
	}
	var out []QueuedRecord
	err := s.viewRecords(func(txn *badger.Txn) error {
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
		err = s.scanRecords(txn, outboxPrefix(ssaID), start, n, maxBytes, func(seq uint64, data []byte) error {
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
// no-op (and costs no write, unless a crash cut the last one short). A seq beyond the last
// record enqueued is refused with ErrNotEnqueued.
//
// The acknowledged records leave the outbox's index in the transaction that moves its Head
// past them, and their disk is given back right after it (segment.go).
func (s *Store) Ack(ssaID string, seq uint64) error {
	if err := s.trim(ssaID, seq, false); err != nil {
		return fmt.Errorf("storage: ack %d for SSA %q: %w", seq, ssaID, err)
	}
	return nil
}

// DropOutbox deletes an SSA's queued records (cancelled or expired SSA), keeping its
// counters, and gives their disk back before it returns. Records enqueued later are queued
// as usual.
func (s *Store) DropOutbox(ssaID string) error {
	if err := s.trim(ssaID, 0, true); err != nil {
		return fmt.Errorf("storage: drop outbox of SSA %q: %w", ssaID, err)
	}
	return nil
}

// trim raises Acked to ack, or with drop marks every record enqueued so far for deletion,
// and moves Head to what is marked, taking the blocks up to Head out of the index: dropChunk
// of them per transaction, in as many as it takes.
func (s *Store) trim(ssaID string, ack uint64, drop bool) error {
	if err := checkID("SSA", ssaID, false); err != nil {
		return err
	}
	// The blocks up to Head may still be in the index if the process died in the middle of
	// a trim (between its transactions): the call is a no-op only if they are not, so that
	// the same Ack or DropOutbox called again finishes what the crash cut short
	// (TestTrimAfterCrash).
	var st outboxRecord
	dead := false
	err := s.view(func(txn *badger.Txn) error {
		var err error
		if st, err = getOutbox(txn, ssaID); err != nil {
			return err
		}
		dead, err = s.deadIndexed(txn, outboxPrefix(ssaID), st.Head)
		return err
	})
	if err != nil {
		return err
	}
	if ack > st.Refined {
		return fmt.Errorf("%w: %d records enqueued", ErrNotEnqueued, st.Refined)
	}
	if ack <= st.Acked && (!drop || st.Drop >= st.Refined) && st.Head >= max(st.Acked, st.Drop) && !dead {
		return nil
	}
	for {
		r := &trimRequest{waiter: newWaiter(), s: s, ssaID: ssaID, ack: ack, drop: drop}
		if err := s.commit(r); err != nil {
			return err
		}
		if !r.dropped.more {
			return nil
		}
	}
}

type trimRequest struct {
	waiter
	s     *Store
	ssaID string
	ack   uint64
	drop  bool
	// The outcome: what it took out of the index.
	dropped indexDrop
}

func (r *trimRequest) cost() (int, int) {
	return entrySize(len(prefixOutboxState)+len(r.ssaID), 64) + dropChunk*entrySize(len(outboxPrefix(r.ssaID))+8, 0), 1 + dropChunk
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
	// The records up to Head are invisible, and leave the index.
	st.Head = max(st.Head, st.Acked, st.Drop)
	r.s.mergeSent(r.ssaID, &st)
	if err := putOutbox(txn, r.ssaID, &st); err != nil {
		return nil, err
	}
	r.dropped, err = r.s.dropIndex(txn, outboxPrefix(r.ssaID), st.Head, dropChunk)
	return nil, err
}

func (r *trimRequest) release() error {
	return r.s.recs.release(outboxPrefix(r.ssaID), r.dropped, r.drop)
}

// OutboxState returns an SSA's outbox counters: the zero state for an SSA never enqueued to.
func (s *Store) OutboxState(ssaID string) (OutboxState, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return OutboxState{}, err
	}
	st, err := s.readOutbox(ssaID)
	if err != nil {
		return OutboxState{}, fmt.Errorf("storage: outbox of SSA %q: %w", ssaID, err)
	}
	s.mergeSent(ssaID, &st)
	return OutboxState{Ingested: st.Ingested, Refined: st.Refined, Dropped: st.Dropped, Acked: st.Acked, Sent: st.Sent}, nil
}

// outboxRecord is an SSA's outbox state as stored under s/<ssaID>. Integer keys are never
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

// readOutbox reads an SSA's outbox state in a transaction of its own.
func (s *Store) readOutbox(ssaID string) (outboxRecord, error) {
	var st outboxRecord
	err := s.view(func(txn *badger.Txn) error {
		var err error
		st, err = getOutbox(txn, ssaID)
		return err
	})
	return st, err
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
