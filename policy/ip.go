package policy

import (
	"net/netip"
)

// ipSpan is an IP address literal found at s[start:end] of some text.
type ipSpan struct {
	start, end int
	addr       netip.Addr
}

// findIPs appends to dst every IP address literal of s, in order and without overlap.
//
// The scan looks at maximal runs of the characters [0-9A-Fa-f.:]. A run with two colons or
// more is tried as an IPv6 address (starting at each of its first groups, so "id:2001:db8::1"
// still yields 2001:db8::1), and must not touch a letter, digit or underscore on either side.
// Otherwise the decimal pieces of the run are tried as IPv4 dotted quads: exactly four groups
// of one to three digits, each at most 255 (leading zeros accepted). Longer dotted sequences
// (OIDs, version numbers such as 1.3.6.1.4.1) are not addresses. Letters do not bound an IPv4
// literal: "host1.2.3.4" yields 1.2.3.4, erring on the side of masking.
func findIPs[T string | []byte](dst []ipSpan, s T) []ipSpan {
	n := len(s)
	for i := 0; i < n; {
		if !isIPChar(s[i]) {
			i++
			continue
		}
		j, colons, dots := i, 0, 0
		for j < n && isIPChar(s[j]) {
			switch s[j] {
			case ':':
				colons++
			case '.':
				dots++
			}
			j++
		}
		if colons >= 2 {
			if sp, ok := findV6(s, i, j); ok {
				dst = append(dst, sp)
				i = j
				continue
			}
		}
		if dots >= 3 {
			dst = findV4(dst, s, i, j)
		}
		i = j
	}
	return dst
}

func isIPChar(c byte) bool { return ipChars[c] }

// ipChars marks the characters of an address literal: hex digits, '.' and ':'.
var ipChars = func() (t [256]bool) {
	for _, c := range []byte("0123456789abcdefABCDEF.:") {
		t[c] = true
	}
	return t
}()

func isWordChar(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// findV6 finds an IPv6 literal in the run s[i:j]: the first of the candidates starting at
// the run or at one of its first groups that parses and is bounded by non-word characters.
func findV6[T string | []byte](s T, i, j int) (ipSpan, bool) {
	// Trailing punctuation (end of sentence, "addr:") is not part of the address.
	for j-i > 2 && (s[j-1] == '.' || s[j-1] == ':' && s[j-2] != ':') {
		j--
	}
	for i < j && s[i] == '.' {
		i++
	}
	if j < len(s) && isWordChar(s[j]) {
		return ipSpan{}, false
	}
	// An IPv6 literal holds no dot, or the three of an embedded IPv4 address: this rules
	// out time stamps (15:01:09.820360) cheaply. Without "::" it has seven colons, or six
	// before an IPv4 address, and the candidates below drop at most seven of the run's: this
	// rules out MAC addresses and long fingerprints before any of them is parsed.
	dots, colons, double := 0, 0, false
	for k := i; k < j; k++ {
		switch s[k] {
		case '.':
			dots++
		case ':':
			colons++
			double = double || k > i && s[k-1] == ':'
		}
	}
	if dots != 0 && dots != 3 || !double && (colons < 6 || colons > 14) {
		return ipSpan{}, false
	}
	tries := 0
	for b := i; b < j && tries < 8; b++ {
		if b > i && s[b-1] != ':' {
			continue // not at a group start
		}
		if s[b] == ':' && (b+1 >= j || s[b+1] != ':') {
			continue // a lone colon separates, "::" starts an address
		}
		tries++
		if b == i && b > 0 && isWordChar(s[b-1]) {
			continue
		}
		if j-b > 64 {
			continue
		}
		if a, ok := parseV6(s[b:j]); ok {
			return ipSpan{start: b, end: j, addr: a}, true
		}
	}
	return ipSpan{}, false
}

// parseV6 parses s as an IPv6 literal without a zone: it accepts what netip.ParseAddr
// accepts as an IPv6 address (TestParseV6 compares them), but fails without allocating,
// and first rejects cheaply the runs of hex digits and colons that are no address: MAC
// addresses, TLS fingerprints, serial numbers (a group of more than four digits, more than
// eight colons, or fewer than seven without "::").
func parseV6[T string | []byte](s T) (netip.Addr, bool) {
	colons, double, group := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ':':
			colons++
			double = double || i > 0 && s[i-1] == ':'
			group = 0
		case '.':
			if colons == 0 {
				return netip.Addr{}, false // netip reads it as IPv4
			}
			group = 0
		default:
			if group++; group > 4 {
				return netip.Addr{}, false
			}
		}
	}
	if colons > 8 || colons < 7 && !double && countDots(s) == 0 {
		return netip.Addr{}, false
	}
	var ip [16]byte
	ellipsis := -1 // position of the ellipsis in ip
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis = 0
		s = s[2:]
		if len(s) == 0 {
			return netip.IPv6Unspecified(), true
		}
	}
	i := 0
	for i < 16 {
		off := 0
		acc := uint32(0)
	digits:
		for ; off < len(s); off++ {
			c := s[off]
			switch {
			case c >= '0' && c <= '9':
				acc = acc<<4 + uint32(c-'0')
			case c >= 'a' && c <= 'f':
				acc = acc<<4 + uint32(c-'a'+10)
			case c >= 'A' && c <= 'F':
				acc = acc<<4 + uint32(c-'A'+10)
			default:
				break digits
			}
			if off > 3 {
				return netip.Addr{}, false
			}
		}
		if off == 0 {
			return netip.Addr{}, false
		}
		if off < len(s) && s[off] == '.' {
			// A trailing IPv4 address, in the last 32 bits.
			if ellipsis < 0 && i != 12 || i+4 > 16 || !parseV4Fields(s, ip[i:i+4]) {
				return netip.Addr{}, false
			}
			s = s[len(s):]
			i += 4
			break
		}
		ip[i], ip[i+1] = byte(acc>>8), byte(acc)
		i += 2
		s = s[off:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return netip.Addr{}, false
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false
			}
			ellipsis = i
			s = s[1:]
			if len(s) == 0 {
				break
			}
		}
	}
	if len(s) != 0 {
		return netip.Addr{}, false
	}
	if i < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		n := 16 - i
		for j := i - 1; j >= ellipsis; j-- {
			ip[j+n] = ip[j]
		}
		clear(ip[ellipsis : ellipsis+n])
	} else if ellipsis >= 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16(ip), true
}

