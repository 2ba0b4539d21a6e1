package policy

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ssanet/ssanet/protocol"
)

// Engine limits an SSA must stay within.
const (
	// MaxTopN is the largest top-N a summarisation may ask for.
	MaxTopN = 1000
	// MaxMaskRules and MaxFilters bound the per-record work an SSA can ask for.
	MaxMaskRules = 32
	MaxFilters   = 16
)

// engineID names the SSP encoding; it is part of the hash so that a change of the
// translation changes every SSP's identity.
const engineID = "ssanet-ssp/1"

// KeySource gives the provider's secret 32-byte masking keys of an SSA. With keyID empty it
// gives the SSA's own key, used by the cryptopan and hmac rules that name no key; the
// provider keeps it secret and stable for the life of the SSA, so that the same address or
// name is masked the same way in every record, and it must not return the same key for two
// SSAs. With a keyID (protocol.ValidKeyID) it gives the provider's key of that name, the same
// for every SSA that names it. Keys never leave the provider: an SSA names at most a key ID.
type KeySource func(ssaID, keyID string) ([]byte, error)

// DerivedKeys returns a KeySource that derives each SSA's key from one long-term secret:
// HMAC-SHA256(secret, "ssanet policy key\x00" + SSA ID). It knows no named key.
func DerivedKeys(secret []byte) KeySource {
	s := slices.Clone(secret)
	return func(ssaID, keyID string) ([]byte, error) {
		if keyID != "" {
			return nil, fmt.Errorf("%w: no key named %q", ErrKey, keyID)
		}
		if len(s) < 16 {
			return nil, fmt.Errorf("%w: secret of %d bytes, want at least 16", ErrKey, len(s))
		}
		return subKey(s, "ssanet policy key\x00"+ssaID), nil
	}
}

// StaticKey returns a KeySource that gives the same 32-byte key for every SSA and every key
// ID: for a one-off run from the command line, not for an agent.
func StaticKey(key []byte) KeySource {
	k := slices.Clone(key)
	return func(string, string) ([]byte, error) {
		if len(k) != 32 {
			return nil, fmt.Errorf("%w: key of %d bytes, want 32", ErrKey, len(k))
		}
		return k, nil
	}
}

func subKey(k []byte, label string) []byte {
	h := hmac.New(sha256.New, k)
	h.Write([]byte(label))
	return h.Sum(nil)
}

// SSP is the Security information Sharing Policy compiled from an agreed SSA (clause 8): what
// the SSP enforcement point applies to raw records and what the requester verifies received
// records against. It is immutable and safe for concurrent use.
type SSP struct {
	ssaID       string
	version     uint32
	formats     []*formatSpec
	masks       []maskRule
	filters     []*filter
	summary     *protocol.Summarization
	handling    protocol.Handling
	hasHandling bool
	schedule    protocol.Schedule
	// providerKey is the SSA's secret key; nil when compiled without a KeySource (the
	// requester's side), or when no rule needs it. Without the keys its rules need, an SSP
	// verifies but cannot enforce (CanEnforce).
	providerKey []byte
	hash        [sha256.Size]byte
}

// Check tells whether the engine can enforce the policy of ssa, without any key: the
// negotiation point calls it at proposal time. The error is a *Refusal (errors.Is
// ErrUnenforceable) whose Problem the negotiation reports.
func Check(ssa *protocol.SSA) error { return (*Compiler)(nil).Check(ssa) }

// Compile translates an SSA into its SSP. keys gives the provider's keys of the cryptopan and
// hmac rules: the per-SSA secret key, and the keys the rules name by key ID; a key it cannot
// give is an error. keys may be nil on the requester's side, and the SSP then verifies but
// does not enforce such rules. Compilation is deterministic: the same SSA gives an SSP with
// the same hash, whatever the keys.
func Compile(ssa *protocol.SSA, keys KeySource) (*SSP, error) {
	return (*Compiler)(nil).Compile(ssa, keys)
}

