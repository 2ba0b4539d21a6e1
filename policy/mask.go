package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

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

// slot says what a value is to the schema of its format, so that masking leaves a value the
// schema accepts there (see the package documentation, "Masking and schemas").
type slot uint8

const (
	slotText         slot = iota // text: an address inside it is replaced in place
	slotAddr                     // an address field: it holds one address or is absent
	slotAddrRequired             // an address field the schema requires
	slotRequired                 // a string the schema requires: remove leaves ""
	slotUUID                     // a UUID the schema requires (RFC 9562 text form)
	slotEmail                    // an e-mail address (JSON Schema format "email")
	slotPort                     // an integer port, 1 to 65535
	slotEnum                     // one of a closed list of values: no token fits
	slotTime                     // a timestamp the schema requires (RFC 3339)
)

// nilUUID is what remove leaves in a required UUID (RFC 9562 section 5.9).
const nilUUID = "00000000-0000-0000-0000-000000000000"

// nilTime is what remove and hmac leave in a required timestamp: the Unix epoch, which no
// security record has; the view takes it as no time at all.
const nilTime = "1970-01-01T00:00:00Z"

// tokenDomain is the domain of an hmac-masked e-mail address: the token is the local part.
// .invalid is reserved (RFC 2606), so no real mailbox has it.
const tokenDomain = "@hmac.invalid"

// removedText stands in free text for an address that remove took out, so that the text
// still reads as a sentence ("from (removed) against (removed)"). It holds no character any
// format must escape where the walker sees raw text (an RFC 5424 structured-data value
// cannot hold an unescaped ']').
const removedText = "(removed)"

// tokenPrefix is the range hmac maps an address into where the schema wants an address
// (slotAddr): 2001:db8::/32, reserved for documentation (RFC 3849), so no real host has one.
var tokenPrefix = netip.MustParsePrefix("2001:db8::/32")

// value returns the masked form of s found at field in slot sl, and whether the value is to
// be removed.
func (m *masker) value(field, s string, sl slot) (string, bool) {
	if !mayHoldIP(s) && !m.names(field) {
		return s, false // no address for a scope, no rule for the field
	}
	for i := range m.rules {
		r := &m.rules[i]
		if r.Method == protocol.MaskNone || !r.applies(field) {
			continue
		}
		a, whole := wholeAddr(s)
		if r.Scope == protocol.ScopeFields {
			switch r.Method {
			case protocol.MaskRemove:
				return removed(a, whole, sl)
			case protocol.MaskHMAC:
				switch sl {
				case slotEnum: // a token is no value of the list: hide it all
					return "", true
				case slotTime:
					return nilTime, false
				}
				s = m.slotToken(r, s, a, whole, sl)
				continue
			}
			s = m.replaceIPs(r, s, false)
			continue
		}
		publicOnly := r.Scope == protocol.ScopePublicIP
		if whole && !tokenPrefix.Contains(a) && (!publicOnly || IsPublic(a)) {
			switch {
			case r.Method == protocol.MaskRemove:
				return removed(a, whole, sl)
			case r.Method == protocol.MaskHMAC && (sl == slotAddr || sl == slotAddrRequired):
				s = m.tokenAddr(r, a).String()
			default:
				s = m.maskAddr(r, a)
			}
			continue
		}
		s = m.replaceIPs(r, s, publicOnly)
	}
	return s, false
}

// appendText appends to dst the masked form of the unnamed text raw, as value("", raw,
// slotText) gives it, from the spans findIPs found in raw: the text is not scanned again and
// no string is made. It does the common case, one rule for the addresses anywhere, and
// reports false, having appended nothing, for the others (more such rules; a value that is
// one address to remove or with space around it). It is a function, not a method of m, for
// raw to be the bytes of a JSON string or an XML text.
func appendText[T string | []byte](m *masker, dst []byte, raw T, spans []ipSpan) ([]byte, bool) {
	var r *keyedRule
	for i := range m.rules {
		if x := &m.rules[i]; x.Method != protocol.MaskNone && x.applies("") {
			if r != nil {
				return dst, false
			}
			r = x
		}
	}
	if r == nil {
		return append(dst, raw...), true
	}
	if sp := spans[0]; len(spans) == 1 && (r.Method == protocol.MaskRemove || sp.start > 0 || sp.end < len(raw)) &&
		blank(raw[:sp.start]) && blank(raw[sp.end:]) {
		return dst, false // a whole address: value trims or removes it
	}
	publicOnly := r.Scope == protocol.ScopePublicIP
	last := 0
	for _, sp := range spans {
		if publicOnly && !IsPublic(sp.addr) || tokenPrefix.Contains(sp.addr) {
			continue
		}
		dst = append(dst, raw[last:sp.start]...)
		if r.Method == protocol.MaskRemove {
			dst = append(dst, removedText...)
		} else {
			dst = m.appendMaskAddr(dst, r, sp.addr)
		}
		last = sp.end
	}
	return append(dst, raw[last:]...), true
}

