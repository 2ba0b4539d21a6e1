package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

func openTest(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// sameNegotiation reports how two records differ, or nil.
func sameNegotiation(got, want *Negotiation) error {
	switch {
	case !bytes.Equal(got.ID, want.ID):
		return fmt.Errorf("ID %x, want %x", got.ID, want.ID)
	case got.Role != want.Role || got.Peer != want.Peer || got.State != want.State:
		return fmt.Errorf("role/peer/state %s/%s/%s, want %s/%s/%s", got.Role, got.Peer, got.State, want.Role, want.Peer, want.State)
	case got.SSAID != want.SSAID || got.OfferID != want.OfferID || got.Note != want.Note:
		return fmt.Errorf("ssa/offer/note %q/%q/%q, want %q/%q/%q", got.SSAID, got.OfferID, got.Note, want.SSAID, want.OfferID, want.Note)
	case !slices.Equal(got.Reasons, want.Reasons):
		return fmt.Errorf("reasons %v, want %v", got.Reasons, want.Reasons)
	case !got.Created.Equal(want.Created) || !got.Updated.Equal(want.Updated):
		return fmt.Errorf("created/updated %s/%s, want %s/%s", got.Created, got.Updated, want.Created, want.Updated)
	case got.Delivered != want.Delivered:
		return fmt.Errorf("delivered %t, want %t", got.Delivered, want.Delivered)
	}
	return nil
}

func sameSSA(t *testing.T, got, want *protocol.SSA) {
	t.Helper()
	a, err := got.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := want.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("SSA %s differs from the one stored (%s)", got.ID, want.ID)
	}
}

