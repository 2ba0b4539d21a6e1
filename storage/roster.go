package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// prefixRoster keys the community rosters the agent accepted, one per version.
const prefixRoster = "c/"

// MaxRosterChain is the most rosters RostersAfter returns at once.
const MaxRosterChain = 64

func rosterKey(version uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixRoster), version)
}

// PutRoster stores a community roster the agent accepted (the caller has verified it as the
// successor of the latest, or as the trust anchor). A version is written once: storing it
// again with the same roster (whatever its signatures) changes nothing, with another roster is
// ErrConflict.
func (s *Store) PutRoster(r *protocol.SignedRoster) error {
	b, err := r.Encode()
	if err != nil {
		return err
	}
	v := r.Roster().Version
	err = s.update(func(txn *badger.Txn) error {
		old, err := get(txn, rosterKey(v))
		switch {
		case err == nil:
			prev, derr := protocol.DecodeSignedRoster(old)
			if derr != nil {
				return fmt.Errorf("%w: roster version %d: %v", ErrCorrupt, v, derr)
			}
			if !bytes.Equal(prev.Payload(), r.Payload()) {
				return fmt.Errorf("%w: another roster of version %d is stored", ErrConflict, v)
			}
			return nil
		case !errors.Is(err, ErrNotFound):
			return err
		}
		return txn.Set(rosterKey(v), b)
	})
	if err != nil {
		return fmt.Errorf("storage: put roster version %d: %w", v, err)
	}
	return nil
}

// LatestRoster returns the roster of the highest version stored, or ErrNotFound.
func (s *Store) LatestRoster() (*protocol.SignedRoster, error) {
	var out *protocol.SignedRoster
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRoster), Reverse: true})
		defer it.Close()
		it.Seek(rosterKey(^uint64(0)))
		if !it.Valid() {
			return ErrNotFound
		}
		var err error
		out, err = decodeRoster(it.Item())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: latest roster: %w", err)
	}
	return out, nil
}

// RostersAfter returns the stored rosters of versions after, in version order, at most
// MaxRosterChain of them: what a peer holding version after needs to catch up.
func (s *Store) RostersAfter(after uint64) ([]*protocol.SignedRoster, error) {
	if after == ^uint64(0) {
		return nil, nil // none after it; after+1 would wrap to the first
	}
	var out []*protocol.SignedRoster
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixRoster)})
		defer it.Close()
		for it.Seek(rosterKey(after + 1)); it.Valid() && len(out) < MaxRosterChain; it.Next() {
			r, err := decodeRoster(it.Item())
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: rosters after version %d: %w", after, err)
	}
	return out, nil
}

// decodeRoster reads a stored roster and checks that it is the version its key says.
func decodeRoster(item *badger.Item) (*protocol.SignedRoster, error) {
	k := item.Key()
	if len(k) != len(prefixRoster)+8 {
		return nil, fmt.Errorf("%w: roster key %x", ErrCorrupt, k)
	}
	v := binary.BigEndian.Uint64(k[len(prefixRoster):])
	var r *protocol.SignedRoster
	err := item.Value(func(b []byte) error {
		var err error
		r, err = protocol.DecodeSignedRoster(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: roster version %d: %v", ErrCorrupt, v, err)
	}
	if r.Roster().Version != v {
		return nil, fmt.Errorf("%w: roster version %d stored as version %d", ErrCorrupt, r.Roster().Version, v)
	}
	return r, nil
}