// parseV4Fields parses s as a dotted quad in netip's strict form (no leading zeros) into f.
func parseV4Fields[T string | []byte](s T, f []byte) bool {
	val, pos, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return false
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return false
			}
		case c == '.':
			if i == 0 || i == len(s)-1 || s[i-1] == '.' || pos == 3 {
				return false
			}
			f[pos] = byte(val)
			pos++
			val, digits = 0, 0
		default:
			return false
		}
	}
	if pos < 3 {
		return false
	}
	f[3] = byte(val)
	return true
}

// findV4 appends the dotted quads of the run s[i:j].
func findV4[T string | []byte](dst []ipSpan, s T, i, j int) []ipSpan {
	for k := i; k < j; {
		if !isDigit(s[k]) {
			k++
			continue
		}
		// A sequence of non-empty decimal groups separated by single dots.
		start, groups := k, 0
		var b [4]byte
		ok := true
		for {
			g := k
			v := 0
			for k < j && isDigit(s[k]) {
				v = v*10 + int(s[k]-'0')
				k++
				if v > 999 {
					v = 1000
				}
			}
			if k-g > 3 || v > 255 {
				ok = false
			}
			if groups < 4 {
				b[groups] = byte(v)
			}
			groups++
			if k+1 < j && s[k] == '.' && isDigit(s[k+1]) {
				k++
				continue
			}
			break
		}
		if ok && groups == 4 {
			dst = append(dst, ipSpan{start: start, end: k, addr: netip.AddrFrom4(b)})
		}
	}
	return dst
}

func countDots[T string | []byte](s T) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			n++
		}
	}
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// mayHoldIP is a cheap test that s could hold an IP literal.
func mayHoldIP[T string | []byte](s T) bool {
	dots, colons := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '.':
			dots++
		case ':':
			colons++
		}
	}
	return dots >= 3 || colons >= 2
}

// notPublic4 and notPublic6 list the IANA special-purpose blocks that are not globally
// reachable (RFC 6890 registries). They are never modified.
var notPublic4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast 224/4 and reserved 240/4
}

var notPublic6 = []netip.Prefix{
	netip.MustParsePrefix("2001::/23"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("3fff::/20"),
}

var global6 = netip.MustParsePrefix("2000::/3")

// IsPublic reports whether a is a public address: globally reachable unicast. IPv4 addresses
// outside the special-purpose blocks of RFC 6890 (private, loopback, link-local, shared,
// documentation, benchmarking, multicast, reserved) are public; IPv6 addresses are public in
// 2000::/3 outside 2001::/23, 2001:db8::/32, 2002::/16 and 3fff::/20. An IPv4-mapped IPv6
// address is judged by its IPv4 address.
func IsPublic(a netip.Addr) bool {
	a = a.Unmap()
	if a.Is4() {
		for _, p := range notPublic4 {
			if p.Contains(a) {
				return false
			}
		}
		return true
	}
	if !global6.Contains(a.WithZone("")) {
		return false
	}
	for _, p := range notPublic6 {
		if p.Contains(a.WithZone("")) {
			return false
		}
	}
	return true
}

// Truncate zeroes the low bits bits of a. The count is the same for both families: 8 bits
// zero the last octet of an IPv4 address and the last 8 of the 128 bits of an IPv6 address
// (an IPv4-mapped address is a 128-bit address). More bits than the address has zero it all.
func Truncate(a netip.Addr, bits int) netip.Addr {
	keep := max(a.BitLen()-bits, 0)
	p, err := a.WithZone("").Prefix(keep)
	if err != nil {
		return a
	}
	return p.Addr()
}
