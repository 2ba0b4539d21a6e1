package storage

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// Negotiation is the record of one negotiation (16-byte ID); its signed transcript is stored
// beside it.
type Negotiation struct {
	ID      []byte // negotiation ID
	Role    protocol.Role
	Peer    string         // the other party's peer ID
	State   protocol.State // where the negotiation stands
	SSAID   string         // ID of the SSA currently negotiated or in force (latest version)
	OfferID string         // provider: the offer the request was matched to
	Note    string         // free text for operators (e.g. why it is held)
	// Reasons are the reasons of the last rejection, if any.
	Reasons []protocol.Reason
	Created time.Time
	Updated time.Time
	// Delivered is set when the last message we sent has been acknowledged by the peer.
	Delivered bool
}

// Commit durably and atomically appends msgs (raw envelope bytes, in order) to the
// negotiation's transcript, upserts the negotiation record n and, if agreement is not nil,
// stores that SSA version under its ID. It binds n.SSAID and agreement.ID to the negotiation,
// so that NegotiationBySSA finds it by the ID of every SSA ever negotiated in it. All of it
// is one Badger transaction, fsynced before Commit returns; Commits from concurrent
// goroutines share a transaction and its fsync, each still all or nothing.
//
// Commit refuses, writing nothing: an agreement that is not an approval or an annulment with
// two signatures (the signatures themselves come from protocol's Step, which made or verified
// each of them, and are verified when the agreement is read back); an SSA ID
// bound to another negotiation (ErrSSAInUse); a write over an existing transcript entry or a
// different version stored under the agreement's ID (ErrConflict); a transcript longer than
// protocol.MaxTranscript. An identical agreement is stored once; an annulment replaces the
// approval of the same SSA ID.
//
// Commit does not verify msgs: they come from protocol's Step, which has, and
// protocol.Restore checks them all again when the transcript is read back.
func (s *Store) Commit(n *Negotiation, msgs [][]byte, agreement *protocol.SSA) error {
	r, err := newCommitRequest(n, msgs, agreement)
	if err != nil {
		return err
	}
	if err := s.commit(r); err != nil {
		return fmt.Errorf("storage: commit negotiation %x: %w", r.nid, err)
	}
	return nil
}

// commitRequest is one Commit, checked and encoded as far as possible without the store.
type commitRequest struct {
	waiter
	nid       []byte
	n         Negotiation
	msgs      [][]byte
	agreement *protocol.SSA
	agreed    []byte // agreement's encoding
	size      int    // estimate of the Badger batch bytes it adds
}

func (r *commitRequest) cost() (int, int) { return r.size, len(r.msgs) + 4 }

