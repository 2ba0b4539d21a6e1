package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A community roster: the signed list of the peers of a community, who may connect to each
// other, and of the admin keys that may change it, k of n (issue 18). The rules, which the
// README repeats as a specification:
//
//   - The roster's payload is the core deterministic CBOR of Roster; a signed roster carries
//     it once with a set of detached COSE_Sign1 signatures over exactly those bytes, each with
//     content type application/ssanet-roster+cbor and external AAD "ssanet/v1 roster", the
//     signer's peer ID as kid. A signature covers the whole document, so one made for another
//     proposal does not verify over this one: a signed roster any of whose signatures does not
//     verify is refused (ErrBadSignature), whoever made it.
//   - The first roster an agent holds (version 1, or any version given to it by its operator)
//     is a trust anchor: it comes from the operator's configuration, never from the network,
//     and must be signed by at least Threshold of its own Admins.
//   - A later roster is accepted only as the successor of the one held: same community,
//     version exactly one more, signed by at least Threshold distinct admins of the roster it
//     replaces (so admins rotate like TUF's root role). Signatures by keys that are not such
//     admins are ignored; two signatures by one admin count once. An older or equal version
//     changes nothing (ErrRosterStale), a version further ahead needs the ones between
//     (ErrRosterGap).
//   - A roster expired when it is checked is refused (ErrRosterExpired); a roster held past its
//     expiry admits nobody new (Admits), until a newer one arrives.

// Limits of a roster: a document over them is refused, never cut.
const (
	// MaxRosterMembers is the most members a roster lists.
	MaxRosterMembers = 1024
	// MaxRosterAdmins is the most admin keys a roster lists.
	MaxRosterAdmins = 64
	// MaxRosterSignatures is the most signatures a signed roster carries.
	MaxRosterSignatures = 2 * MaxRosterAdmins
	maxCommunityName    = 64
	maxOrganisation     = 256
)

var (
	// ErrRosterInvalid means a roster breaks a rule of its form (a field missing, out of order,
	// repeated or over a limit); the error says which.
	ErrRosterInvalid = errors.New("protocol: invalid roster")
	// ErrRosterThreshold means fewer admins than the threshold signed a roster: collect more
	// signatures (ssanet community sign) before publishing it.
	ErrRosterThreshold = errors.New("protocol: roster not signed by enough admins")
	// ErrRosterStale means a roster is not newer than the one held: a replay, which changes
	// nothing.
	ErrRosterStale = errors.New("protocol: roster is not newer than the one held")
	// ErrRosterGap means a roster is more than one version ahead of the one held: the versions
	// between are needed first.
	ErrRosterGap = errors.New("protocol: roster skips versions")
	// ErrRosterCommunity means a roster names another community than the one held.
	ErrRosterCommunity = errors.New("protocol: roster of another community")
	// ErrRosterExpired means a roster's expiry has passed: it admits nobody new, and none is
	// accepted; the admins must publish a newer roster.
	ErrRosterExpired = errors.New("protocol: roster expired; the community's admins must publish a newer one")
	// ErrNotMember means a peer is not a member of the community's current roster.
	ErrNotMember = errors.New("protocol: peer is not a member of the community roster")
)

// docRoster is the kind of a roster signature.
var docRoster = docKind{"application/ssanet-roster+cbor", []byte("ssanet/v1 roster")}

// MemberRole is a role a roster gives a member. Append-only.
type MemberRole uint8

// Member roles. RoleAdmin marks the member whose key is among the Admins; it grants nothing
// by itself: the Admins list is what counts.
const (
	RoleMember MemberRole = iota + 1
	RoleProviderMember
	RoleRelay
	RoleAdmin
)

var roleNames = map[MemberRole]string{RoleMember: "member", RoleProviderMember: "provider", RoleRelay: "relay", RoleAdmin: "admin"}

