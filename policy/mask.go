package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"

	"github.com/ssanet/ssanet/protocol"
)

// methodOrder is the order masking rules are applied in: what hides most first, truncation
// last so that its result (zero low bits) is what the requester sees and can verify.
var methodOrder = map[string]int{
	protocol.MaskRemove:    0,
	protocol.MaskHMAC:      1,
	protocol.MaskCryptoPAn: 2,
	protocol.MaskTruncate:  3,
	protocol.MaskNone:      4,
}

// hmacTokenLen is the length in hex digits of an hmac-masked value: the first 16 bytes of
// HMAC-SHA256(key, value).
const hmacTokenLen = 32

// maskRule is one masking rule of an SSP, in the order it is applied.
type maskRule struct {
	Scope  string
	Fields []string // sorted; scope fields only
	Method string
	Bits   int
	// KeyID names the provider's key of a cryptopan or hmac rule; empty: the per-SSA key.
	KeyID string
	// namedKey is the key KeyID names, from the KeySource; nil without one (the requester).
	namedKey []byte
}

// keyed reports whether the rule masks with a key.
func (r *maskRule) keyed() bool {
	return r.Method == protocol.MaskCryptoPAn || r.Method == protocol.MaskHMAC
}

func (r *maskRule) hasField(f string) bool {
	for _, x := range r.Fields {
		if x == f {
			return true
		}
	}
	return false
}

// applies reports whether the rule covers a value at field ("" for an unnamed location).
func (r *maskRule) applies(field string) bool {
	if r.Scope == protocol.ScopeFields {
		return field != "" && r.hasField(field)
	}
	return true
}

// keyedRule is a maskRule with its key material ready.
type keyedRule struct {
	*maskRule
	cpan *CryptoPAn
	hkey []byte
}

// masker applies an SSP's masking rules to the values of a record. It is built per Enforcer
// and is not safe for concurrent use (it caches CryptoPAn results).
type masker struct {
	rules []keyedRule
	cache map[netip.Addr]netip.Addr
}

const maxCryptoPAnCache = 1 << 16

// text returns the masked form of s found at field, and whether the value is to be removed.
func (m *masker) text(field, s string) (string, bool) {
	for i := range m.rules {
		r := &m.rules[i]
		if r.Method == protocol.MaskNone || !r.applies(field) {
			continue
		}
		if r.Scope == protocol.ScopeFields {
			switch r.Method {
			case protocol.MaskRemove:
				return "", true
			case protocol.MaskHMAC:
				s = m.token(r, s)
				continue
			}
			s = m.replaceIPs(r, s, false)
			continue
		}
		s = m.replaceIPs(r, s, r.Scope == protocol.ScopePublicIP)
	}
	return s, false
}

// key returns the masked form of a JSON object key: only the address scopes apply.
func (m *masker) key(s string) string {
	for i := range m.rules {
		r := &m.rules[i]
		if r.Scope != protocol.ScopeFields && r.Method != protocol.MaskNone {
			s = m.replaceIPs(r, s, r.Scope == protocol.ScopePublicIP)
		}
	}
	return s
}

// replaceIPs rewrites the IP literals of s with the rule's method; publicOnly leaves the
// addresses that are not public alone.
func (m *masker) replaceIPs(r *keyedRule, s string, publicOnly bool) string {
	if !mayHoldIP(s) {
		return s
	}
	var spans [4]ipSpan
	found := findIPs(spans[:0], s)
	if len(found) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range found {
		if publicOnly && !IsPublic(sp.addr) {
			continue
		}
		b.WriteString(s[last:sp.start])
		b.WriteString(m.maskAddr(r, sp.addr))
		last = sp.end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func (m *masker) maskAddr(r *keyedRule, a netip.Addr) string {
	switch r.Method {
	case protocol.MaskTruncate:
		return Truncate(a, r.Bits).String()
	case protocol.MaskCryptoPAn:
		if v, ok := m.cache[a]; ok {
			return v.String()
		}
		v := r.cpan.Anonymize(a)
		if len(m.cache) >= maxCryptoPAnCache {
			clear(m.cache)
		}
		m.cache[a] = v
		return v.String()
	case protocol.MaskHMAC:
		return m.token(r, a.String())
	default: // remove
		return ""
	}
}

func (m *masker) token(r *keyedRule, s string) string {
	h := hmac.New(sha256.New, r.hkey)
	h.Write([]byte(s))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:hmacTokenLen/2])
}

// isToken reports whether s is an hmac-masked value.
func isToken(s string) bool {
	if len(s) != hmacTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
