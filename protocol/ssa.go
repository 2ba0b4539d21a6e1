package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Status is the status component of an SSA (clause 9.2 item 2). Append-only.
type Status uint8

// SSA statuses.
const (
	StatusProposal  Status = 1
	StatusApproval  Status = 2
	StatusAnnulment Status = 3
)

var statusNames = map[Status]string{StatusProposal: "proposal", StatusApproval: "approval", StatusAnnulment: "annulment"}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// ParseStatus reads a status name.
func ParseStatus(s string) (Status, error) {
	for k, v := range statusNames {
		if v == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("protocol: unknown status %q (want proposal, approval or annulment)", s)
}

// Time is a point in time as whole seconds since the Unix epoch; zero means "not set" (for a
// schedule bound: open). No floats in signed data.
type Time int64

// Duration is a span of whole seconds; zero means "not set".
type Duration int64

// SSA is a Security information Sharing Agreement: every component of Figure 9-2, plus the
// version chain used by revision and the validity limit of an unanswered proposal.
// Integer CBOR keys are never renumbered or reused.
type SSA struct {
	ID           string        `cbor:"1,keyasint,omitempty" yaml:"id,omitempty" json:"id,omitempty"`
	Version      uint32        `cbor:"2,keyasint,omitempty" yaml:"version,omitempty" json:"version,omitempty"`
	Supersedes   string        `cbor:"3,keyasint,omitempty" yaml:"supersedes,omitempty" json:"supersedes,omitempty"`
	Status       Status        `cbor:"4,keyasint,omitempty" yaml:"status,omitempty" json:"status,omitempty"`
	Participants Participants  `cbor:"5,keyasint" yaml:"participants" json:"participants"`
	Information  []Information `cbor:"6,keyasint,omitempty" yaml:"information" json:"information"`
	Policy       *Policy       `cbor:"7,keyasint,omitempty" yaml:"policy,omitempty" json:"policy,omitempty"`
	Method       Method        `cbor:"8,keyasint" yaml:"method" json:"method"`
	Schedule     Schedule      `cbor:"9,keyasint" yaml:"schedule" json:"schedule"`
	Date         Time          `cbor:"10,keyasint,omitempty" yaml:"date,omitempty" json:"date,omitempty"`
	// Expires is the validity limit of a request, proposal or revision: after it, unanswered,
	// it cannot be answered. The acceptance clears it: an approved SSA has none (a revised
	// version keeps its revision's).
	Expires Time `cbor:"11,keyasint,omitempty" yaml:"expires,omitempty" json:"expires,omitempty"`
	// Other holds the "other components" of clause 9.2 item 9: extension values kept as
	// canonical CBOR, byte for byte, and covered by the signatures.
	Other Extensions `cbor:"12,keyasint,omitempty" yaml:"other,omitempty" json:"other,omitempty"`
	// Signatures are detached COSE_Sign1 signatures over SigningBytes, one per party.
	Signatures [][]byte `cbor:"13,keyasint,omitempty" yaml:"-" json:"signatures,omitempty"`
}

// Participants names the two negotiating entities (clause 9.2 item 3).
type Participants struct {
	Requester Participant `cbor:"1,keyasint" yaml:"requester" json:"requester"`
	Provider  Participant `cbor:"2,keyasint" yaml:"provider" json:"provider"`
}

// Participant is the contact information of one entity and the libp2p peer ID that
// authenticates it and signs for it.
type Participant struct {
	Affiliation string `cbor:"1,keyasint,omitempty" yaml:"affiliation,omitempty" json:"affiliation,omitempty"`
	Name        string `cbor:"2,keyasint,omitempty" yaml:"name,omitempty" json:"name,omitempty"`
	Email       string `cbor:"3,keyasint,omitempty" yaml:"email,omitempty" json:"email,omitempty"`
	Address     string `cbor:"4,keyasint,omitempty" yaml:"address,omitempty" json:"address,omitempty"`
	PeerID      string `cbor:"5,keyasint,omitempty" yaml:"peer-id,omitempty" json:"peer_id,omitempty"`
	Phone       string `cbor:"6,keyasint,omitempty" yaml:"phone,omitempty" json:"phone,omitempty"`
}

// Information is one kind of security information to be exchanged (clause 9.2 item 4).
type Information struct {
	Name   string `cbor:"1,keyasint,omitempty" yaml:"name,omitempty" json:"name,omitempty"`
	Type   string `cbor:"2,keyasint" yaml:"type" json:"type"`
	Format string `cbor:"3,keyasint" yaml:"format" json:"format"`
}

// Known information types and formats. Others are allowed (extendibility), these are the ones
// the policy engine and the examples use.
const (
	TypeBlacklist          = "blacklist"
	TypeIncident           = "incident"
	TypeAttackDetectionLog = "attack-detection-log"

	FormatIDMEF   = "idmef"
	FormatIDMEFv2 = "idmefv2"
	FormatIODEF   = "iodef"
	FormatSyslog  = "syslog"
	FormatEVE     = "eve"
)

// Policy is the optional policy component (clause 9.2 item 5): the four kinds of policy the
// provider applies to what it shares.
type Policy struct {
	Masking       []MaskRule     `cbor:"1,keyasint,omitempty" yaml:"masking,omitempty" json:"masking,omitempty"`
	Filtering     []Filter       `cbor:"2,keyasint,omitempty" yaml:"filtering,omitempty" json:"filtering,omitempty"`
	Summarization *Summarization `cbor:"3,keyasint,omitempty" yaml:"summarization,omitempty" json:"summarization,omitempty"`
	Handling      *Handling      `cbor:"4,keyasint,omitempty" yaml:"handling,omitempty" json:"handling,omitempty"`
}

// Mask scopes: which values a masking rule applies to.
const (
	ScopePublicIP = "public-ip" // every public IP address anywhere in the record
	ScopeAllIP    = "all-ip"    // every IP address anywhere in the record
	ScopeFields   = "fields"    // the named fields of the normalised view
)

// Mask methods, from weakest to strongest (see MaskStrength).
const (
	MaskNone      = "none"      // requester only: this target must stay readable
	MaskTruncate  = "truncate"  // zero the low Bits bits of an address
	MaskCryptoPAn = "cryptopan" // prefix-preserving anonymisation
	MaskHMAC      = "hmac"      // keyed hash of an identifier
	MaskRemove    = "remove"    // remove the field
)

// MaskRule hides values in shared records.
type MaskRule struct {
	Scope  string   `cbor:"1,keyasint" yaml:"scope" json:"scope"`
	Fields []string `cbor:"2,keyasint,omitempty" yaml:"fields,omitempty" json:"fields,omitempty"`
	Method string   `cbor:"3,keyasint" yaml:"method" json:"method"`
	// Bits is the number of low bits truncated (truncate only).
	Bits uint8 `cbor:"4,keyasint,omitempty" yaml:"bits,omitempty" json:"bits,omitempty"`
	// CBOR key 5 is retired and never reused: it carried a cryptopan or hmac key in the
	// clear, which let the requester undo the masking. A MaskRule holding it does not decode
	// (unknown field), and a template's "key:" is refused by decodeYAML (retiredKeyError).

	// MaxBits, in a requester's template, is the most truncation the requester tolerates on
	// this target; a provider that needs more is in conflict. Zero: any.
	MaxBits uint8 `cbor:"6,keyasint,omitempty" yaml:"max-bits,omitempty" json:"max_bits,omitempty"`
	// KeyID names the key of a cryptopan or hmac rule among the provider's own keys (see
	// ValidKeyID); empty means the provider's secret per-SSA key. The key itself never
	// leaves the provider. Only the provider names one, in its offer: the meet drops a
	// requester's key ID and Satisfies refuses, against an offer, a key ID the offer does not
	// set for the rule's target.
	KeyID string `cbor:"7,keyasint,omitempty" yaml:"key-id,omitempty" json:"key_id,omitempty"`
}

// MaxKeyIDLen is the longest key ID.
const MaxKeyIDLen = 64

// ValidKeyID reports whether s is a key ID: 1 to MaxKeyIDLen lower-case letters, digits
// and hyphens, starting with a letter or a digit. A key ID names a file of the provider's
// home, so nothing else is allowed.
func ValidKeyID(s string) bool { return nameProblem(s, MaxKeyIDLen) == "" }

// Target names what a rule applies to, for comparing rules of both sides.
func (r MaskRule) Target() string {
	if r.Scope != ScopeFields {
		return r.Scope
	}
	f := slices.Clone(r.Fields)
	slices.Sort(f)
	return ScopeFields + ":" + strings.Join(f, ",")
}

// Filter keeps only the records for which a CEL expression over the normalised view is true.
type Filter struct {
	Expr string `cbor:"1,keyasint" yaml:"expr" json:"expr"`
}

// Summarization replaces records with top-N statistics per window.
type Summarization struct {
	// GroupBy is the field whose values are ranked, for example source.ip.
	GroupBy string `cbor:"1,keyasint" yaml:"group-by" json:"group_by"`
	// RankBy is "count" or a numeric field summed per value, for example source.bytes.
	RankBy string   `cbor:"2,keyasint" yaml:"rank-by" json:"rank_by"`
	TopN   uint32   `cbor:"3,keyasint" yaml:"top" json:"top"`
	Window Duration `cbor:"4,keyasint" yaml:"window" json:"window"`
}

// RankByCount ranks by the number of records.
const RankByCount = "count"

// TLP 2.0 labels, weakest first.
const (
	TLPClear       = "CLEAR"
	TLPGreen       = "GREEN"
	TLPAmber       = "AMBER"
	TLPAmberStrict = "AMBER+STRICT"
	TLPRed         = "RED"
)

// TLPLevels lists the TLP 2.0 labels from least to most restrictive.
var TLPLevels = []string{TLPClear, TLPGreen, TLPAmber, TLPAmberStrict, TLPRed}

// Handling says how widely shared information may circulate and when it expires.
type Handling struct {
	TLP string `cbor:"1,keyasint,omitempty" yaml:"tlp,omitempty" json:"tlp,omitempty"`
	// Retention is how long the requester may keep records; zero: no limit.
	Retention Duration `cbor:"2,keyasint,omitempty" yaml:"retention,omitempty" json:"retention,omitempty"`
	// Redistribution limits onward sharing: "none", "organisation", "community" or "any".
	// Empty: what the TLP label allows.
	Redistribution string `cbor:"3,keyasint,omitempty" yaml:"redistribution,omitempty" json:"redistribution,omitempty"`
}

// Redistribution rules, from most to least restrictive.
var RedistributionLevels = []string{"none", "organisation", "community", "any"}

// Method is how information is delivered (clause 9.2 item 6). Lists are in order of
// preference; the meet keeps the intersection.
type Method struct {
	Protocols []string `cbor:"1,keyasint,omitempty" yaml:"protocols,omitempty" json:"protocols,omitempty"`
	Security  []string `cbor:"2,keyasint,omitempty" yaml:"security,omitempty" json:"security,omitempty"`
	Access    []string `cbor:"3,keyasint,omitempty" yaml:"access,omitempty" json:"access,omitempty"`
}

// Schedule is when sharing starts and ends (clause 9.2 item 7); a zero bound is open.
type Schedule struct {
	Start Time `cbor:"1,keyasint,omitempty" yaml:"start,omitempty" json:"start,omitempty"`
	End   Time `cbor:"2,keyasint,omitempty" yaml:"end,omitempty" json:"end,omitempty"`
}

// Contains reports whether t is inside the schedule.
func (s Schedule) Contains(t Time) bool {
	return (s.Start == 0 || t >= s.Start) && (s.End == 0 || t < s.End)
}

// Extensions are the "other components": names mapped to canonical CBOR values.
type Extensions map[string]cbor.RawMessage

// UnmarshalCBOR reads the extension values and refuses any that is not canonical CBOR (the
// strict decoder's rules, core deterministic form, no floats): they are signed as they are,
// so a value with two encodings would give one SSA two signing encodings.
func (e *Extensions) UnmarshalCBOR(b []byte) error {
	var m map[string]cbor.RawMessage
	if err := decMode.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		var v any
		err := decodeCanonical(m[k], &v)
		if ferr := noFloats(v); ferr != nil {
			err = ferr // a float is refused as such, whether or not it is in its shortest form
		}
		if err != nil {
			return fmt.Errorf("other.%s: %v", k, err)
		}
	}
	*e = m
	return nil
}