func TestNegotiationRoundTrip(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f := approvedFixture(t)
	tests := []struct {
		name string
		n    Negotiation
	}{
		{"zero", Negotiation{}},
		{"requester", Negotiation{Role: protocol.RoleRequester, Peer: "12D3KooWpeer", State: protocol.StateRequestSent,
			SSAID: "ssa-1", Created: t0, Updated: t0.Add(time.Second)}},
		{"provider held", Negotiation{Role: protocol.RoleProvider, State: protocol.StateRequestReceived, SSAID: "ssa-2",
			OfferID: "offer-a", Note: "held: manual approval", Created: t0.Add(time.Nanosecond), Delivered: true}},
		{"rejected", Negotiation{Role: protocol.RoleProvider, State: protocol.StateRejected, SSAID: "ssa-3",
			Reasons: []protocol.Reason{{Code: protocol.CodeMasking, Component: "masking", Requester: "8", Provider: "24", Text: "too much"},
				{Code: protocol.CodeSchedule}}, Created: time.Date(1970, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{"local time", Negotiation{Created: time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			n.ID = testNID(uint64(100 + i))
			if err := s.Commit(&n, f.msgs, nil); err != nil {
				t.Fatal(err)
			}
			got, err := s.Negotiation(n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameNegotiation(got, &n); err != nil {
				t.Fatal(err)
			}
			tr, err := s.Transcript(n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(tr, f.msgs, bytes.Equal) {
				t.Fatalf("transcript of %d messages differs from the %d committed", len(tr), len(f.msgs))
			}
			if n.SSAID != "" {
				byID, err := s.NegotiationBySSA(n.SSAID)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(byID.ID, n.ID) {
					t.Fatalf("SSA %s indexed to %x, want %x", n.SSAID, byID.ID, n.ID)
				}
			}
		})
	}
}

// TestLifecycle commits a whole negotiation step by step, as the agent does: request,
// approval, two revisions, cancellation; and checks every record after every step.
func TestLifecycle(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	sm := newSim(t, testNID(1))
	var all [][]byte
	var versions []string
	commit := func(msgs [][]byte, a *protocol.SSA) {
		t.Helper()
		all = append(all, msgs...)
		n := sm.record()
		if err := s.Commit(n, msgs, a); err != nil {
			t.Fatal(err)
		}
		got, err := s.Negotiation(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameNegotiation(got, n); err != nil {
			t.Fatal(err)
		}
		tr, err := s.Transcript(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(tr, all, bytes.Equal) {
			t.Fatalf("transcript of %d messages, want the %d committed", len(tr), len(all))
		}
		if _, err := protocol.Restore(identity(t, 1), protocol.RoleRequester, tr); err != nil {
			t.Fatalf("restore from the stored transcript: %v", err)
		}
		if a != nil {
			stored, err := s.Agreement(a.ID)
			if err != nil {
				t.Fatal(err)
			}
			sameSSA(t, stored, a)
		}
		for _, id := range versions {
			byID, err := s.NegotiationBySSA(id)
			if err != nil {
				t.Fatalf("SSA %s: %v", id, err)
			}
			if !bytes.Equal(byID.ID, n.ID) {
				t.Fatalf("SSA %s indexed to %x, want %x", id, byID.ID, n.ID)
			}
		}
	}

	versions = append(versions, "ssa-v1")
	commit(sm.request("ssa-v1"), nil) // indexed before it is approved
	commit(sm.approve())
	for _, id := range []string{"ssa-v2", "ssa-v3"} {
		versions = append(versions, id)
		commit(sm.revise(id))
	}
	msgs, annulled := sm.cancel()
	commit(msgs, annulled)

	as, err := s.Agreements()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range as {
		got = append(got, a.ID+":"+a.Status.String())
	}
	want := []string{"ssa-v1:approval", "ssa-v2:approval", "ssa-v3:annulment"}
	if !slices.Equal(got, want) {
		t.Fatalf("agreements %v, want %v", got, want)
	}
	if len(all) != 4+2+2+2 {
		t.Fatalf("%d messages", len(all))
	}
}

func TestCommitRefusals(t *testing.T) {
	f := approvedFixture(t)
	unsigned := f.agreement.Clone()
	unsigned.Signatures = unsigned.Signatures[:1]
	proposal := f.agreement.Clone()
	proposal.Status = protocol.StatusProposal
	otherSim := newSim(t, testNID(2))
	otherSim.request("ssa-other")
	_, other := otherSim.approve()

	tests := []struct {
		name string
		// setup runs on a fresh store before the refused commit.
		setup     func(t *testing.T, s *Store)
		n         Negotiation
		msgs      [][]byte
		agreement *protocol.SSA
		want      error // nil: any error
	}{
		{name: "short negotiation ID", n: Negotiation{ID: []byte("short")}, msgs: f.msgs},
		{name: "empty message", n: Negotiation{ID: testNID(9)}, msgs: [][]byte{f.msgs[0], nil}},
		{name: "long SSA ID", n: Negotiation{ID: testNID(9), SSAID: string(make([]byte, maxIDLen+1))}},
		{name: "SSA ID out of the grammar", n: Negotiation{ID: testNID(9), SSAID: "../../pwned-by-provider"}, msgs: f.msgs, want: protocol.ErrBadSSAID},
		{name: "agreement signed once", n: Negotiation{ID: testNID(9)}, msgs: f.msgs, agreement: unsigned, want: protocol.ErrNotAgreed},
		{name: "agreement that is a proposal", n: Negotiation{ID: testNID(9)}, msgs: f.msgs, agreement: proposal, want: protocol.ErrNotAgreed},
		{name: "note not UTF-8", n: Negotiation{ID: testNID(9), Note: "held \xff"}, msgs: f.msgs[:1]},
		{name: "reason not UTF-8", n: Negotiation{ID: testNID(13), Reasons: []protocol.Reason{{Text: "\xc3"}}}},
		{name: "overwrite transcript entry",
			setup: func(t *testing.T, s *Store) {
				// A stray entry where the next message would go.
				if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(transcriptKey(testNID(9), 4), []byte("x")) }); err != nil {
					t.Fatal(err)
				}
			},
			n: Negotiation{ID: testNID(9), Note: "second"}, msgs: f.msgs[:1], want: ErrConflict},
		{name: "SSA ID of another negotiation", n: Negotiation{ID: testNID(10), SSAID: "ssa-fixture"}, msgs: f.msgs, want: ErrSSAInUse},
		{name: "agreement of another negotiation", n: Negotiation{ID: testNID(10)}, msgs: f.msgs, agreement: f.agreement, want: ErrSSAInUse},
		{name: "approval over annulment",
			setup: func(t *testing.T, s *Store) {
				msgs, annulled := otherSim.cancel()
				if err := s.Commit(&Negotiation{ID: testNID(11)}, msgs, annulled); err != nil {
					t.Fatal(err)
				}
			},
			n: Negotiation{ID: testNID(11)}, agreement: other, want: ErrConflict},
		{name: "transcript too long",
			setup: func(t *testing.T, s *Store) {
				long := slices.Repeat(f.msgs[:1], protocol.MaxTranscript)
				if err := s.Commit(&Negotiation{ID: testNID(12)}, long, nil); err != nil {
					t.Fatal(err)
				}
			},
			n: Negotiation{ID: testNID(12), Note: "second"}, msgs: f.msgs[:1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), Options{})
			first := &Negotiation{ID: testNID(9), SSAID: "ssa-fixture", Note: "first"}
			if err := s.Commit(first, f.msgs, f.agreement); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, s)
			}
			before := snapshot(t, s)
			err := s.Commit(&tc.n, tc.msgs, tc.agreement)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("commit: %v, want %v", err, tc.want)
			}
			if after := snapshot(t, s); !maps.Equal(before, after) {
				t.Fatalf("a refused commit changed the store")
			}
		})
	}
}

