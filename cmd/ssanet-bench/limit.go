//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ssanet/ssanet/policy"
)

// limitScanner is the yardstick of enforcement: the least work that gives the same output
// as the enforcer under benchPolicy. It drops the records whose event_type is stats, finds
// the IPv4 and IPv6 literals inside the JSON strings of a record and rewrites the public
// ones in place, truncated by 8 bits; it copies every other byte. It knows nothing of
// fields, views or filters, so it is the limit an enforcer can approach. It lives here, and
// only here (issue 19).
type limitScanner struct{}

var statsMember = []byte(`"event_type":"stats"`)

// refine appends the refined record to dst (nothing when it is dropped).
func (limitScanner) refine(dst, rec []byte) []byte {
	if bytes.Contains(rec, statsMember) {
		return dst
	}
	for i := 0; i < len(rec); {
		c := rec[i]
		if c != '"' {
			dst = append(dst, c)
			i++
			continue
		}
		j, esc := i+1, false
		for j < len(rec) && rec[j] != '"' {
			if rec[j] == '\\' {
				esc = true
				j++
			}
			j++
		}
		s := rec[i+1 : min(j, len(rec))]
		if esc {
			// Rare: decode, and encode again only if an address changed.
			if u := unescapeJSON(s); u == "" {
				dst = append(dst, rec[i:min(j+1, len(rec))]...)
			} else if m := limitMask(nil, []byte(u)); string(m) != u {
				dst = appendJSONString(dst, string(m))
			} else {
				dst = append(dst, rec[i:min(j+1, len(rec))]...)
			}
		} else {
			dst = append(dst, '"')
			dst = limitMask(dst, s)
			dst = append(dst, '"')
		}
		i = j + 1
	}
	return append(dst, '\n')
}

// unescapeJSON decodes the contents of a JSON string (between its quotes); "" when it is
// not valid JSON.
func unescapeJSON(raw []byte) string {
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return ""
		}
		switch raw[i+1] {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			if i+6 > len(raw) {
				return ""
			}
			r, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
			if err != nil {
				return ""
			}
			i += 6
			if r1 := rune(r); utf16.IsSurrogate(r1) && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32); err == nil {
					if r3 := utf16.DecodeRune(r1, rune(r2)); r3 != utf8.RuneError {
						r = uint64(r3)
						i += 6
					}
				}
			}
			b = utf8.AppendRune(b, rune(r))
			continue
		default: // " \ /
			b = append(b, raw[i+1])
		}
		i += 2
	}
	return string(b)
}

// appendJSONString appends s as a JSON string, escaped as the enforcer's JSON writer does:
// only what JSON requires.
func appendJSONString(dst []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

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

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// limitMask appends s to dst with its public addresses truncated by 8 bits.
func limitMask(dst, s []byte) []byte {
	last := 0
	for i := 0; i < len(s); {
		if !ipChars[s[i]] {
			i++
			continue
		}
		j, colons, dots := i, 0, 0
		for j < len(s) && ipChars[s[j]] {
			colons += b2i(s[j] == ':')
			dots += b2i(s[j] == '.')
			j++
		}
		switch {
		case colons >= 2:
			e := j
			for e-i > 2 && (s[e-1] == '.' || s[e-1] == ':' && s[e-2] != ':') {
				e--
			}
			if e-i > 45 || (e < len(s) && isWordChar(s[e])) || (i > 0 && isWordChar(s[i-1])) ||
				!bytes.Contains(s[i:e], []byte("::")) && colons != 7 && !(colons == 6 && dots == 3) {
				break
			}
			if a, err := netip.ParseAddr(string(s[i:e])); err == nil && a.Is6() {
				dst = append(dst, s[last:i]...)
				dst = limitAddr(dst, a, s[i:e])
				last = e
			}
		case dots >= 3:
			for k := i; k < j; {
				if !isDigit(s[k]) {
					k++
					continue
				}
				start, groups, ok := k, 0, true
				var q [4]byte
				for {
					g, v := k, 0
					for k < j && isDigit(s[k]) {
						v = min(v*10+int(s[k]-'0'), 1000)
						k++
					}
					ok = ok && k-g <= 3 && v <= 255
					if groups < 4 {
						q[groups] = byte(v)
					}
					groups++
					if k+1 < j && s[k] == '.' && isDigit(s[k+1]) {
						k++
						continue
					}
					break
				}
				if ok && groups == 4 {
					dst = append(dst, s[last:start]...)
					dst = limitAddr(dst, netip.AddrFrom4(q), s[start:k])
					last = k
				}
			}
		}
		i = j
	}
	return append(dst, s[last:]...)
}

// tokenPrefix is the documentation prefix the enforcer keeps as it is (policy's masking
// leaves its own tokens alone).
var tokenPrefix = netip.MustParsePrefix("2001:db8::/32")

// limitAddr appends the truncated address a, or its text as read when a is not public.
func limitAddr(dst []byte, a netip.Addr, text []byte) []byte {
	if !policy.IsPublic(a) || tokenPrefix.Contains(a) {
		return append(dst, text...)
	}
	return policy.Truncate(a, 8).AppendTo(dst)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
