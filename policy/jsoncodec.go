package policy

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of a record (JSON and XML).
const maxDepth = 64

// jsonCodec reads and writes one JSON object per record in a single pass: it copies the
// bytes it does not change and decodes only the strings that may hold an address or that
// belong to the normalised view, so a record is never turned into a generic tree.
type jsonCodec struct {
	paths map[string]string // native dotted path ("*" for array elements) -> view field
	// slots are the native paths the format's schema types as an address.
	slots map[string]slot
	// required top-level keys; version, if set, is a key whose string value must start with
	// versionPrefix.
	required      []string
	version       string
	versionPrefix string
}

type jsonRW struct {
	c     *jsonCodec
	in    []byte
	i     int
	out   []byte
	w     *walker
	path  []byte
	seen  uint64
	spans [4]ipSpan
}

func (c *jsonCodec) refine(dst, raw []byte, w *walker) ([]byte, error) {
	p := jsonRW{c: c, in: raw, out: dst, w: w}
	p.ws()
	if p.i >= len(p.in) || p.in[p.i] != '{' {
		return dst, p.errf("want a JSON object")
	}
	if _, err := p.object(0); err != nil {
		return dst, err
	}
	p.ws()
	if p.i != len(p.in) {
		return dst, p.errf("data after the object")
	}
	for k, name := range c.required {
		if p.seen&(1<<k) == 0 {
			return dst, fmt.Errorf("%w: no %q member", ErrFormat, name)
		}
	}
	w.finish()
	return p.out, nil
}

func (p *jsonRW) errf(format string, a ...any) error {
	return fmt.Errorf("%w: byte %d: %s", ErrFormat, p.i, fmt.Sprintf(format, a...))
}

func (p *jsonRW) ws() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonRW) peek() byte {
	if p.i < len(p.in) {
		return p.in[p.i]
	}
	return 0
}

func (p *jsonRW) object(depth int) (bool, error) {
	if depth >= maxDepth {
		return false, p.errf("nested deeper than %d", maxDepth)
	}
	p.i++
	p.out = append(p.out, '{')
	base := len(p.path)
	p.ws()
	if p.peek() == '}' {
		p.i++
		p.out = append(p.out, '}')
		return false, nil
	}
	for n := 0; ; {
		p.ws()
		if p.peek() != '"' {
			return false, p.errf("want a member name")
		}
		mark := len(p.out)
		if n > 0 {
			p.out = append(p.out, ',')
		}
		kraw, esc, err := p.str()
		if err != nil {
			return false, err
		}
		key := string(kraw)
		if esc {
			key = unescapeJSON(kraw)
		}
		if base > 0 {
			p.path = append(p.path, '.')
		}
		p.path = append(p.path, key...)
		if depth == 0 {
			for k, r := range p.c.required {
				if r == key {
					p.seen |= 1 << k
				}
			}
		}
		if mk := p.w.key(key); mk != key {
			p.out = appendJSONString(p.out, mk)
		} else {
			p.out = append(p.out, '"')
			p.out = append(p.out, kraw...)
			p.out = append(p.out, '"')
		}
		p.ws()
		if p.peek() != ':' {
			return false, p.errf("want ':'")
		}
		p.i++
		p.out = append(p.out, ':')
		p.ws()
		vstart := p.i
		drop, err := p.value(depth + 1)
		if err != nil {
			return false, err
		}
		if depth == 0 && p.c.version != "" && key == p.c.version {
			if err := p.checkVersion(vstart); err != nil {
				return false, err
			}
		}
		if drop {
			p.out = p.out[:mark]
		} else {
			n++
		}
		p.path = p.path[:base]
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			p.out = append(p.out, '}')
			return false, nil
		default:
			return false, p.errf("want ',' or '}'")
		}
	}
}

func (p *jsonRW) checkVersion(start int) error {
	v := p.in[start:p.i]
	pre := p.c.versionPrefix
	if len(v) < len(pre)+2 || v[0] != '"' || string(v[1:1+len(pre)]) != pre {
		return fmt.Errorf("%w: %s is %s, want %s…", ErrFormat, p.c.version, v, pre)
	}
	return nil
}

func (p *jsonRW) array(depth int) error {
	if depth >= maxDepth {
		return p.errf("nested deeper than %d", maxDepth)
	}
	p.i++
	p.out = append(p.out, '[')
	base := len(p.path)
	if base > 0 {
		p.path = append(p.path, '.')
	}
	p.path = append(p.path, '*')
	defer func() { p.path = p.path[:base] }()
	p.ws()
	if p.peek() == ']' {
		p.i++
		p.out = append(p.out, ']')
		return nil
	}
	for n := 0; ; {
		p.ws()
		mark := len(p.out)
		if n > 0 {
			p.out = append(p.out, ',')
		}
		drop, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		if drop {
			p.out = p.out[:mark]
		} else {
			n++
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			p.out = append(p.out, ']')
			return nil
		default:
			return p.errf("want ',' or ']'")
		}
	}
}