// Check is the package's Check, with c's compiled expressions.
func (c *Compiler) Check(ssa *protocol.SSA) error {
	_, err := c.Compile(ssa, nil)
	return err
}

// Compile is the package's Compile, with c's compiled expressions.
func (c *Compiler) Compile(ssa *protocol.SSA, keys KeySource) (*SSP, error) {
	if ssa == nil {
		return nil, refuse(ProblemInvalid, "", "no SSA")
	}
	if err := ssa.Validate(); err != nil {
		return nil, refuse(ProblemInvalid, "", "%v", err)
	}
	p := &SSP{ssaID: ssa.ID, version: ssa.Version, schedule: ssa.Schedule}
	var names []string
	for _, in := range ssa.Information {
		names = append(names, in.Format)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil, refuse(ProblemNoInformation, "information", "the SSA names no information")
	}
	for _, n := range names {
		spec, ok := lookupFormat(n)
		if !ok {
			return nil, refuse(ProblemUnsupportedFormat, "information", "format %q is not one of %s", n, strings.Join(Formats(), ", "))
		}
		p.formats = append(p.formats, spec)
	}
	pol := ssa.Policy
	if pol == nil {
		pol = &protocol.Policy{}
	}
	if err := p.compileMasks(pol.Masking); err != nil {
		return nil, err
	}
	if len(pol.Filtering) > MaxFilters {
		return nil, refuse(ProblemLimit, "filtering", "%d filters, limit %d", len(pol.Filtering), MaxFilters)
	}
	for _, f := range pol.Filtering {
		cf, err := c.compileFilter(f.Expr, p.formats)
		if err != nil {
			return nil, err
		}
		p.filters = append(p.filters, cf)
	}
	if s := pol.Summarization; s != nil {
		if err := p.checkSummary(s); err != nil {
			return nil, err
		}
		c := *s
		p.summary = &c
	}
	if pol.Handling != nil {
		p.handling, p.hasHandling = *pol.Handling, true
	}
	if keys != nil {
		if err := p.resolveKeys(keys); err != nil {
			return nil, err
		}
	}
	h, err := p.canonical()
	if err != nil {
		return nil, err
	}
	p.hash = sha256.Sum256(h)
	return p, nil
}

func (p *SSP) compileMasks(rules []protocol.MaskRule) error {
	if len(rules) > MaxMaskRules {
		return refuse(ProblemLimit, "masking", "%d rules, limit %d", len(rules), MaxMaskRules)
	}
	ipScoped := false
	for _, r := range rules {
		ipScoped = ipScoped || r.Scope != protocol.ScopeFields && r.Method != protocol.MaskNone
	}
	for i, r := range rules {
		m := maskRule{Scope: r.Scope, Method: r.Method, Bits: int(r.Bits), KeyID: r.KeyID}
		if r.Scope == protocol.ScopeFields {
			m.Fields = slices.Clone(r.Fields)
			slices.Sort(m.Fields)
			m.Fields = slices.Compact(m.Fields)
			for _, f := range m.Fields {
				for _, spec := range p.formats {
					k, ok := spec.fields[f]
					if !ok {
						return refuse(ProblemUnknownField, "masking", "masking[%d]: %q is not in the view of %s", i, f, spec.name)
					}
					if !spec.maskable(f) {
						return refuse(ProblemMethod, "masking", "masking[%d]: %q of %s is derived and cannot be masked by name (use scope all-ip or public-ip)", i, f, spec.name)
					}
					if (r.Method == protocol.MaskTruncate || r.Method == protocol.MaskCryptoPAn) && k != kindIP {
						return refuse(ProblemMethod, "masking", "masking[%d]: %s applies to addresses, %q of %s is a %s", i, r.Method, f, spec.name, k)
					}
					if r.Method == protocol.MaskNone && ipScoped && k != kindInt && k != kindTime {
						return refuse(ProblemConflict, "masking", "masking[%d]: %q must stay readable but an address scope rule also masks it", i, f)
					}
				}
			}
		}
		p.masks = append(p.masks, m)
	}
	slices.SortStableFunc(p.masks, func(a, b maskRule) int {
		if c := cmp.Compare(methodOrder[a.Method], methodOrder[b.Method]); c != 0 {
			return c
		}
		return cmp.Compare(scopeOrder(a.Scope), scopeOrder(b.Scope))
	})
	return nil
}