// snapshot returns every key and value of the store.
func snapshot(t *testing.T, s *Store) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, nil, func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCommitIdempotentAgreement(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f := approvedFixture(t)
	n := &Negotiation{ID: testNID(1), SSAID: f.agreement.ID}
	if err := s.Commit(n, f.msgs, f.agreement); err != nil {
		t.Fatal(err)
	}
	n.Delivered = true
	if err := s.Commit(n, nil, f.agreement); err != nil {
		t.Fatalf("committing the same agreement again: %v", err)
	}
	got, err := s.Negotiation(n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Delivered {
		t.Fatal("record not updated")
	}
}

// setRaw sets key to value (nil: deletes it) behind the store's back, and puts the key back
// as it was when the test ends.
func setRaw(t *testing.T, s *Store, key, value []byte) {
	t.Helper()
	var old []byte
	err := s.db.Update(func(txn *badger.Txn) error {
		v, err := get(txn, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		old = v
		if value == nil {
			return txn.Delete(key)
		}
		return txn.Set(key, value)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := s.db.Update(func(txn *badger.Txn) error {
			if old == nil {
				return txn.Delete(key)
			}
			return txn.Set(key, old)
		})
		if err != nil {
			t.Error(err)
		}
	})
}

// TestAgreementVerifiedOnRead alters stored agreements behind the store's back.
func TestAgreementVerifiedOnRead(t *testing.T) {
	f := approvedFixture(t)
	good, err := f.agreement.Encode()
	if err != nil {
		t.Fatal(err)
	}
	reencode := func(change func(a *protocol.SSA)) []byte {
		a := f.agreement.Clone()
		change(a)
		b, err := a.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		raw  []byte
	}{
		{"terms changed", reencode(func(a *protocol.SSA) { a.Policy.Handling.TLP = protocol.TLPClear })},
		{"schedule changed", reencode(func(a *protocol.SSA) { a.Schedule.End += 3600 })},
		{"signature flipped", reencode(func(a *protocol.SSA) { a.Signatures[1][len(a.Signatures[1])-1] ^= 1 })},
		{"one signature", reencode(func(a *protocol.SSA) { a.Signatures = a.Signatures[:1] })},
		{"same signer twice", reencode(func(a *protocol.SSA) { a.Signatures[1] = a.Signatures[0] })},
		{"another agreement's bytes", func() []byte {
			sm := newSim(t, testNID(3))
			sm.request("ssa-elsewhere")
			_, a := sm.approve()
			b, err := a.Encode()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}()},
		{"truncated", good[:len(good)-1]},
		{"bit flip in encoding", func() []byte { b := bytes.Clone(good); b[len(b)/2] ^= 0x40; return b }()},
		{"garbage", []byte("not cbor")},
	}
	s := openTest(t, t.TempDir(), Options{})
	if err := s.Commit(&Negotiation{ID: testNID(1)}, f.msgs, f.agreement); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setRaw(t, s, agreementKey(f.agreement.ID), tc.raw)
			if _, err := s.Agreement(f.agreement.ID); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Agreement: %v, want ErrCorrupt", err)
			}
			if _, err := s.Agreements(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Agreements: %v, want ErrCorrupt", err)
			}
		})
		// Put back as it was, the agreement reads well again.
		if _, err := s.Agreement(f.agreement.ID); err != nil {
			t.Fatalf("after %s: %v", tc.name, err)
		}
	}
}