// value reads one value at the current path and writes it; drop means it was removed.
func (p *jsonRW) value(depth int) (bool, error) {
	switch c := p.peek(); {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return false, p.array(depth)
	case c == '"':
		return p.stringValue()
	case c == '-' || c >= '0' && c <= '9':
		return p.numberValue()
	case c == 't':
		return false, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return false, p.literal("null")
	}
	return false, p.errf("want a value")
}

func (p *jsonRW) field() string {
	if len(p.c.paths) == 0 {
		return ""
	}
	return p.w.named(p.c.paths[string(p.path)])
}

func (p *jsonRW) stringValue() (bool, error) {
	start := p.i
	raw, esc, err := p.str()
	if err != nil {
		return false, err
	}
	field := p.field()
	w := p.w
	// A \u escape can hide a dot or a colon, so such strings are always decoded. Masking and
	// checking look at an unnamed string only for its addresses.
	if field == "" && !w.wantIPs && (w.mask == nil && w.check == nil || !esc && (!mayHoldIP(raw) || len(findIPs(p.spans[:0], raw)) == 0) || esc && !mayHoldIP(raw) && !bytes.Contains(raw, []byte(`\u`))) {
		p.out = append(p.out, p.in[start:p.i]...)
		return false, nil
	}
	s := string(raw)
	if esc {
		s = unescapeJSON(raw)
	}
	out, drop := w.slotText(field, s, p.c.slots[string(p.path)])
	if drop {
		return true, nil
	}
	if out == s {
		p.out = append(p.out, p.in[start:p.i]...)
	} else {
		p.out = appendJSONString(p.out, out)
	}
	return false, nil
}

func (p *jsonRW) numberValue() (bool, error) {
	start := p.i
	in := p.in
	if p.peek() == '-' {
		p.i++
	}
	digits := func() int {
		s := p.i
		for p.i < len(in) && in[p.i] >= '0' && in[p.i] <= '9' {
			p.i++
		}
		return p.i - s
	}
	if p.peek() == '0' {
		p.i++
	} else if digits() == 0 {
		return false, p.errf("bad number")
	}
	if p.peek() == '.' {
		p.i++
		if digits() == 0 {
			return false, p.errf("bad number")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if digits() == 0 {
			return false, p.errf("bad number")
		}
	}
	field := p.field()
	if field == "" {
		p.out = append(p.out, in[start:p.i]...)
		return false, nil
	}
	out, drop, quoted := p.w.number(field, string(in[start:p.i]), p.c.slots[string(p.path)])
	switch {
	case drop:
		return true, nil
	case quoted:
		p.out = appendJSONString(p.out, out)
	default:
		p.out = append(p.out, out...)
	}
	return false, nil
}

func (p *jsonRW) literal(lit string) error {
	if len(p.in)-p.i < len(lit) || string(p.in[p.i:p.i+len(lit)]) != lit {
		return p.errf("want %s", lit)
	}
	p.i += len(lit)
	p.out = append(p.out, lit...)
	return nil
}

// str reads a string token and returns its raw contents (without quotes) and whether it
// holds escapes.
func (p *jsonRW) str() ([]byte, bool, error) {
	p.i++
	start := p.i
	esc := false
	in := p.in
	for p.i < len(in) {
		c := in[p.i]
		switch {
		case c == '"':
			raw := in[start:p.i]
			p.i++
			return raw, esc, nil
		case c == '\\':
			esc = true
			if p.i+1 >= len(in) {
				return nil, false, p.errf("unterminated string")
			}
			switch in[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(in) || !isHex4(in[p.i+2:p.i+6]) {
					return nil, false, p.errf("bad \\u escape")
				}
				p.i += 6
			default:
				return nil, false, p.errf("bad escape")
			}
		case c < 0x20:
			return nil, false, p.errf("control character in string")
		default:
			p.i++
		}
	}
	return nil, false, p.errf("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func hexVal(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// unescapeJSON decodes the contents of a string token already checked by str.
func unescapeJSON(raw []byte) string {
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
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
			r := hexVal(raw[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2 := utf16.DecodeRune(r, hexVal(raw[i+2:i+6])); r2 != utf8.RuneError {
					r = r2
					i += 6
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default: // " \ /
			b = append(b, raw[i+1])
		}
		i += 2
	}
	return string(b)
}

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
