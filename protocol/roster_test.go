package protocol

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/veraison/go-cose"
)

// rosterIDs are fixed identities for roster tests: admins and members by seed byte.
func rosterIDs(t testing.TB, seeds ...byte) []*Identity {
	t.Helper()
	out := make([]*Identity, len(seeds))
	for i, s := range seeds {
		out[i] = testIdentity(t, s)
	}
	return out
}

func peersOf(ids []*Identity) []peer.ID {
	out := make([]peer.ID, len(ids))
	for i, id := range ids {
		out[i] = id.PeerID()
	}
	return out
}

// testRoster is version v of community "cert-eu", expiring a day after t0, with the given
// admins (threshold k) and members (each a member; admins also admin).
func testRoster(t testing.TB, v uint64, k uint64, admins []*Identity, members ...*Identity) *Roster {
	t.Helper()
	r := &Roster{Community: "cert-eu", Version: v, Expires: FromTime(t0.Add(24 * time.Hour)), Threshold: k, Admins: peersOf(admins)}
	for _, m := range members {
		r.Members = append(r.Members, Member{Peer: m.PeerID(), Organisation: "org-" + m.PeerID().String()[:8], Roles: []MemberRole{RoleMember}})
	}
	r.Sort()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

// signed makes r a signed roster, signed by each of by, and reads it back from its bytes.
func signed(t testing.TB, r *Roster, by ...*Identity) *SignedRoster {
	t.Helper()
	s, err := NewSignedRoster(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range by {
		if err := s.Sign(id); err != nil {
			t.Fatal(err)
		}
	}
	return roundTrip(t, s)
}

func roundTrip(t testing.TB, s *SignedRoster) *SignedRoster {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSignedRoster(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// withSigs returns s with its signatures replaced by raw ones, as an attacker would write them.
func withSigs(t testing.TB, s *SignedRoster, raws ...[]byte) *SignedRoster {
	t.Helper()
	w := signedRosterWire{Roster: s.payload, Signatures: raws}
	slicesSortBytes(w.Signatures)
	b, err := Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSignedRoster(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func slicesSortBytes(b [][]byte) {
	for i := 1; i < len(b); i++ {
		for j := i; j > 0 && bytes.Compare(b[j-1], b[j]) > 0; j-- {
			b[j-1], b[j] = b[j], b[j-1]
		}
	}
}

func sigOf(s *SignedRoster, id *Identity) []byte {
	for _, sg := range s.sigs {
		if sg.signer == id.PeerID() {
			return sg.raw
		}
	}
	return nil
}

// TestVerifyRoster walks every rule of VerifyRoster: the threshold, non-admin and repeated
// signatures, rollback and gaps, another community, expiry (a freeze), mix-and-match of
// signatures from two proposals and a payload changed after signing.
func TestVerifyRoster(t *testing.T) {
	ids := rosterIDs(t, 11, 12, 13, 14, 15, 16)
	a, b, c, outsider, m1, m2 := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
	admins := []*Identity{a, b, c}
	v1 := testRoster(t, 1, 2, admins, a, b, c, m1)
	v2 := testRoster(t, 2, 2, admins, a, b, c, m1, m2)
	v2other := testRoster(t, 2, 2, admins, a, b, c) // another proposal for version 2: m1 removed
	v3 := testRoster(t, 3, 2, admins, a, b, c, m1, m2)
	otherCommunity := testRoster(t, 2, 2, admins, a, b, c, m1, m2)
	otherCommunity.Community = "other"
	expired := testRoster(t, 2, 2, admins, a, b, c, m1, m2)
	expired.Expires = FromTime(t0.Add(-time.Second))
	now := t0

	pA, pB := signed(t, v2, a), signed(t, v2other, b)
	dup := withSigs(t, signed(t, v2, a), sigOf(signed(t, v2, a), a), sigOf(signed(t, v2, a), a))
	tampered := signed(t, v2, a, b)
	tampered.payload = bytes.Clone(tampered.payload)
	tampered.payload[len(tampered.payload)-1] ^= 1

	for _, tc := range []struct {
		name string
		cur  *Roster
		next *SignedRoster
		want error
	}{
		{"anchor signed 2 of 3 of its own admins", nil, signed(t, v1, a, b), nil},
		{"anchor signed by all admins", nil, signed(t, v1, a, b, c), nil},
		{"anchor threshold not met", nil, signed(t, v1, a), ErrRosterThreshold},
		{"anchor unsigned", nil, signed(t, v1), ErrRosterThreshold},
		{"successor 2 of 3", v1, signed(t, v2, b, c), nil},
		{"successor threshold not met", v1, signed(t, v2, c), ErrRosterThreshold},
		{"non-admin signature ignored", v1, signed(t, v2, a, outsider), ErrRosterThreshold},
		{"member that is not an admin ignored", v1, signed(t, v2, a, m1), ErrRosterThreshold},
		{"non-admin beside enough admins", v1, signed(t, v2, a, b, outsider), nil},
		{"one admin's signature twice counts once", v1, dup, ErrRosterThreshold},
		{"rollback to an older version", v2, signed(t, v1, a, b, c), ErrRosterStale},
		{"replay of the version held", v2, signed(t, v2, a, b, c), ErrRosterStale},
		{"gap of a version", v1, signed(t, v3, a, b, c), ErrRosterGap},
		{"another community", v1, signed(t, otherCommunity, a, b, c), ErrRosterCommunity},
		{"freeze: an expired roster", v1, signed(t, expired, a, b, c), ErrRosterExpired},
		{"expired anchor", nil, signed(t, expired, a, b, c), ErrRosterExpired},
		{"mix-and-match of two proposals' signatures", v1, withSigs(t, pB, sigOf(pA, a), sigOf(pB, b)), ErrBadSignature},
		{"payload changed after signing", v1, tampered, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyRoster(tc.cur, tc.next, now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRosterAdminRotation rotates every admin over three versions: each version is accepted
// only when signed by the admins of the one it replaces, never by those it brings in nor by
// those removed before it.
func TestRosterAdminRotation(t *testing.T) {
	ids := rosterIDs(t, 21, 22, 23, 24, 25, 26, 27)
	a, b, c, d, e, f, m := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]
	v1 := testRoster(t, 1, 2, []*Identity{a, b, c}, m)
	v2 := testRoster(t, 2, 2, []*Identity{b, c, d}, m) // a out, d in
	v3 := testRoster(t, 3, 2, []*Identity{d, e, f}, m) // b, c out; e, f in
	v4 := testRoster(t, 4, 2, []*Identity{d, e, f}, m)
	steps := []struct {
		name string
		cur  *Roster
		next *SignedRoster
		want error
	}{
		{"v1 anchor by a, b", nil, signed(t, v1, a, b), nil},
		{"v2 by the incoming admins d and its own b: only b counts", v1, signed(t, v2, b, d), ErrRosterThreshold},
		{"v2 by a, c of v1", v1, signed(t, v2, a, c), nil},
		{"v3 by a (removed in v2) and d", v2, signed(t, v3, a, d), ErrRosterThreshold},
		{"v3 by e, f (its own new admins)", v2, signed(t, v3, e, f), ErrRosterThreshold},
		{"v3 by c, d of v2", v2, signed(t, v3, c, d), nil},
		{"v4 by b, c (admins two versions ago)", v3, signed(t, v4, b, c), ErrRosterThreshold},
		{"v4 by e, f of v3", v3, signed(t, v4, e, f), nil},
	}
	for _, st := range steps {
		if err := VerifyRoster(st.cur, st.next, t0); !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", st.name, err, st.want)
		}
	}
}

// TestRosterCompromisedKeys: with k = 3 of 5 admins, an attacker holding 2 admin keys (and
// any number of other keys) cannot publish a roster, whether it writes its own or alters one
// the honest admins signed.
func TestRosterCompromisedKeys(t *testing.T) {
	ids := rosterIDs(t, 31, 32, 33, 34, 35, 36, 37, 38)
	admins := ids[:5]
	evil1, evil2 := admins[0], admins[1]
	attacker, sybil := ids[5], ids[6]
	v1 := testRoster(t, 1, 3, admins, ids[7])
	own := testRoster(t, 2, 3, admins, ids[7], attacker)
	if err := VerifyRoster(v1, signed(t, own, evil1, evil2, attacker, sybil), t0); !errors.Is(err, ErrRosterThreshold) {
		t.Errorf("two compromised keys and two sybils: %v, want %v", err, ErrRosterThreshold)
	}
	// An honest proposal with 2 honest signatures, completed by the attacker: that is k.
	honest := testRoster(t, 2, 3, admins, ids[7])
	hs := signed(t, honest, admins[2], admins[3])
	if err := VerifyRoster(v1, hs, t0); !errors.Is(err, ErrRosterThreshold) {
		t.Fatalf("2 honest signatures: %v", err)
	}
	// The attacker moves the honest signatures onto its own roster.
	ev := signed(t, own, evil1)
	moved := withSigs(t, ev, sigOf(ev, evil1), sigOf(hs, admins[2]), sigOf(hs, admins[3]))
	if err := VerifyRoster(v1, moved, t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("honest signatures moved onto the attacker's roster: %v, want %v", err, ErrBadSignature)
	}
	// Raising its own threshold or dropping admins needs k of the current roster just the same.
	takeover := testRoster(t, 2, 1, []*Identity{evil1}, ids[7], attacker)
	if err := VerifyRoster(v1, signed(t, takeover, evil1, evil2), t0); !errors.Is(err, ErrRosterThreshold) {
		t.Errorf("takeover roster by 2 of 5: %v, want %v", err, ErrRosterThreshold)
	}
}

// TestRosterAdmits: members are admitted until the roster expires; then nobody is.
func TestRosterAdmits(t *testing.T) {
	ids := rosterIDs(t, 41, 42, 43)
	r := testRoster(t, 1, 1, ids[:1], ids[0], ids[1])
	for _, tc := range []struct {
		name string
		p    peer.ID
		at   time.Time
		want error
	}{
		{"member", ids[1].PeerID(), t0, nil},
		{"non-member", ids[2].PeerID(), t0, ErrNotMember},
		{"member after expiry", ids[1].PeerID(), r.Expires.Std(), ErrRosterExpired},
		{"member just before expiry", ids[1].PeerID(), r.Expires.Std().Add(-time.Second), nil},
	} {
		if err := r.Admits(tc.p, tc.at); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	next := testRoster(t, 2, 1, ids[:1], ids[0], ids[2])
	if got := r.Removed(next); len(got) != 1 || got[0] != ids[1].PeerID() {
		t.Errorf("removed %v, want [%s]", got, ids[1].PeerID())
	}
}

// TestRosterValidate refuses every malformed roster.
func TestRosterValidate(t *testing.T) {
	ids := rosterIDs(t, 51, 52, 53)
	ok := func() *Roster { return testRoster(t, 1, 1, ids[:2], ids[0], ids[1]) }
	for _, tc := range []struct {
		name   string
		change func(r *Roster)
	}{
		{"no community", func(r *Roster) { r.Community = "" }},
		{"community with a slash", func(r *Roster) { r.Community = "a/b" }},
		{"version 0", func(r *Roster) { r.Version = 0 }},
		{"no expiry", func(r *Roster) { r.Expires = 0 }},
		{"no admin", func(r *Roster) { r.Admins = nil }},
		{"threshold 0", func(r *Roster) { r.Threshold = 0 }},
		{"threshold over the admins", func(r *Roster) { r.Threshold = 3 }},
		{"admins repeated", func(r *Roster) { r.Admins = []peer.ID{r.Admins[0], r.Admins[0]} }},
		{"admins out of order", func(r *Roster) { r.Admins[0], r.Admins[1] = r.Admins[1], r.Admins[0] }},
		{"admin not a key", func(r *Roster) { r.Admins[0] = "nonsense" }},
		{"members out of order", func(r *Roster) { r.Members[0], r.Members[1] = r.Members[1], r.Members[0] }},
		{"member without role", func(r *Roster) { r.Members[0].Roles = nil }},
		{"unknown role", func(r *Roster) { r.Members[0].Roles = []MemberRole{9} }},
		{"roles repeated", func(r *Roster) { r.Members[0].Roles = []MemberRole{RoleMember, RoleMember} }},
		{"member not a peer ID", func(r *Roster) { r.Members[0].Peer = "" }},
	} {
		r := ok()
		tc.change(r)
		if err := r.Validate(); !errors.Is(err, ErrRosterInvalid) {
			t.Errorf("%s: got %v, want %v", tc.name, err, ErrRosterInvalid)
		}
		if _, err := NewSignedRoster(r); err == nil {
			t.Errorf("%s: NewSignedRoster accepted it", tc.name)
		}
	}
	if err := ok().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRosterGolden holds the signed roster's encoding: if it changes, the format changed.
func TestRosterGolden(t *testing.T) {
	ids := rosterIDs(t, 1, 2, 3)
	r := testRoster(t, 1, 2, ids, ids...)
	r.Members[0].Roles = []MemberRole{RoleMember, RoleProviderMember, RoleRelay, RoleAdmin}
	r.AnnulRemoved = true
	b, err := signed(t, r, ids[0], ids[1]).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		writeGolden(t, "roster", b)
	}
	if want := readGolden(t, "roster"); !bytes.Equal(b, want) {
		t.Fatalf("signed roster encoding changed:\n got %x\nwant %x", b, want)
	}
	s, err := DecodeSignedRoster(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRoster(nil, s, t0); err != nil {
		t.Fatal(err)
	}
}

// FuzzRosterDecode: the decoder never panics, and what it accepts encodes back to the same
// bytes.
func FuzzRosterDecode(f *testing.F) {
	for _, b := range rosterSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSignedRoster(b)
		if err != nil {
			return
		}
		out, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, out)
		}
	})
}

// FuzzRosterVerify: whatever a peer sends, the verifier never panics, and accepts a roster
// only if it is v1's successor and at least 2 admins of v1 signed exactly its payload.
func FuzzRosterVerify(f *testing.F) {
	seeds := rosterSeeds(f)
	for _, b := range seeds {
		f.Add(b)
	}
	ids := rosterIDs(f, 1, 2, 3)
	v1 := testRoster(f, 1, 2, ids, ids...)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSignedRoster(b)
		if err != nil {
			return
		}
		for _, cur := range []*Roster{nil, v1} {
			if VerifyRoster(cur, s, t0) != nil {
				continue
			}
			auth := cur
			if cur == nil {
				auth = s.Roster()
			} else if s.Roster().Version != 2 {
				t.Fatalf("accepted version %d after 1", s.Roster().Version)
			}
			n := map[peer.ID]bool{}
			for _, p := range s.Signers() {
				if auth.IsAdmin(p) {
					n[p] = true
				}
			}
			if uint64(len(n)) < auth.Threshold {
				t.Fatalf("accepted with %d admin signers, threshold %d", len(n), auth.Threshold)
			}
		}
	})
}

// rosterSeeds are signed rosters: the golden one, a successor of it signed 2 of 3, one
// signed by a non-admin, and a mix of two proposals.
func rosterSeeds(f *testing.F) [][]byte {
	ids := rosterIDs(f, 1, 2, 3, 4)
	v1 := testRoster(f, 1, 2, ids[:3], ids[:3]...)
	v2 := testRoster(f, 2, 2, ids[:3], ids...)
	v2b := testRoster(f, 2, 2, ids[:3], ids[0])
	enc := func(s *SignedRoster) []byte {
		b, err := s.Encode()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	pa, pb := signed(f, v2, ids[0]), signed(f, v2b, ids[1])
	return [][]byte{readGolden(f, "roster"), enc(signed(f, v1, ids[0], ids[1])), enc(signed(f, v2, ids[1], ids[2])),
		enc(signed(f, v2, ids[0], ids[3])), enc(withSigs(f, pb, sigOf(pa, ids[0]), sigOf(pb, ids[1]))), enc(signed(f, v2))}
}

// TestRosterCOSE: go-cose, an independent implementation, verifies each signature of the
// golden signed roster over its roster bytes with the roster AAD, and not with another AAD.
func TestRosterCOSE(t *testing.T) {
	s, err := DecodeSignedRoster(readGolden(t, "roster"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.sigs) != 2 {
		t.Fatalf("%d signatures in the golden roster", len(s.sigs))
	}
	for _, sg := range s.sigs {
		coseVerify(t, sg.raw, s.payload, []byte("ssanet/v1 roster"))
		var m cose.Sign1Message
		if err := m.UnmarshalCBOR(sg.raw); err != nil {
			t.Fatal(err)
		}
		m.Payload = s.payload
		pub, err := ed25519Key(sg.signer)
		if err != nil {
			t.Fatal(err)
		}
		v, err := cose.NewVerifier(cose.AlgorithmEdDSA, ed25519.PublicKey(pub))
		if err != nil {
			t.Fatal(err)
		}
		if m.Verify([]byte("ssanet/v1 offers"), v) == nil {
			t.Error("a roster signature verifies as an offer list's")
		}
	}
}