var (
	// ErrInvalidSSA means an SSA breaks a rule of its structure; the message says which.
	ErrInvalidSSA = errors.New("protocol: invalid SSA")
)

// Encode returns the canonical CBOR encoding of s, signatures included.
func (s *SSA) Encode() ([]byte, error) { return Marshal(s) }

// SigningBytes returns the bytes every signature on s covers: the canonical encoding of s
// without its signatures.
func (s *SSA) SigningBytes() ([]byte, error) {
	c := *s
	c.Signatures = nil
	return Marshal(&c)
}

// DecodeSSA decodes a canonical CBOR SSA with the strict decoder and checks its structure.
func DecodeSSA(b []byte) (*SSA, error) {
	var s SSA
	if err := unmarshalCanonical(b, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Clone returns a deep copy of s: it shares no slice, map or pointer with s.
func (s *SSA) Clone() *SSA {
	c := *s
	c.Information = slices.Clone(s.Information)
	if s.Policy != nil {
		p := *s.Policy
		p.Masking = slices.Clone(p.Masking)
		for i := range p.Masking {
			p.Masking[i].Fields = slices.Clone(p.Masking[i].Fields)
		}
		p.Filtering = slices.Clone(p.Filtering)
		if p.Summarization != nil {
			v := *p.Summarization
			p.Summarization = &v
		}
		if p.Handling != nil {
			v := *p.Handling
			p.Handling = &v
		}
		c.Policy = &p
	}
	c.Method = Method{Protocols: slices.Clone(s.Method.Protocols), Security: slices.Clone(s.Method.Security), Access: slices.Clone(s.Method.Access)}
	if s.Other != nil {
		c.Other = make(Extensions, len(s.Other))
		for k, v := range s.Other {
			c.Other[k] = bytes.Clone(v)
		}
	}
	if s.Signatures != nil {
		c.Signatures = make([][]byte, len(s.Signatures))
		for i, sig := range s.Signatures {
			c.Signatures[i] = bytes.Clone(sig)
		}
	}
	return &c
}

// Validate checks the structural rules of an SSA that does not depend on its status.
func (s *SSA) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidSSA, fmt.Sprintf(format, a...))
	}
	for _, id := range []struct{ name, v string }{{"id", s.ID}, {"supersedes", s.Supersedes}} {
		if id.v == "" { // a template leaves its ID to the agent; only a revision supersedes
			continue
		}
		if err := CheckSSAID(id.v); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidSSA, id.name, err)
		}
	}
	if s.Status != 0 {
		if _, ok := statusNames[s.Status]; !ok {
			return bad("unknown status %d", s.Status)
		}
	}
	for _, who := range []struct {
		role string
		p    Participant
	}{{"requester", s.Participants.Requester}, {"provider", s.Participants.Provider}} {
		if who.p.PeerID == "" {
			continue
		}
		if _, err := peer.Decode(who.p.PeerID); err != nil {
			return bad("%s peer-id %q is not a peer ID: %v", who.role, who.p.PeerID, err)
		}
	}
	for i, in := range s.Information {
		if in.Type == "" || in.Format == "" {
			return bad("information[%d] needs both a type and a format", i)
		}
	}
	if s.Schedule.Start != 0 && s.Schedule.End != 0 && s.Schedule.End <= s.Schedule.Start {
		return bad("schedule ends (%d) before it starts (%d)", s.Schedule.End, s.Schedule.Start)
	}
	if s.Policy != nil {
		if err := s.Policy.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the policy component's own rules (values the engine can read at all; the
// policy package decides what it can enforce).
func (p *Policy) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: policy: %s", ErrInvalidSSA, fmt.Sprintf(format, a...))
	}
	for i, m := range p.Masking {
		if pr := m.problem(); pr != "" {
			return bad("masking[%d]: %s", i, pr)
		}
	}
	for i, f := range p.Filtering {
		if strings.TrimSpace(f.Expr) == "" {
			return bad("filtering[%d]: empty expression", i)
		}
	}
	if s := p.Summarization; s != nil && (s.GroupBy == "" || s.RankBy == "" || s.TopN == 0 || s.Window <= 0) {
		return bad("summarization needs group-by, rank-by, top > 0 and window > 0")
	}
	if h := p.Handling; h != nil {
		if pr := h.problem(); pr != "" {
			return bad("handling: %s", pr)
		}
	}
	return nil
}