func scopeOrder(s string) int {
	if s == protocol.ScopeFields {
		return 0
	}
	return 1
}

func (p *SSP) checkSummary(s *protocol.Summarization) error {
	if s.TopN > MaxTopN {
		return refuse(ProblemLimit, "summarization", "top %d, limit %d", s.TopN, MaxTopN)
	}
	for _, spec := range p.formats {
		k, ok := spec.fields[s.GroupBy]
		if !ok || k == kindIPList {
			return refuse(ProblemUnknownField, "summarization", "group-by %q is not a single-valued field of the view of %s", s.GroupBy, spec.name)
		}
		if s.RankBy != protocol.RankByCount {
			if k, ok := spec.fields[s.RankBy]; !ok || k != kindInt {
				return refuse(ProblemRankBy, "summarization", "rank-by %q is neither count nor a numeric field of the view of %s", s.RankBy, spec.name)
			}
		}
	}
	for _, m := range p.masks {
		if m.Scope != protocol.ScopeFields || m.Method == protocol.MaskNone {
			continue
		}
		if m.hasField(s.GroupBy) && m.Method == protocol.MaskRemove {
			return refuse(ProblemConflict, "summarization", "group-by %q is removed by masking", s.GroupBy)
		}
		if s.RankBy != protocol.RankByCount && m.hasField(s.RankBy) {
			return refuse(ProblemConflict, "summarization", "rank-by %q is masked", s.RankBy)
		}
	}
	return nil
}

// resolveKeys asks keys for every key the masking rules need: each key ID's, and the SSA's
// own key if a rule names none.
func (p *SSP) resolveKeys(keys KeySource) error {
	get := func(keyID string) ([]byte, error) {
		k, err := keys(p.ssaID, keyID)
		if err == nil && len(k) != 32 {
			err = fmt.Errorf("%w: %d bytes, want 32", ErrKey, len(k))
		}
		if err != nil {
			if keyID != "" {
				return nil, fmt.Errorf("policy: masking key %q of SSA %q: %w", keyID, p.ssaID, err)
			}
			return nil, fmt.Errorf("policy: masking key of SSA %q: %w", p.ssaID, err)
		}
		return slices.Clone(k), nil
	}
	for i := range p.masks {
		m := &p.masks[i]
		if !m.keyed() || m.KeyID == "" {
			continue
		}
		k, err := get(m.KeyID)
		if err != nil {
			return err
		}
		m.namedKey = k
	}
	if p.needsProviderKey() {
		k, err := get("")
		if err != nil {
			return err
		}
		p.providerKey = k
	}
	return nil
}

func (p *SSP) needsProviderKey() bool {
	return slices.ContainsFunc(p.masks, func(m maskRule) bool { return m.keyed() && m.KeyID == "" })
}

// sspWire is what the hash is computed over, encoded by protocol.Marshal (the encoding of
// everything ssanet signs). Integer keys, never renumbered. Keys never appear, nor anything computed from one: a named key is represented
// by its key ID, the provider's secret by "provider". The requester, which holds no key,
// computes the same hash; a fingerprint of a key would also let anyone holding the hash
// test a guessed key, and link the SSAs that share one.
type sspWire struct {
	Engine   string                  `cbor:"1,keyasint"`
	SSA      string                  `cbor:"2,keyasint"`
	Version  uint32                  `cbor:"3,keyasint"`
	Formats  []string                `cbor:"4,keyasint"`
	Masks    []maskWire              `cbor:"5,keyasint"`
	Filters  []string                `cbor:"6,keyasint"`
	Summary  *protocol.Summarization `cbor:"7,keyasint,omitempty"`
	Handling *protocol.Handling      `cbor:"8,keyasint,omitempty"`
	Schedule protocol.Schedule       `cbor:"9,keyasint"`
}