// newCommitRequest checks and encodes what it can without reading the store, in the caller's
// goroutine, so that the committer does as little as possible. What it accepts decodes when
// read back; an agreement's signatures are not checked here but on every read (Agreement,
// Agreements), where a bad one is ErrCorrupt. They come from protocol's Step, whose
// exhaustive tests verify every agreement it outputs.
func newCommitRequest(n *Negotiation, msgs [][]byte, agreement *protocol.SSA) (*commitRequest, error) {
	if len(n.ID) != nidLen {
		return nil, fmt.Errorf("storage: negotiation ID must be %d bytes, not %d", nidLen, len(n.ID))
	}
	r := &commitRequest{waiter: newWaiter(), nid: bytes.Clone(n.ID), n: *n, msgs: msgs, agreement: agreement}
	r.n.ID = r.nid
	r.n.Reasons = slices.Clone(n.Reasons)
	if err := checkSSAID(n.SSAID, true); err != nil {
		return nil, err
	}
	rec, err := encodeNegotiation(&r.n, 0)
	if err != nil {
		return nil, err
	}
	if _, _, err := decodeNegotiation(r.nid, rec); err != nil {
		return nil, fmt.Errorf("storage: negotiation %x cannot be stored: %w", r.nid, err)
	}
	r.size = entrySize(len(prefixNegotiation)+nidLen, len(rec)+8) + entrySize(len(prefixIndex)+len(n.SSAID), nidLen)
	for i, m := range msgs {
		if len(m) == 0 || len(m) > protocol.MaxMessageSize {
			return nil, fmt.Errorf("storage: commit negotiation %x: message %d is %d bytes", r.nid, i, len(m))
		}
		r.size += entrySize(len(prefixTranscript)+nidLen+5, len(m))
	}
	if agreement != nil {
		if err := checkSSAID(agreement.ID, false); err != nil {
			return nil, err
		}
		if r.agreed, err = agreement.Encode(); err != nil {
			return nil, fmt.Errorf("storage: commit negotiation %x: %w", r.nid, err)
		}
		// Agreement decodes what is stored: so does Commit, before storing it. Of the
		// signatures, only the shape is checked here (see above).
		if a := agreement; a.Status != protocol.StatusApproval && a.Status != protocol.StatusAnnulment || len(a.Signatures) != 2 {
			return nil, fmt.Errorf("storage: commit negotiation %x: refuse agreement %s: %w: a %s with %d signatures",
				r.nid, a.ID, protocol.ErrNotAgreed, a.Status, len(a.Signatures))
		}
		if _, err := readAgreement(agreement.ID, r.agreed); err != nil {
			return nil, fmt.Errorf("storage: commit negotiation %x: refuse %w", r.nid, err)
		}
		r.size += entrySize(len(prefixAgreement)+len(agreement.ID), len(r.agreed)) +
			entrySize(len(prefixIndex)+len(agreement.ID), nidLen)
	}
	return r, nil
}

// commitPlan is what a commit writes once its checks against the store have passed.
type commitPlan struct {
	count        uint32   // transcript entries stored before the commit
	bind         []string // SSA IDs the commit binds to the negotiation: bound to none yet
	putAgreement bool     // the agreement is new, or annuls the approval stored under its ID
	record       []byte   // the negotiation record, with the new transcript length
}

// apply checks a commit against the store as txn sees it, then writes it. It reads before it
// writes, so a refused commit leaves nothing in txn. An error from a write means txn is
// spoilt.
func (r *commitRequest) apply(txn *badger.Txn) (refused, failed error) {
	var p commitPlan
	checks := [...]func(*badger.Txn, *commitPlan) (refused, failed error){
		r.readLength, r.checkTranscript, r.checkBindings, r.checkVersion,
	}
	for _, check := range checks {
		if refused, failed = check(txn, &p); refused != nil || failed != nil {
			return refused, failed
		}
	}
	rec, err := encodeNegotiation(&r.n, p.count+uint32(len(r.msgs)))
	if err != nil {
		return err, nil
	}
	p.record = rec
	return nil, r.write(txn, &p)
}

