package storage

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/ssanet/ssanet/protocol"
)

// testRoster returns version v of a roster with one admin, who signs it, and the members.
func testRoster(t *testing.T, v uint64, admin *protocol.Identity, members ...*protocol.Identity) *protocol.SignedRoster {
	t.Helper()
	r := &protocol.Roster{Community: "c", Version: v, Expires: protocol.FromTime(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
		Threshold: 1, Admins: []peer.ID{admin.PeerID()}}
	for _, m := range members {
		r.Members = append(r.Members, protocol.Member{Peer: m.PeerID(), Roles: []protocol.MemberRole{protocol.RoleMember}})
	}
	r.Sort()
	s, err := protocol.NewSignedRoster(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sign(admin); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRosters: rosters are kept per version, the latest is the highest version, a peer's
// catch-up is the versions after its own in order, and a version is written once.
func TestRosters(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	if _, err := s.LatestRoster(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty store: %v, want %v", err, ErrNotFound)
	}
	admin, m1, m2 := identity(t, 1), identity(t, 2), identity(t, 3)
	for _, v := range []uint64{1, 3, 2, 256} { // out of order; 256 sorts after 3 only as big-endian
		if err := s.PutRoster(testRoster(t, v, admin, m1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutRoster(testRoster(t, 2, admin, m1)); err != nil {
		t.Errorf("same roster again: %v", err)
	}
	if err := s.PutRoster(testRoster(t, 2, admin, m1, m2)); !errors.Is(err, ErrConflict) {
		t.Errorf("another roster of version 2: %v, want %v", err, ErrConflict)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	latest, err := s.LatestRoster()
	if err != nil || latest.Roster().Version != 256 {
		t.Fatalf("latest: %v, %v; want version 256", latest, err)
	}
	after, err := s.RostersAfter(1)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, r := range after {
		got = append(got, r.Roster().Version)
	}
	if len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 256 {
		t.Errorf("after 1: versions %v, want [2 3 256]", got)
	}
	if r, _ := s.RostersAfter(256); len(r) != 0 {
		t.Errorf("after the latest: %d rosters", len(r))
	}
	if r, _ := s.RostersAfter(^uint64(0)); len(r) != 0 {
		t.Errorf("after the highest version there can be: %d rosters", len(r))
	}
	if r, _ := s.RostersAfter(2); len(r) != 2 || len(r[0].Signers()) != 1 || r[0].Signers()[0] != admin.PeerID() {
		t.Errorf("after 2: %d rosters, signatures lost?", len(r))
	}
}
