package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// PutOffer stores an offer durably, replacing the offer with the same ID. It refuses an offer
// that does not validate.
func (s *Store) PutOffer(o *protocol.Offer) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("storage: put offer: %w", err)
	}
	if err := checkID("offer", o.ID, false); err != nil {
		return err
	}
	b, err := encodeOffer(o)
	if err != nil {
		return err
	}
	if _, err := decodeOffer(o.ID, b); err != nil {
		return fmt.Errorf("storage: offer %s cannot be stored: %w", o.ID, err)
	}
	err = s.update(func(txn *badger.Txn) error { return txn.Set(offerKey(o.ID), b) })
	if err != nil {
		return fmt.Errorf("storage: put offer %s: %w", o.ID, err)
	}
	return nil
}

// Offers returns every offer, ordered by ID.
func (s *Store) Offers() ([]*protocol.Offer, error) {
	var out []*protocol.Offer
	err := s.view(func(txn *badger.Txn) error {
		return scan(txn, []byte(prefixOffer), func(k, v []byte) error {
			o, err := decodeOffer(string(k[len(prefixOffer):]), v)
			if err != nil {
				return err
			}
			out = append(out, o)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteOffer deletes an offer durably, or returns ErrNotFound.
func (s *Store) DeleteOffer(id string) error {
	err := s.update(func(txn *badger.Txn) error {
		if _, err := get(txn, offerKey(id)); err != nil {
			return err
		}
		return txn.Delete(offerKey(id))
	})
	if err != nil {
		return fmt.Errorf("storage: delete offer %q: %w", id, err)
	}
	return nil
}