// readLength reads into p.count how many transcript entries the negotiation has: none if it
// is new.
func (r *commitRequest) readLength(txn *badger.Txn, p *commitPlan) (refused, failed error) {
	item, err := txn.Get(negotiationKey(r.nid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	_, p.count, refused = decodeNegotiation(r.nid, b)
	return refused, nil
}

// checkTranscript refuses msgs if they would take the transcript over protocol.MaxTranscript
// or rewrite an entry.
func (r *commitRequest) checkTranscript(txn *badger.Txn, p *commitPlan) (refused, failed error) {
	if int(p.count)+len(r.msgs) > protocol.MaxTranscript {
		return fmt.Errorf("transcript would hold %d messages, limit %d", int(p.count)+len(r.msgs), protocol.MaxTranscript), nil
	}
	for i := range r.msgs {
		seq := p.count + uint32(i)
		if _, err := txn.Get(transcriptKey(r.nid, seq)); err == nil {
			return fmt.Errorf("%w: transcript entry %d exists", ErrConflict, seq), nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
	}
	return nil, nil
}

// checkBindings refuses the commit if its SSA ID or its agreement's is bound to another
// negotiation, and lists in p.bind those bound to none yet.
func (r *commitRequest) checkBindings(txn *badger.Txn, p *commitPlan) (refused, failed error) {
	ids := []string{r.n.SSAID}
	if r.agreement != nil {
		ids = append(ids, r.agreement.ID)
	}
	for _, id := range ids {
		if id == "" || slices.Contains(p.bind, id) {
			continue
		}
		nid, err := get(txn, indexKey(id))
		switch {
		case errors.Is(err, ErrNotFound):
			p.bind = append(p.bind, id)
		case err != nil:
			return nil, err
		case !bytes.Equal(nid, r.nid):
			return fmt.Errorf("%w: SSA %q is negotiated in %x", ErrSSAInUse, id, nid), nil
		}
	}
	return nil, nil
}

// checkVersion refuses the commit if its agreement conflicts with the version stored under
// its ID, and sets p.putAgreement if the agreement is to be written (see checkAgreement).
func (r *commitRequest) checkVersion(txn *badger.Txn, p *commitPlan) (refused, failed error) {
	if r.agreement == nil {
		return nil, nil
	}
	put, err := checkAgreement(txn, r.agreement, r.agreed)
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrCorrupt) {
		return err, nil
	}
	p.putAgreement = put
	return nil, err
}

// write writes a commit that passed its checks.
func (r *commitRequest) write(txn *badger.Txn, p *commitPlan) error {
	for i, m := range r.msgs {
		if err := txn.Set(transcriptKey(r.nid, p.count+uint32(i)), m); err != nil {
			return err
		}
	}
	if err := txn.Set(negotiationKey(r.nid), p.record); err != nil {
		return err
	}
	for _, id := range p.bind {
		if err := txn.Set(indexKey(id), r.nid); err != nil {
			return err
		}
	}
	if p.putAgreement {
		return txn.Set(agreementKey(r.agreement.ID), r.agreed)
	}
	return nil
}

func checkID(what, id string, emptyOK bool) error {
	if id == "" && !emptyOK {
		return fmt.Errorf("storage: empty %s ID", what)
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("storage: %s ID of %d bytes, limit %d", what, len(id), maxIDLen)
	}
	return nil
}

// checkSSAID checks an SSA ID against protocol's grammar (which bounds it under maxIDLen);
// emptyOK lets a negotiation refused before it had an SSA ID through.
func checkSSAID(id string, emptyOK bool) error {
	if id == "" && emptyOK {
		return nil
	}
	if err := protocol.CheckSSAID(id); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// checkAgreement reports whether agreement a, encoded as b, is to be written: it is new, or
// the annulment of the approval stored under its ID. It is refused if a different version is
// stored under its ID, and skipped if the same bytes are.
func checkAgreement(txn *badger.Txn, a *protocol.SSA, b []byte) (bool, error) {
	old, err := get(txn, agreementKey(a.ID))
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if bytes.Equal(old, b) {
		return false, nil
	}
	prev, err := protocol.DecodeSSA(old)
	if err != nil {
		return false, fmt.Errorf("%w: agreement %s: %w", ErrCorrupt, a.ID, err)
	}
	if prev.Status != protocol.StatusApproval || a.Status != protocol.StatusAnnulment {
		return false, fmt.Errorf("%w: agreement %s is stored as a %s, not replaced by a %s", ErrConflict, a.ID, prev.Status, a.Status)
	}
	return true, nil
}

// Negotiation returns the record of negotiation id, or ErrNotFound.
func (s *Store) Negotiation(id []byte) (*Negotiation, error) {
	var n *Negotiation
	err := s.view(func(txn *badger.Txn) error {
		var err error
		n, _, err = getNegotiation(txn, id)
		return err
	})
	return n, err
}

func getNegotiation(txn *badger.Txn, nid []byte) (*Negotiation, uint32, error) {
	if len(nid) != nidLen {
		return nil, 0, fmt.Errorf("%w: negotiation ID of %d bytes", ErrNotFound, len(nid))
	}
	b, err := get(txn, negotiationKey(nid))
	if err != nil {
		return nil, 0, fmt.Errorf("negotiation %x: %w", nid, err)
	}
	return decodeNegotiation(nid, b)
}

// get returns a copy of k's value, or ErrNotFound.
func get(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: read: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("storage: read: %w", err)
	}
	return v, nil
}

// NegotiationBySSA returns the negotiation in which an SSA with this ID was negotiated (any
// version, requested, proposed, agreed or annulled), or ErrNotFound.
func (s *Store) NegotiationBySSA(ssaID string) (*Negotiation, error) {
	var n *Negotiation
	err := s.view(func(txn *badger.Txn) error {
		nid, err := get(txn, indexKey(ssaID))
		if err != nil {
			return fmt.Errorf("SSA %q: %w", ssaID, err)
		}
		if n, _, err = getNegotiation(txn, nid); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: SSA %q is indexed to missing negotiation %x", ErrCorrupt, ssaID, nid)
		}
		return err
	})
	return n, err
}

// Negotiations returns every negotiation record, oldest first.
func (s *Store) Negotiations() ([]*Negotiation, error) {
	var out []*Negotiation
	err := s.view(func(txn *badger.Txn) error {
		return scan(txn, []byte(prefixNegotiation), func(k, v []byte) error {
			n, _, err := decodeNegotiation(k[len(prefixNegotiation):], v)
			if err != nil {
				return err
			}
			out = append(out, n)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b *Negotiation) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Transcript returns the messages of negotiation id in order, or ErrNotFound.
func (s *Store) Transcript(id []byte) ([][]byte, error) {
	var out [][]byte
	err := s.view(func(txn *badger.Txn) error {
		_, count, err := getNegotiation(txn, id)
		if err != nil {
			return err
		}
		out = make([][]byte, 0, count)
		prefix := transcriptPrefix(id)
		err = scan(txn, prefix, func(k, v []byte) error {
			if want := transcriptKey(id, uint32(len(out))); !bytes.Equal(k, want) {
				return fmt.Errorf("%w: transcript of %x: entry %x where %d was expected", ErrCorrupt, id, k[len(prefix):], len(out))
			}
			out = append(out, bytes.Clone(v))
			return nil
		})
		if err != nil {
			return err
		}
		if len(out) != int(count) {
			return fmt.Errorf("%w: transcript of %x has %d entries, its record says %d", ErrCorrupt, id, len(out), count)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Agreement returns the stored SSA version with this ID, after verifying its signatures
// (protocol.VerifySSA); a record that fails is an error wrapping ErrCorrupt.
func (s *Store) Agreement(ssaID string) (*protocol.SSA, error) {
	var a *protocol.SSA
	err := s.view(func(txn *badger.Txn) error {
		b, err := get(txn, agreementKey(ssaID))
		if err != nil {
			return fmt.Errorf("agreement %q: %w", ssaID, err)
		}
		a, err = decodeAgreement(ssaID, b)
		return err
	})
	return a, err
}

// Agreements returns every stored SSA version, verified, ordered by SSA ID.
func (s *Store) Agreements() ([]*protocol.SSA, error) {
	var out []*protocol.SSA
	err := s.view(func(txn *badger.Txn) error {
		return scan(txn, []byte(prefixAgreement), func(k, v []byte) error {
			a, err := decodeAgreement(string(k[len(prefixAgreement):]), v)
			if err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scan calls fn with every key and value under prefix, in key order. fn must not keep k or v.
func scan(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchSize = 16
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error { return fn(item.Key(), v) })
		if err != nil {
			return err
		}
	}
	return nil
}