func TestCorruptRecords(t *testing.T) {
	f := approvedFixture(t)
	nid := testNID(1)
	tests := []struct {
		name  string
		key   []byte
		value []byte // nil: delete the key
		read  func(s *Store) error
	}{
		{"negotiation record", negotiationKey(nid), []byte{0xa1, 0x63, 'f', 'o', 'o', 1}, func(s *Store) error { _, err := s.Negotiation(nid); return err }},
		{"negotiation record listed", negotiationKey(nid), []byte{0xff}, func(s *Store) error { _, err := s.Negotiations(); return err }},
		{"unknown field", negotiationKey(nid), []byte{0xa1, 0x18, 99, 1}, func(s *Store) error { _, err := s.Negotiation(nid); return err }},
		{"SSA ID out of the grammar", negotiationKey(nid), func() []byte {
			b, _ := encodeNegotiation(&Negotiation{ID: nid, SSAID: "../../pwned-by-provider"}, uint32(len(f.msgs)))
			return b
		}(), func(s *Store) error { _, err := s.Negotiation(nid); return err }},
		{"transcript entry missing", transcriptKey(nid, 1), nil, func(s *Store) error { _, err := s.Transcript(nid); return err }},
		{"transcript entry extra", transcriptKey(nid, 4), []byte("x"), func(s *Store) error { _, err := s.Transcript(nid); return err }},
		{"index to nowhere", indexKey("ssa-ghost"), testNID(77), func(s *Store) error { _, err := s.NegotiationBySSA("ssa-ghost"); return err }},
		{"offer", offerKey("o1"), []byte{0xa1, 0x01, 0x01}, func(s *Store) error { _, err := s.Offers(); return err }},
		{"offer under another ID", offerKey("o1"), func() []byte { b, _ := encodeOffer(exampleOffer(t, "o2")); return b }(), func(s *Store) error { _, err := s.Offers(); return err }},
	}
	s := openTest(t, t.TempDir(), Options{})
	if err := s.Commit(&Negotiation{ID: nid}, f.msgs, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setRaw(t, s, tc.key, tc.value)
			if err := tc.read(s); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
		})
		// Put back as it was, the record reads well again.
		if err := tc.read(s); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("after %s: %v", tc.name, err)
		}
	}
}

func TestNotFound(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f := approvedFixture(t)
	if err := s.Commit(&Negotiation{ID: testNID(1), SSAID: "ssa-fixture"}, f.msgs, f.agreement); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"negotiation", func() error { _, err := s.Negotiation(testNID(2)); return err }},
		{"negotiation short ID", func() error { _, err := s.Negotiation([]byte{1}); return err }},
		{"negotiation by SSA", func() error { _, err := s.NegotiationBySSA("ssa-none"); return err }},
		{"transcript", func() error { _, err := s.Transcript(testNID(2)); return err }},
		{"agreement", func() error { _, err := s.Agreement("ssa-none"); return err }},
		{"delete offer", func() error { return s.DeleteOffer("none") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%v, want ErrNotFound", err)
			}
		})
	}
}