// problem says what is wrong with a masking rule, or "" if nothing is.
func (m *MaskRule) problem() string {
	switch m.Scope {
	case ScopePublicIP, ScopeAllIP:
		if len(m.Fields) > 0 {
			return fmt.Sprintf("scope %s takes no fields", m.Scope)
		}
	case ScopeFields:
		if len(m.Fields) == 0 {
			return "scope fields needs at least one field"
		}
	default:
		return fmt.Sprintf("unknown scope %q (want public-ip, all-ip or fields)", m.Scope)
	}
	return m.methodProblem()
}

// methodProblem says what is wrong with a masking rule's method and its parameters.
func (m *MaskRule) methodProblem() string {
	if _, ok := maskOrder[m.Method]; !ok {
		return fmt.Sprintf("unknown method %q (want none, truncate, cryptopan, hmac or remove)", m.Method)
	}
	switch {
	case m.Method == MaskTruncate && (m.Bits == 0 || m.Bits > 128):
		return "truncate needs bits between 1 and 128"
	case m.Method != MaskTruncate && m.Bits != 0:
		return "bits is for truncate only"
	case m.KeyID != "" && m.Method != MaskCryptoPAn && m.Method != MaskHMAC:
		return "key-id is for cryptopan and hmac only"
	case m.KeyID != "" && !ValidKeyID(m.KeyID):
		return fmt.Sprintf("key-id %q is not 1 to %d lower-case letters, digits and hyphens (starting with a letter or digit)", m.KeyID, MaxKeyIDLen)
	}
	return ""
}

// problem says what is wrong with a handling component, or "" if nothing is.
func (h *Handling) problem() string {
	switch {
	case h.TLP != "" && !slices.Contains(TLPLevels, h.TLP):
		return fmt.Sprintf("unknown TLP %q (want one of %s)", h.TLP, strings.Join(TLPLevels, ", "))
	case h.Redistribution != "" && !slices.Contains(RedistributionLevels, h.Redistribution):
		return fmt.Sprintf("unknown redistribution %q (want one of %s)", h.Redistribution, strings.Join(RedistributionLevels, ", "))
	case h.Retention < 0:
		return "negative retention"
	}
	return ""
}