type maskWire struct {
	Scope  string   `cbor:"1,keyasint"`
	Fields []string `cbor:"2,keyasint,omitempty"`
	Method string   `cbor:"3,keyasint"`
	Bits   int      `cbor:"4,keyasint,omitempty"`
	Key    string   `cbor:"5,keyasint,omitempty"`
}

func (p *SSP) canonical() ([]byte, error) {
	w := sspWire{Engine: engineID, SSA: p.ssaID, Version: p.version, Formats: p.Formats(), Schedule: p.schedule, Summary: p.summary}
	for _, m := range p.masks {
		mw := maskWire{Scope: m.Scope, Fields: m.Fields, Method: m.Method, Bits: m.Bits}
		switch {
		case m.KeyID != "":
			mw.Key = "key-id:" + m.KeyID
		case m.keyed():
			mw.Key = "provider"
		}
		w.Masks = append(w.Masks, mw)
	}
	for _, f := range p.filters {
		w.Filters = append(w.Filters, f.expr)
	}
	if p.hasHandling {
		h := p.handling
		w.Handling = &h
	}
	b, err := protocol.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("policy: encode SSP: %w", err)
	}
	return b, nil
}

// Hash is the SSP's identity: the hex SHA-256 of its canonical CBOR encoding. The provider
// and the requester compute the same hash from the same SSA.
func (p *SSP) Hash() string { return hex.EncodeToString(p.hash[:]) }

// SSAID is the identifier of the SSA the SSP was compiled from.
func (p *SSP) SSAID() string { return p.ssaID }

// Formats lists the formats the SSP covers, sorted.
func (p *SSP) Formats() []string {
	var n []string
	for _, f := range p.formats {
		n = append(n, f.name)
	}
	return n
}

// Schedule is the SSA's schedule.
func (p *SSP) Schedule() protocol.Schedule { return p.schedule }

// CanEnforce reports whether the SSP holds every key its masking needs: false for an SSP
// with cryptopan or hmac rules compiled without a KeySource.
func (p *SSP) CanEnforce() bool {
	return (p.providerKey != nil || !p.needsProviderKey()) &&
		!slices.ContainsFunc(p.masks, func(m maskRule) bool { return m.KeyID != "" && m.namedKey == nil })
}

func (p *SSP) format(name string) (*formatSpec, bool) {
	for _, f := range p.formats {
		if f.name == name {
			return f, true
		}
	}
	return nil, false
}

// newMasker readies the masking rules with their keys.
func (p *SSP) newMasker() (*masker, error) {
	m := &masker{cache: map[netip.Addr]netip.Addr{}}
	for i := range p.masks {
		r := &p.masks[i]
		kr := keyedRule{maskRule: r}
		if r.keyed() {
			key := r.namedKey
			switch {
			case r.KeyID != "" && key == nil:
				return nil, fmt.Errorf("%w: SSP of SSA %q was compiled without a KeySource and its %s rule names key %q", ErrKey, p.ssaID, r.Method, r.KeyID)
			case r.KeyID != "":
			case p.providerKey == nil:
				return nil, fmt.Errorf("%w: SSP of SSA %q was compiled without a KeySource and its %s rule names no key", ErrKey, p.ssaID, r.Method)
			default:
				key = subKey(p.providerKey, "ssanet policy "+r.Method)
			}
			if r.Method == protocol.MaskCryptoPAn {
				c, err := NewCryptoPAn(key)
				if err != nil {
					return nil, err
				}
				kr.cpan = c
			} else {
				kr.hkey = key
			}
		}
		m.rules = append(m.rules, kr)
	}
	return m, nil
}