// blank reports whether s is white space only, as strings.TrimSpace sees it.
func blank[T string | []byte](s T) bool {
	for _, r := range string(s) {
		if !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// appendMaskAddr appends maskAddr(r, a).
func (m *masker) appendMaskAddr(dst []byte, r *keyedRule, a netip.Addr) []byte {
	switch r.Method {
	case protocol.MaskTruncate:
		return Truncate(a, r.Bits).AppendTo(dst)
	case protocol.MaskCryptoPAn:
		if v, ok := m.cache[a]; ok {
			return v.AppendTo(dst)
		}
	}
	return append(dst, m.maskAddr(r, a)...)
}

// names reports whether a rule of scope fields names field.
func (m *masker) names(field string) bool {
	if field == "" {
		return false
	}
	for i := range m.rules {
		if r := &m.rules[i]; r.Scope == protocol.ScopeFields && r.Method != protocol.MaskNone && r.hasField(field) {
			return true
		}
	}
	return false
}

// removed is what remove leaves of a value: nothing, except where the schema requires the
// value: the unspecified address of the same family (0.0.0.0 or ::) in an address field, the
// nil UUID in a UUID, an empty string in a string. None of them names anything.
func removed(a netip.Addr, whole bool, sl slot) (string, bool) {
	switch sl {
	case slotAddrRequired:
		if whole && a.Is6() && !a.Is4In6() {
			return netip.IPv6Unspecified().String(), false
		}
		return netip.IPv4Unspecified().String(), false
	case slotUUID:
		return nilUUID, false
	case slotRequired:
		return "", false
	case slotTime:
		return nilTime, false
	}
	return "", true
}

// slotToken is the hmac of s in the form its slot takes: an address of tokenPrefix in an
// address field, the token in UUID form (8-4-4-4-12) in a UUID, token@hmac.invalid in an
// e-mail address, a port derived from the HMAC in a port; the token itself elsewhere.
func (m *masker) slotToken(r *keyedRule, s string, a netip.Addr, whole bool, sl slot) string {
	switch sl {
	case slotAddr, slotAddrRequired:
		if whole {
			return m.tokenAddr(r, a).String()
		}
	case slotUUID:
		t := m.token(r, s)
		return t[:8] + "-" + t[8:12] + "-" + t[12:16] + "-" + t[16:20] + "-" + t[20:]
	case slotEmail:
		return m.token(r, s) + tokenDomain
	case slotPort:
		h := hmac.New(sha256.New, r.hkey)
		h.Write([]byte(s))
		var sum [sha256.Size]byte
		b := h.Sum(sum[:0])
		return strconv.Itoa(1 + int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))%65535)
	}
	return m.token(r, s)
}

// isSlotToken reports whether v is an hmac-masked value in the form of its slot. A port
// cannot be told from a real one (like cryptopan) and always passes.
func isSlotToken(v string, sl slot) bool {
	if isToken(v) || sl == slotPort || sl == slotTime && v == nilTime {
		return true
	}
	if a, ok := wholeAddr(v); ok && tokenPrefix.Contains(a) {
		return true
	}
	if t, ok := strings.CutSuffix(v, tokenDomain); ok && isToken(t) {
		return true
	}
	return len(v) == hmacTokenLen+4 && v[8] == '-' && v[13] == '-' && v[18] == '-' && v[23] == '-' &&
		isToken(v[:8]+v[9:13]+v[14:18]+v[19:23]+v[24:])
}

// isRemoved reports whether v is what remove leaves where the schema requires a value.
func isRemoved(v string) bool {
	if v == "" || v == "-" || v == nilUUID || v == nilTime {
		return true
	}
	a, ok := wholeAddr(v)
	return ok && a.IsUnspecified()
}

// wholeAddr reports whether s, but for white space around it, is one address literal.
func wholeAddr(s string) (netip.Addr, bool) {
	if !mayHoldIP(s) {
		return netip.Addr{}, false
	}
	t := strings.TrimSpace(s)
	var spans [1]ipSpan
	found := findIPs(spans[:0], t)
	if len(found) != 1 || found[0].start != 0 || found[0].end != len(t) {
		return netip.Addr{}, false
	}
	return found[0].addr, true
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
	changed := false
	for _, sp := range found {
		if publicOnly && !IsPublic(sp.addr) || tokenPrefix.Contains(sp.addr) {
			continue
		}
		b.WriteString(s[last:sp.start])
		if r.Method == protocol.MaskRemove {
			b.WriteString(removedText)
		} else {
			b.WriteString(m.maskAddr(r, sp.addr))
		}
		last, changed = sp.end, true
	}
	if !changed {
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

// tokenAddr is the hmac of address a as an address of tokenPrefix: its low 96 bits are the
// first 12 bytes of the same HMAC as the text token of a, so 2001:db8:522f:e68c:… and the
// token 522fe68c… in a free-text field name the same host.
func (m *masker) tokenAddr(r *keyedRule, a netip.Addr) netip.Addr {
	h := hmac.New(sha256.New, r.hkey)
	h.Write([]byte(a.String()))
	var sum [sha256.Size]byte
	b := h.Sum(sum[:0])
	var x [16]byte
	copy(x[:4], tokenPrefix.Addr().AsSlice())
	copy(x[4:], b[:12])
	return netip.AddrFrom16(x)
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
