package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
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
	// required top-level keys; version, if set, is a key whose string value must start with
	// versionPrefix.
	required      []string
	version       string
	versionPrefix string
	// shared holds paths and the paths the format's schema gives a slot, by segment, so
	// that a value's path is matched as it is read, without building it; it is the
	// format's, never changed. tree is shared, or for a walker that does not name every
	// field the codec's own copy, named for that walker (namedBy). A jsonCodec is not safe
	// for concurrent use.
	shared  *pathNode
	tree    *pathNode
	namedBy *walker
}

// pathNode is a native path of a jsonCodec's paths or slots, or a prefix of one. A path
// is the member names from the root joined by dots ("*" for an array element); the tree
// splits it at every dot, so a member name holding a dot matches as the path it makes.
type pathNode struct {
	field string // the view field of the path, "" if none
	slot  slot
	kids  []pathKid // sorted by segment
	// first, for a node of many kids, indexes them by first byte: the kids whose segment
	// starts with c are kids[first[c]:first[c+1]].
	first *[257]uint16
	// named is field as the walker names it (walker.named): field itself in a format's
	// tree, for a walker that names every field.
	named string
}

type pathKid struct {
	seg  string
	node *pathNode
}

func newPathTree(paths map[string]string, slots map[string]slot) *pathNode {
	root := &pathNode{}
	add := func(path string) *pathNode {
		n := root
		for seg := range strings.SplitSeq(path, ".") {
			n = n.addKid(seg)
		}
		return n
	}
	for path, f := range paths {
		n := add(path)
		n.field, n.named = f, f
	}
	for path, sl := range slots {
		add(path).slot = sl
	}
	root.index()
	return root
}

// namedFor returns a copy of the tree of root n whose nodes hold their field as w names it.
func (n *pathNode) namedFor(w *walker) *pathNode {
	c := *n
	c.named = w.named(n.field)
	c.kids = make([]pathKid, len(n.kids))
	for i, k := range n.kids {
		c.kids[i] = pathKid{k.seg, k.node.namedFor(w)}
	}
	return &c
}

// index sorts the kids of n and of its descendants and indexes those of many.
func (n *pathNode) index() {
	slices.SortFunc(n.kids, func(a, b pathKid) int { return strings.Compare(a.seg, b.seg) })
	if len(n.kids) > 4 {
		n.first = new([257]uint16)
		for c := range 256 {
			n.first[c+1] = n.first[c]
			for _, k := range n.kids {
				if k.seg != "" && int(k.seg[0]) == c {
					n.first[c+1]++
				}
			}
		}
		// Kids with an empty segment sort first and are never looked up by first byte.
		if len(n.kids) > 0 && n.kids[0].seg == "" {
			for c := range n.first {
				n.first[c]++
			}
		}
	}
	for _, k := range n.kids {
		k.node.index()
	}
}

func (n *pathNode) addKid(seg string) *pathNode {
	for _, k := range n.kids {
		if k.seg == seg {
			return k.node
		}
	}
	k := &pathNode{}
	n.kids = append(n.kids, pathKid{seg, k})
	return k
}

// kid returns the node of the path n's path continued by the member name key (split at its
// dots), nil if no path of the tree starts so.
func (n *pathNode) kid(key []byte) *pathNode {
	if n == nil || len(n.kids) == 0 {
		return nil
	}
	kids := n.kids
	if n.first != nil && len(key) > 0 {
		kids = kids[n.first[key[0]]:n.first[int(key[0])+1]]
	}
	for _, k := range kids {
		if len(k.seg) == len(key) && k.seg == string(key) {
			return k.node
		}
	}
	// No segment holds a dot: a name with one continues the path by several segments.
	if i := bytes.IndexByte(key, '.'); i >= 0 {
		return n.kid(key[:i]).kid(key[i+1:])
	}
	return nil
}

// at is a position in the path tree: the node of the path so far (nil: no path of the tree
// starts with it) and whether that path is still empty (a leading empty member name adds
// nothing to a path, not even a dot).
type at struct {
	node  *pathNode
	empty bool
}

// in returns the position after the member name key (or "*" for an array element).
func (a at) in(key []byte) at {
	if a.empty {
		if len(key) == 0 {
			return a
		}
		return at{node: a.node.kid(key)}
	}
	if a.node == nil {
		return a
	}
	return at{node: a.node.kid(key)}
}

type jsonRW struct {
	c     *jsonCodec
	in    []byte
	i     int
	out   []byte
	w     *walker
	at    at
	seen  uint64
	spans [4]ipSpan
	// copy is false for a walker that only checks (the Verifier), which does not read the
	// record as written: the bytes that are copied unchanged (member names, unnamed strings
	// and numbers, literals) are then skipped, and out holds only the record's structure.
	copy bool
}

