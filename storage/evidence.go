package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// Evidence of violations on the requester's side: the signed batches that carried them,
// with their findings, a bounded number per SSA.

// Evidence is a signed batch that carried violations, kept with the findings. Batch and
// Findings are opaque to storage (the batch as received, findings e.g. as JSON).
type Evidence struct {
	SSAID      string
	First      uint64
	Batch      []byte
	Findings   []byte
	ReceivedAt time.Time
}

// How much evidence an SSA keeps: its first batches, at most MaxEvidence of them and
// MaxEvidenceBytes in all, enough to show the violation to a third party, while a provider
// that goes on violating cannot fill the requester's disk (the inbox still counts every
// violation).
const (
	MaxEvidence      = 16
	MaxEvidenceBytes = 16 << 20
)

// PutEvidence stores a signed batch (up to protocol.MaxBatchSize) that carried violations
// with its findings, durably. A second Evidence with the same SSA, First and ReceivedAt
// replaces the first. When the SSA's evidence would go over MaxEvidence batches or
// MaxEvidenceBytes, it stores nothing and returns ErrEvidenceFull.
func (s *Store) PutEvidence(e Evidence) error {
	if err := checkID("SSA", e.SSAID, false); err != nil {
		return err
	}
	if len(e.Batch) > protocol.MaxBatchSize || len(e.Findings) > protocol.MaxMessageSize {
		return fmt.Errorf("storage: evidence for SSA %q: batch of %d bytes (limit %d) or findings of %d (limit %d)",
			e.SSAID, len(e.Batch), protocol.MaxBatchSize, len(e.Findings), protocol.MaxMessageSize)
	}
	v, err := protocol.Marshal(&evidenceRecord{Batch: e.Batch, Findings: e.Findings})
	if err != nil {
		return fmt.Errorf("storage: encode evidence for SSA %q: %w", e.SSAID, err)
	}
	k := binary.BigEndian.AppendUint64(seqKey(evidencePrefix(e.SSAID), e.First), uint64(unixNano(e.ReceivedAt)))
	r := &evidenceRequest{setRequest{waiter: newWaiter(), key: k, value: v}, evidencePrefix(e.SSAID)}
	if err := s.commit(r); err != nil {
		return fmt.Errorf("storage: put evidence for SSA %q: %w", e.SSAID, err)
	}
	return nil
}

// evidenceRequest sets an evidence key unless the SSA's evidence is full.
type evidenceRequest struct {
	setRequest
	prefix []byte
}

func (r *evidenceRequest) apply(txn *badger.Txn) (refused, failed error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: r.prefix}) // keys and value sizes only
	n, size := 0, int64(len(r.value))
	for it.Rewind(); it.Valid(); it.Next() {
		if !bytes.Equal(it.Item().Key(), r.key) { // a replacement takes its place
			n, size = n+1, size+it.Item().ValueSize()
		}
	}
	it.Close()
	if n >= MaxEvidence || size > MaxEvidenceBytes {
		return fmt.Errorf("%w: %d batches of at most %d kept, %d bytes of at most %d with this one",
			ErrEvidenceFull, n, MaxEvidence, size, MaxEvidenceBytes), nil
	}
	return r.setRequest.apply(txn)
}

// Evidence returns the SSA's evidence, ordered by First, then ReceivedAt.
func (s *Store) Evidence(ssaID string) ([]Evidence, error) {
	if err := checkID("SSA", ssaID, false); err != nil {
		return nil, err
	}
	var out []Evidence
	prefix := evidencePrefix(ssaID)
	err := s.view(func(txn *badger.Txn) error {
		return scan(txn, prefix, func(k, v []byte) error {
			if len(k) != len(prefix)+16 {
				return fmt.Errorf("%w: evidence key %x", ErrCorrupt, k)
			}
			var rec evidenceRecord
			if err := protocol.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%w: evidence %x: %v", ErrCorrupt, k, err)
			}
			out = append(out, Evidence{SSAID: ssaID, First: binary.BigEndian.Uint64(k[len(prefix):]),
				Batch: rec.Batch, Findings: rec.Findings,
				ReceivedAt: fromUnixNano(int64(binary.BigEndian.Uint64(k[len(prefix)+8:])))})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: evidence of SSA %q: %w", ssaID, err)
	}
	return out, nil
}

// setRequest sets one key.
type setRequest struct {
	waiter
	key, value []byte
}

func (r *setRequest) cost() (int, int) { return entrySize(len(r.key), len(r.value)), 1 }

func (r *setRequest) apply(txn *badger.Txn) (refused, failed error) {
	return nil, txn.Set(r.key, r.value)
}

// evidenceRecord is the value of an evidence key.
type evidenceRecord struct {
	Batch    []byte `cbor:"1,keyasint"`
	Findings []byte `cbor:"2,keyasint,omitempty"`
}