func (r MemberRole) String() string {
	if s, ok := roleNames[r]; ok {
		return s
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseMemberRole reads a role by name (member, provider, relay, admin).
func ParseMemberRole(s string) (MemberRole, error) {
	for r, name := range roleNames {
		if name == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown role %q (member, provider, relay, admin)", ErrRosterInvalid, s)
}

// Member is one peer of a community.
type Member struct {
	Peer         peer.ID
	Organisation string
	Roles        []MemberRole // sorted, no repeats, at least one
}

// Roster is the membership of a community at one version.
type Roster struct {
	Community string
	Version   uint64
	// Expires is when the roster stops admitting anyone new.
	Expires Time
	// Threshold is k: how many of Admins must sign the roster that replaces this one (and
	// this one, when it is the first).
	Threshold uint64
	Admins    []peer.ID // sorted by bytes, no repeats, each embedding an Ed25519 key
	Members   []Member  // sorted by peer ID bytes, no repeats
	// AnnulRemoved asks the agents to annul their agreements with the members this roster
	// removes; without it they are only flagged.
	AnnulRemoved bool
}

// Wire forms: integer keys, never renumbered.
type rosterWire struct {
	Community    string       `cbor:"1,keyasint"`
	Version      uint64       `cbor:"2,keyasint"`
	Expires      Time         `cbor:"3,keyasint"`
	Threshold    uint64       `cbor:"4,keyasint"`
	Admins       [][]byte     `cbor:"5,keyasint"`
	Members      []memberWire `cbor:"6,keyasint"`
	AnnulRemoved bool         `cbor:"7,keyasint,omitempty"`
}

type memberWire struct {
	Peer         []byte       `cbor:"1,keyasint"`
	Organisation string       `cbor:"2,keyasint,omitempty"`
	Roles        []MemberRole `cbor:"3,keyasint"`
}

type signedRosterWire struct {
	Roster     []byte   `cbor:"1,keyasint"`
	Signatures [][]byte `cbor:"2,keyasint"`
}

// Sort puts admins and members in the order Validate requires, and each member's roles.
func (r *Roster) Sort() {
	slices.SortFunc(r.Admins, func(a, b peer.ID) int { return strings.Compare(string(a), string(b)) })
	slices.SortFunc(r.Members, func(a, b Member) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	for i := range r.Members {
		slices.Sort(r.Members[i].Roles)
	}
}

// Validate checks the roster's form: a community name of letters, digits, '.', '_' and
// '-' (at most 64), a version from 1, an expiry, 1 to MaxRosterAdmins admins holding
// Ed25519 keys, 1 <= Threshold <= len(Admins), at most MaxRosterMembers members with valid
// peer IDs, each with known roles, in order and without repeats.
func (r *Roster) Validate() error {
	if err := checkCommunity(r.Community); err != nil {
		return err
	}
	switch {
	case r.Version == 0:
		return fmt.Errorf("%w: version must be at least 1", ErrRosterInvalid)
	case r.Expires <= 0:
		return fmt.Errorf("%w: no expiry", ErrRosterInvalid)
	case len(r.Admins) == 0 || len(r.Admins) > MaxRosterAdmins:
		return fmt.Errorf("%w: %d admins, want 1 to %d", ErrRosterInvalid, len(r.Admins), MaxRosterAdmins)
	case r.Threshold == 0 || r.Threshold > uint64(len(r.Admins)):
		return fmt.Errorf("%w: threshold %d with %d admins, want 1 to %d", ErrRosterInvalid, r.Threshold, len(r.Admins), len(r.Admins))
	case len(r.Members) > MaxRosterMembers:
		return fmt.Errorf("%w: %d members, limit %d", ErrRosterInvalid, len(r.Members), MaxRosterMembers)
	}
	for i, a := range r.Admins {
		if _, err := ed25519Key(a); err != nil {
			return fmt.Errorf("%w: admin %d: %w", ErrRosterInvalid, i, err)
		}
		if i > 0 && string(r.Admins[i-1]) >= string(a) {
			return fmt.Errorf("%w: admins out of order or repeated at %s", ErrRosterInvalid, a)
		}
	}
	for i, m := range r.Members {
		if err := m.Peer.Validate(); err != nil {
			return fmt.Errorf("%w: member %d: %w", ErrRosterInvalid, i, err)
		}
		if i > 0 && string(r.Members[i-1].Peer) >= string(m.Peer) {
			return fmt.Errorf("%w: members out of order or repeated at %s", ErrRosterInvalid, m.Peer)
		}
		if len(m.Organisation) > maxOrganisation || !utf8.ValidString(m.Organisation) {
			return fmt.Errorf("%w: member %s: organisation over %d bytes or not UTF-8", ErrRosterInvalid, m.Peer, maxOrganisation)
		}
		if len(m.Roles) == 0 {
			return fmt.Errorf("%w: member %s has no role", ErrRosterInvalid, m.Peer)
		}
		for j, role := range m.Roles {
			if _, ok := roleNames[role]; !ok {
				return fmt.Errorf("%w: member %s: unknown role %d", ErrRosterInvalid, m.Peer, role)
			}
			if j > 0 && m.Roles[j-1] >= role {
				return fmt.Errorf("%w: member %s: roles out of order or repeated", ErrRosterInvalid, m.Peer)
			}
		}
	}
	return nil
}

func checkCommunity(s string) error {
	if s == "" || len(s) > maxCommunityName {
		return fmt.Errorf("%w: community name must be 1 to %d characters", ErrRosterInvalid, maxCommunityName)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: community name %q: only letters, digits, '.', '_' and '-'", ErrRosterInvalid, s)
		}
	}
	return nil
}

// Member returns the roster's entry for p.
func (r *Roster) Member(p peer.ID) (Member, bool) {
	i, ok := slices.BinarySearchFunc(r.Members, p, func(m Member, p peer.ID) int { return strings.Compare(string(m.Peer), string(p)) })
	if !ok {
		return Member{}, false
	}
	return r.Members[i], true
}

// IsAdmin reports whether p's key is one of the roster's admins.
func (r *Roster) IsAdmin(p peer.ID) bool {
	_, ok := slices.BinarySearchFunc(r.Admins, p, func(a, p peer.ID) int { return strings.Compare(string(a), string(p)) })
	return ok
}

// Expired reports whether the roster's expiry has passed at now.
func (r *Roster) Expired(now time.Time) bool { return FromTime(now) >= r.Expires }

// Admits says whether the roster admits p at now as a new connection: ErrNotMember for a
// peer it does not list, ErrRosterExpired for anyone once it has expired.
func (r *Roster) Admits(p peer.ID, now time.Time) error {
	if r.Expired(now) {
		return fmt.Errorf("%w: version %d expired at %s", ErrRosterExpired, r.Version, r.Expires)
	}
	if _, ok := r.Member(p); !ok {
		return fmt.Errorf("%w: %s, version %d of %s", ErrNotMember, p, r.Version, r.Community)
	}
	return nil
}

// Removed lists the members of r that next no longer lists.
func (r *Roster) Removed(next *Roster) []peer.ID {
	var out []peer.ID
	for _, m := range r.Members {
		if _, ok := next.Member(m.Peer); !ok {
			out = append(out, m.Peer)
		}
	}
	return out
}

// Next returns a copy of r as the proposal of its successor: version + 1, expiring at
// expires, the same admins, threshold and members (the caller changes them).
func (r *Roster) Next(expires time.Time) *Roster {
	n := *r
	n.Version++
	n.Expires = FromTime(expires)
	n.AnnulRemoved = false
	n.Admins = slices.Clone(r.Admins)
	n.Members = make([]Member, len(r.Members))
	for i, m := range r.Members {
		m.Roles = slices.Clone(m.Roles)
		n.Members[i] = m
	}
	return &n
}

func (r *Roster) wire() *rosterWire {
	w := &rosterWire{Community: r.Community, Version: r.Version, Expires: r.Expires, Threshold: r.Threshold,
		Admins: make([][]byte, len(r.Admins)), Members: make([]memberWire, len(r.Members)), AnnulRemoved: r.AnnulRemoved}
	for i, a := range r.Admins {
		w.Admins[i] = []byte(a)
	}
	for i, m := range r.Members {
		w.Members[i] = memberWire{Peer: []byte(m.Peer), Organisation: m.Organisation, Roles: m.Roles}
	}
	return w
}

func (w *rosterWire) roster() *Roster {
	r := &Roster{Community: w.Community, Version: w.Version, Expires: w.Expires, Threshold: w.Threshold,
		Admins: make([]peer.ID, len(w.Admins)), Members: make([]Member, len(w.Members)), AnnulRemoved: w.AnnulRemoved}
	for i, a := range w.Admins {
		r.Admins[i] = peer.ID(a)
	}
	for i, m := range w.Members {
		r.Members[i] = Member{Peer: peer.ID(m.Peer), Organisation: m.Organisation, Roles: m.Roles}
	}
	return r
}

// SignedRoster is a roster with the signatures collected for it so far. Its payload is fixed
// when it is made: signing adds signatures, never changes what they cover.
type SignedRoster struct {
	roster  *Roster
	payload []byte
	sigs    []rosterSig
}

// rosterSig is one detached COSE_Sign1 over the payload, with its signer read from the kid.
type rosterSig struct {
	signer peer.ID
	raw    []byte
}

// NewSignedRoster fixes r's encoding as the payload of a roster with no signature yet. r
// must validate (call Sort first).
func NewSignedRoster(r *Roster) (*SignedRoster, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	payload, err := Marshal(r.wire())
	if err != nil {
		return nil, err
	}
	var w rosterWire
	if err := unmarshalCanonical(payload, &w); err != nil {
		return nil, err
	}
	return &SignedRoster{roster: w.roster(), payload: payload}, nil
}

// Roster is the signed roster's content. The caller must not change it.
func (s *SignedRoster) Roster() *Roster { return s.roster }

// Payload is the encoded roster the signatures cover.
func (s *SignedRoster) Payload() []byte { return s.payload }

// Signers are the peer IDs of the signatures, in order, repeats included.
func (s *SignedRoster) Signers() []peer.ID {
	out := make([]peer.ID, len(s.sigs))
	for i, sg := range s.sigs {
		out[i] = sg.signer
	}
	return out
}

// Sign adds id's signature over the payload, unless id has signed it already.
func (s *SignedRoster) Sign(id *Identity) error {
	for _, sg := range s.sigs {
		if sg.signer == id.PeerID() {
			return nil
		}
	}
	if len(s.sigs) >= MaxRosterSignatures {
		return fmt.Errorf("%w: already %d signatures, limit %d", ErrRosterInvalid, len(s.sigs), MaxRosterSignatures)
	}
	protected, sig := id.sign(docRoster.contentType, nil, docRoster.aad, s.payload)
	s.sigs = append(s.sigs, rosterSig{signer: id.PeerID(), raw: appendSign1(nil, protected, nil, sig)})
	slices.SortStableFunc(s.sigs, func(a, b rosterSig) int { return bytes.Compare(a.raw, b.raw) })
	return nil
}

// Encode returns the signed roster's canonical encoding: the payload and the signatures in
// byte order.
func (s *SignedRoster) Encode() ([]byte, error) {
	w := signedRosterWire{Roster: s.payload, Signatures: make([][]byte, len(s.sigs))}
	for i, sg := range s.sigs {
		w.Signatures[i] = sg.raw
	}
	return Marshal(&w)
}

// DecodeSignedRoster reads a signed roster: canonical CBOR within MaxMessageSize, a roster
// that validates, at most MaxRosterSignatures signatures in byte order, each a detached
// COSE_Sign1 of a roster naming its signer. It verifies no signature: VerifyRoster does.
func DecodeSignedRoster(b []byte) (*SignedRoster, error) {
	var w signedRosterWire
	if err := unmarshalCanonical(b, &w); err != nil {
		return nil, err
	}
	var rw rosterWire
	if err := unmarshalCanonical(w.Roster, &rw); err != nil {
		return nil, fmt.Errorf("roster payload: %w", err)
	}
	r := rw.roster()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if len(w.Signatures) > MaxRosterSignatures {
		return nil, fmt.Errorf("%w: %d signatures, limit %d", ErrRosterInvalid, len(w.Signatures), MaxRosterSignatures)
	}
	s := &SignedRoster{roster: r, payload: w.Roster, sigs: make([]rosterSig, len(w.Signatures))}
	for i, raw := range w.Signatures {
		if i > 0 && bytes.Compare(w.Signatures[i-1], raw) > 0 {
			return nil, fmt.Errorf("%w: signatures out of order", ErrRosterInvalid)
		}
		signer, err := rosterSigner(raw)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i, err)
		}
		s.sigs[i] = rosterSig{signer: signer, raw: raw}
	}
	return s, nil
}

// rosterSigner reads the signer of a roster signature from its protected header.
func rosterSigner(raw []byte) (peer.ID, error) {
	m, err := parseSign1(raw)
	if err != nil {
		return "", err
	}
	if m.Payload != nil {
		return "", fmt.Errorf("%w: a roster signature's payload must be detached", ErrMalformed)
	}
	var ph struct {
		Alg int64  `cbor:"1,keyasint"`
		CT  string `cbor:"3,keyasint"`
		KID []byte `cbor:"4,keyasint"`
	}
	if err := unmarshalCanonical(m.Protected, &ph); err != nil {
		return "", fmt.Errorf("protected header: %w", err)
	}
	if ph.Alg != algEdDSA || ph.CT != docRoster.contentType {
		return "", fmt.Errorf("%w: not a roster signature (alg %d, content type %q)", ErrMalformed, ph.Alg, ph.CT)
	}
	kid, err := peer.IDFromBytes(ph.KID)
	if err != nil {
		return "", fmt.Errorf("%w: kid: %v", ErrMalformed, err)
	}
	return kid, nil
}

// VerifyRoster checks next as the successor of cur at now, or, with cur nil, as a trust
// anchor (the first roster, given by the operator). Every signature must verify over next's
// payload (ErrBadSignature otherwise: one taken from another proposal does not); then at least
// cur's Threshold distinct admins of cur (of next itself for an anchor) must be among the
// signers, others being ignored (ErrRosterThreshold); next must be of cur's community
// (ErrRosterCommunity), of version cur's + 1 (ErrRosterStale if not newer, ErrRosterGap if
// further ahead), and not expired at now (ErrRosterExpired).
func VerifyRoster(cur *Roster, next *SignedRoster, now time.Time) error {
	r := next.roster
	auth := cur
	if cur == nil {
		auth = r
	} else {
		switch {
		case r.Community != cur.Community:
			return fmt.Errorf("%w: %q, held %q", ErrRosterCommunity, r.Community, cur.Community)
		case r.Version <= cur.Version:
			return fmt.Errorf("%w: version %d, held %d", ErrRosterStale, r.Version, cur.Version)
		case r.Version != cur.Version+1:
			return fmt.Errorf("%w: version %d, held %d: get versions %d to %d first", ErrRosterGap, r.Version, cur.Version, cur.Version+1, r.Version-1)
		}
	}
	if r.Expired(now) {
		return fmt.Errorf("%w: version %d expired at %s", ErrRosterExpired, r.Version, r.Expires)
	}
	counted := map[peer.ID]bool{}
	for _, sg := range next.sigs {
		m, err := parseSign1(sg.raw)
		if err != nil {
			return err
		}
		if err := verifySign1(m.Protected, next.payload, m.Signature, docRoster.aad, sg.signer); err != nil {
			return fmt.Errorf("roster version %d: %w (a signature made for another proposal?)", r.Version, err)
		}
		if auth.IsAdmin(sg.signer) {
			counted[sg.signer] = true
		}
	}
	if uint64(len(counted)) < auth.Threshold {
		whose := "the roster it replaces"
		if cur == nil {
			whose = "its own"
		}
		return fmt.Errorf("%w: version %d has %d of the %d signatures needed from admins of %s", ErrRosterThreshold,
			r.Version, len(counted), auth.Threshold, whose)
	}
	return nil
}