func (c *jsonCodec) refine(dst, raw []byte, w *walker) ([]byte, error) {
	switch {
	case w.relevant == nil:
		c.tree, c.namedBy = c.shared, nil
	case c.namedBy != w:
		c.tree, c.namedBy = c.shared.namedFor(w), w
	}
	p := jsonRW{c: c, in: raw, out: dst, w: w, at: at{node: c.tree, empty: true}, copy: w.check == nil || w.mask != nil}
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
	if p.i < len(p.in) && p.in[p.i] > ' ' {
		return // the usual case: compact JSON
	}
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
	base := p.at
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
		kraw, esc, mayIP, err := p.str()
		if err != nil {
			return false, err
		}
		// The name as decoded: the raw bytes themselves unless it holds an escape, so that
		// no string is made for the names that hold no address (nearly all).
		key := kraw
		if esc {
			key = []byte(unescapeJSON(kraw))
			mayIP = mayHoldIP(key)
		}
		p.at = base.in(key)
		if depth == 0 {
			for k, r := range p.c.required {
				if r == string(key) {
					p.seen |= 1 << k
				}
			}
		}
		if mk, ok := p.maskedKey(key, mayIP); ok {
			p.out = appendJSONString(p.out, mk)
		} else {
			if p.copy {
				p.out = append(p.out, '"')
				p.out = append(p.out, kraw...)
				p.out = append(p.out, '"')
			}
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
		if depth == 0 && p.c.version != "" && string(key) == p.c.version {
			if err := p.checkVersion(vstart); err != nil {
				return false, err
			}
		}
		if drop {
			p.out = p.out[:mark]
		} else {
			n++
		}
		p.at = base
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

// maskedKey hands the member name key to the walker and returns what to write instead of
// it, if anything; mayIP is mayHoldIP(key).
func (p *jsonRW) maskedKey(key []byte, mayIP bool) (string, bool) {
	if !mayIP {
		// Nothing to the walker: key would return it unchanged and record nothing (only
		// the address scopes apply to a name, and the checker reads it only for addresses).
		return "", false
	}
	if w := p.w; w.check != nil && w.mask == nil && !w.wantIPs {
		// Read by the checker only, for its addresses: checked from the spans found.
		if spans := findIPs(p.spans[:0], key); len(spans) > 0 {
			w.check.unnamed(spans)
		}
		return "", false
	}
	ks := string(key)
	mk := p.w.key(ks)
	return mk, mk != ks
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
	base := p.at
	p.at = base.in(elemSeg)
	defer func() { p.at = base }()
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

// elemSeg is the path segment of an array element.
var elemSeg = []byte("*")

// field returns the view field at the current path, if the walker needs to know it.
func (p *jsonRW) field() string {
	if n := p.at.node; n != nil {
		return n.named
	}
	return ""
}

// slot returns the slot of the current path.
func (p *jsonRW) slot() slot {
	if n := p.at.node; n != nil {
		return n.slot
	}
	return slotText
}

func (p *jsonRW) stringValue() (bool, error) {
	start := p.i
	raw, esc, mayIP, err := p.str()
	if err != nil {
		return false, err
	}
	field := p.field()
	w := p.w
	if field == "" && !w.wantIPs && w.check != nil && w.mask == nil &&
		(!esc || !mayIP && !bytes.Contains(raw, []byte(`\u`))) {
		// Unnamed text that the checker reads only for its addresses: checked from the spans
		// found, as it is. A \u escape can hide a dot or a colon, so such strings are always
		// decoded.
		if !esc && mayIP {
			if spans := findIPs(p.spans[:0], raw); len(spans) > 0 {
				w.check.unnamed(spans)
			}
		}
		if p.copy {
			p.out = append(p.out, p.in[start:p.i]...)
		}
		return false, nil
	}
	if field == "" && !w.wantIPs && w.check == nil {
		// Unnamed text that only the masker reads (in no slot of the schema): scanned once, and rewritten from the
		// spans found. A \u escape can hide a dot or a colon, so such strings are always
		// decoded.
		switch {
		case w.mask == nil || esc && !mayIP && !bytes.Contains(raw, []byte(`\u`)):
			p.out = append(p.out, p.in[start:p.i]...)
			return false, nil
		case !esc && p.slot() == slotText:
			var spans []ipSpan
			if mayIP {
				spans = findIPs(p.spans[:0], raw)
			}
			if len(spans) == 0 {
				p.out = append(p.out, p.in[start:p.i]...)
				return false, nil
			}
			mark := len(p.out)
			p.out = append(p.out, '"')
			if out, ok := appendText(w.mask, p.out, raw, spans); ok {
				p.out = append(out, '"')
				return false, nil
			}
			p.out = p.out[:mark]
		}
	}
	s := string(raw)
	if esc {
		s = unescapeJSON(raw)
	}
	out, drop := w.slotText(field, s, p.slot())
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
		if p.copy {
			p.out = append(p.out, in[start:p.i]...)
		}
		return false, nil
	}
	out, drop, quoted := p.w.number(field, string(in[start:p.i]), p.slot())
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
	if p.copy {
		p.out = append(p.out, lit...)
	}
	return nil
}

// strClass sorts the bytes of a string token for str: the ones it must stop at, and the dots
// and colons it counts.
var strClass = func() (t [256]uint8) {
	for c := range 0x20 {
		t[c] = classControl
	}
	t['"'], t['\\'], t['.'], t[':'] = classQuote, classEscape, classDot, classColon
	return t
}()

const (
	classPlain = iota
	classControl
	classQuote
	classEscape
	classDot
	classColon
)

// str reads a string token and returns its raw contents (without quotes), whether it holds
// escapes, and whether it may hold an IP literal (mayHoldIP of the contents as written).
func (p *jsonRW) str() (raw []byte, esc, mayIP bool, err error) {
	p.i++
	start := p.i
	in := p.in
	dots, colons := 0, 0
	for p.i < len(in) {
		c := in[p.i]
		switch strClass[c] {
		case classPlain:
			p.i++
		case classDot:
			dots++
			p.i++
		case classColon:
			colons++
			p.i++
		case classQuote:
			raw := in[start:p.i]
			p.i++
			return raw, esc, dots >= 3 || colons >= 2, nil
		case classEscape:
			esc = true
			if p.i+1 >= len(in) {
				return nil, false, false, p.errf("unterminated string")
			}
			switch in[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(in) || !isHex4(in[p.i+2:p.i+6]) {
					return nil, false, false, p.errf("bad \\u escape")
				}
				p.i += 6
			default:
				return nil, false, false, p.errf("bad escape")
			}
		default:
			return nil, false, false, p.errf("control character in string")
		}
	}
	return nil, false, false, p.errf("unterminated string")
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