func TestNegotiationsOrderedByCreated(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	created := []time.Duration{5, 1, 4, 2, 3, 0}
	for i, d := range created {
		n := &Negotiation{ID: testNID(uint64(len(created) - i)), Created: t0.Add(d * time.Minute)}
		if err := s.Commit(n, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	ns, err := s.Negotiations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != len(created) {
		t.Fatalf("%d negotiations, want %d", len(ns), len(created))
	}
	for i := 1; i < len(ns); i++ {
		if ns[i].Created.Before(ns[i-1].Created) {
			t.Fatalf("negotiation %d created %s before negotiation %d (%s)", i, ns[i].Created, i-1, ns[i-1].Created)
		}
	}
}

func exampleOffer(t testing.TB, id string) *protocol.Offer {
	t.Helper()
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, t0)
	if err != nil {
		t.Fatal(err)
	}
	o.ID = id
	return o
}

func TestOffers(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ids := func() []string {
		t.Helper()
		list, err := s.Offers()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range list {
			out = append(out, o.ID+":"+o.Approval)
		}
		return out
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"empty", func() error { return nil }, nil},
		{"put b", func() error { return s.PutOffer(withApproval(exampleOffer(t, "b"), "auto")) }, []string{"b:auto"}},
		{"put a", func() error { return s.PutOffer(withApproval(exampleOffer(t, "a"), "manual")) }, []string{"a:manual", "b:auto"}},
		{"put c", func() error { return s.PutOffer(exampleOffer(t, "c")) }, []string{"a:manual", "b:auto", "c:auto"}},
		{"replace b", func() error { return s.PutOffer(withApproval(exampleOffer(t, "b"), "manual")) }, []string{"a:manual", "b:manual", "c:auto"}},
		{"delete a", func() error { return s.DeleteOffer("a") }, []string{"b:manual", "c:auto"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := ids(); !slices.Equal(got, st.want) {
			t.Fatalf("%s: offers %v, want %v", st.name, got, st.want)
		}
	}
	want := exampleOffer(t, "c")
	list, err := s.Offers()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := encodeOffer(list[1])
	b, _ := encodeOffer(want)
	if !bytes.Equal(a, b) {
		t.Fatal("offer c does not round-trip")
	}
	if err := s.DeleteOffer("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	bad := exampleOffer(t, "bad")
	bad.Terms.Information = nil
	if err := s.PutOffer(bad); !errors.Is(err, protocol.ErrInvalidSSA) {
		t.Fatalf("invalid offer: %v", err)
	}
	bad = exampleOffer(t, "bad")
	bad.Terms.Participants.Provider.Name = "\xff"
	if err := s.PutOffer(bad); err == nil {
		t.Fatal("an offer with a name that is not UTF-8 was stored")
	}
	if got := ids(); !slices.Equal(got, []string{"b:manual", "c:auto"}) {
		t.Fatalf("offers %v after refusals", got)
	}
}

func withApproval(o *protocol.Offer, a string) *protocol.Offer {
	o.Approval = a
	return o
}

// fill writes one of every record, with marker in places an operator would write it.
func fill(t *testing.T, s *Store, marker string) {
	t.Helper()
	f := approvedFixture(t)
	n := &Negotiation{ID: testNID(1), Role: protocol.RoleRequester, SSAID: f.agreement.ID, State: protocol.StateApproved,
		Note: marker, Created: t0}
	if err := s.Commit(n, f.msgs, f.agreement); err != nil {
		t.Fatal(err)
	}
	o := exampleOffer(t, "offer-"+marker)
	if err := s.PutOffer(o); err != nil {
		t.Fatal(err)
	}
}

// check verifies that what fill wrote is there.
func check(t *testing.T, s *Store, marker string) {
	t.Helper()
	f := approvedFixture(t)
	n, err := s.Negotiation(testNID(1))
	if err != nil {
		t.Fatal(err)
	}
	if n.Note != marker {
		t.Fatalf("note %q", n.Note)
	}
	tr, err := s.Transcript(testNID(1))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(tr, f.msgs, bytes.Equal) {
		t.Fatal("transcript differs")
	}
	a, err := s.Agreement(f.agreement.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameSSA(t, a, f.agreement)
	if _, err := s.NegotiationBySSA(f.agreement.ID); err != nil {
		t.Fatal(err)
	}
	list, err := s.Offers()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "offer-"+marker {
		t.Fatalf("offers %v", list)
	}
}

// containsInFiles reports whether any file under dir contains marker.
func containsInFiles(t *testing.T, dir, marker string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = found || bytes.Contains(b, []byte(marker))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestEncryptionAtRest(t *testing.T) {
	key := func(n int) []byte { return bytes.Repeat([]byte{0x5a}, n) }
	tests := []struct {
		name string
		key  []byte
	}{
		{"plain", nil},
		{"AES-128", key(16)},
		{"AES-192", key(24)},
		{"AES-256", key(32)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const marker = "PLAINTEXT-MARKER-q7Zk"
			s, err := Open(dir, Options{EncryptionKey: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			fill(t, s, marker)
			// Both while open (write-ahead log) and after Close (tables).
			if got := containsInFiles(t, dir, marker); got == (tc.key != nil) {
				t.Fatalf("marker found in the open store's files: %t", got)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := containsInFiles(t, dir, marker); got == (tc.key != nil) {
				t.Fatalf("marker found in the closed store's files: %t", got)
			}
			if tc.key != nil {
				if _, err := Open(dir, Options{}); err == nil {
					t.Fatal("an encrypted store opened without its key")
				}
				wrong := bytes.Clone(tc.key)
				wrong[0] ^= 1
				if _, err := Open(dir, Options{EncryptionKey: wrong}); err == nil {
					t.Fatal("an encrypted store opened with the wrong key")
				}
			}
			s = openTest(t, dir, Options{EncryptionKey: tc.key})
			check(t, s, marker)
		})
	}
	t.Run("bad key length", func(t *testing.T) {
		if _, err := Open(t.TempDir(), Options{EncryptionKey: key(15)}); err == nil {
			t.Fatal("a 15-byte key was accepted")
		}
	})
}

func TestReopenAndClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "store")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store directory: %v %v", fi.Mode(), err)
	}
	fill(t, s, "reopen")
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	calls := map[string]func() error{
		"Commit":      func() error { return s.Commit(&Negotiation{ID: testNID(5)}, nil, nil) },
		"Negotiation": func() error { _, err := s.Negotiation(testNID(1)); return err },
		"Transcript":  func() error { _, err := s.Transcript(testNID(1)); return err },
		"Agreements":  func() error { _, err := s.Agreements(); return err },
		"Offers":      func() error { _, err := s.Offers(); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	for range 2 {
		s = openTest(t, dir, Options{})
		check(t, s, "reopen")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReopenAfterCrashCreatingMemtable: a crash after Badger created a memtable log and
// before it sized it leaves an empty *.mem file, which Badger refuses to open; the store
// opens anyway, with everything it held (seen in TestExchangeCrash's kill -9 rounds).
func TestReopenAfterCrashCreatingMemtable(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	fill(t, s, "crash")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	check(t, s, "crash")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keySchema, []byte{99}) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrStoreNewer) {
		t.Fatalf("newer schema: %v", err)
	}
}

// TestConcurrentCommits commits from many goroutines at once, several commits per
// negotiation, and checks that every one is there.
func TestConcurrentCommits(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f := approvedFixture(t)
	const goroutines, perGoroutine = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				n := &Negotiation{ID: testNID(uint64(g*1000 + i)), SSAID: fmt.Sprintf("ssa-%d-%d", g, i)}
				for _, m := range f.msgs {
					if err := s.Commit(n, [][]byte{m}, nil); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ns, err := s.Negotiations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != goroutines*perGoroutine {
		t.Fatalf("%d negotiations, want %d", len(ns), goroutines*perGoroutine)
	}
	commits := goroutines * perGoroutine * len(f.msgs)
	if g := s.groups.Load(); g >= int64(commits) {
		t.Errorf("%d commits in %d transactions: none shared an fsync", commits, g)
	} else {
		t.Logf("%d commits in %d transactions", commits, g)
	}
	for _, n := range ns {
		tr, err := s.Transcript(n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(tr, f.msgs, bytes.Equal) {
			t.Fatalf("transcript of %x differs", n.ID)
		}
	}
}

// spoiler is a request whose write fails, as one too large for a transaction does: it spoils
// the transaction of its group.
type spoiler struct{ waiter }

func (*spoiler) cost() (int, int) { return 0, 1 }

func (*spoiler) apply(txn *badger.Txn) (refused, failed error) {
	if err := txn.Set([]byte("x/spoilt"), []byte{1}); err != nil {
		return nil, err
	}
	return nil, badger.ErrTxnTooBig
}

// TestGroupCommit writes one group of commits as the committer would: each request is
// answered on its own, a refused one leaves nothing, and a group whose transaction fails is
// retried request by request so that one request cannot fail the others.
func TestGroupCommit(t *testing.T) {
	f := approvedFixture(t)
	req := func(n Negotiation, msgs [][]byte, a *protocol.SSA) *commitRequest {
		t.Helper()
		r, err := newCommitRequest(&n, msgs, a)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name  string
		group []request
		want  []error // per request; nil: written
		// transcript lengths of testNID(1..3) afterwards
		lengths []int
	}{
		{"all written",
			[]request{
				req(Negotiation{ID: testNID(1), SSAID: "ssa-fixture"}, f.msgs[:1], nil),
				req(Negotiation{ID: testNID(2), SSAID: "ssa-2"}, f.msgs, nil),
				req(Negotiation{ID: testNID(1), SSAID: "ssa-fixture"}, f.msgs[1:], f.agreement), // appends to the first
			},
			[]error{nil, nil, nil}, []int{4, 4, -1}},
		{"one refused",
			[]request{
				req(Negotiation{ID: testNID(1), SSAID: "ssa-fixture"}, f.msgs, nil),
				req(Negotiation{ID: testNID(2), SSAID: "ssa-fixture"}, f.msgs, nil), // taken by the first
				req(Negotiation{ID: testNID(3), SSAID: "ssa-3"}, f.msgs[:2], nil),
			},
			[]error{nil, ErrSSAInUse, nil}, []int{4, -1, 2}},
		{"transaction fails",
			[]request{
				req(Negotiation{ID: testNID(1)}, f.msgs, nil),
				&spoiler{newWaiter()},
				req(Negotiation{ID: testNID(3)}, f.msgs[:1], nil),
			},
			[]error{nil, badger.ErrTxnTooBig, nil}, []int{4, -1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), Options{})
			s.writeGroup(tc.group)
			for i, r := range tc.group {
				err := <-r.reply()
				if (tc.want[i] == nil) != (err == nil) || (err != nil && !errors.Is(err, tc.want[i])) {
					t.Errorf("request %d: %v, want %v", i, err, tc.want[i])
				}
			}
			err := s.view(func(txn *badger.Txn) error { _, err := get(txn, []byte("x/spoilt")); return err })
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("the failed request's write: %v, want ErrNotFound", err)
			}
			for i, want := range tc.lengths {
				tr, err := s.Transcript(testNID(uint64(i + 1)))
				if want < 0 {
					if !errors.Is(err, ErrNotFound) {
						t.Errorf("negotiation %d: %v, want ErrNotFound", i+1, err)
					}
					continue
				}
				if err != nil || len(tr) != want {
					t.Errorf("negotiation %d: %d messages (%v), want %d", i+1, len(tr), err, want)
				}
			}
		})
	}
}
