package policy

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// xmlScanner builds the tree of one document, as xmlTree does from encoding/xml's tokens,
// for the documents the engine meets in practice, at a fraction of the cost: it reads the
// document once, takes names, white space and text without references as substrings of one
// copy of the document, and reuses its nodes from one record to the next. It declines,
// leaving the document to encoding/xml (the reference, which also words the errors),
// everything outside that subset: a DOCTYPE or other directive, a CDATA section, an entity
// other than the five predefined ones and character references, a carriage return, a name
// that is not ASCII, an XML declaration of an unusual form, and every error. Where it
// accepts a document, its tree is the one xmlTree builds (FuzzXMLScanner checks it).
// An xmlScanner is not safe for concurrent use.
type xmlScanner struct {
	s string // the document
	i int    // the next byte to read
	xmlNodes
	// slab holds the nodes, in chunks of xmlChunk, reused by the next document with the
	// capacity of their slices; used counts those of this document.
	slab [][]xnode
	used int
	buf  []byte // text with references, decoded
}

const (
	xmlChunk = 64
	// xmlKeptChunks is how many chunks of nodes a scanner keeps between documents.
	xmlKeptChunks = 64
)

// read builds the tree of raw and reports whether it could; the nodes are valid until the
// next call.
func (sc *xmlScanner) read(raw []byte) (top []*xnode, root *xnode, ok bool) {
	if bytes.IndexByte(raw, '\r') >= 0 {
		return nil, nil, false // line ends that encoding/xml rewrites
	}
	if len(sc.slab) > xmlKeptChunks {
		clear(sc.slab[xmlKeptChunks:])
		sc.slab = sc.slab[:xmlKeptChunks]
	}
	*sc = xmlScanner{s: string(raw), xmlNodes: xmlNodes{top: sc.top[:0], stack: sc.stack[:0]}, slab: sc.slab, buf: sc.buf}
	for sc.i < len(sc.s) {
		if sc.nodes++; sc.nodes > maxXMLNodes || !sc.token() {
			return nil, nil, false
		}
	}
	if len(sc.stack) > 0 || sc.root == nil {
		return nil, nil, false
	}
	return sc.top, sc.root, true
}

// node returns a fresh node of the slab.
func (sc *xmlScanner) node(kind xkind) *xnode {
	c, i := sc.used/xmlChunk, sc.used%xmlChunk
	if c == len(sc.slab) {
		sc.slab = append(sc.slab, make([]xnode, xmlChunk))
	}
	sc.used++
	n := &sc.slab[c][i]
	*n = xnode{kind: kind, kids: n.kids[:0], attrs: n.attrs[:0]}
	return n
}

// token reads one token at sc.i and adds it to the tree, as xmlTree.token does.
func (sc *xmlScanner) token() bool {
	s := sc.s
	if s[sc.i] != '<' {
		text, mayIP, ok := sc.text(0)
		if !ok || len(sc.stack) == 0 && strings.TrimSpace(text) != "" {
			return false
		}
		n := sc.node(xText)
		n.text, n.mayIP = text, mayIP
		sc.add(n)
		return true
	}
	sc.i++
	if sc.i == len(s) {
		return false
	}
	switch s[sc.i] {
	case '/':
		sc.i++
		name, _, _, ok := sc.nsname()
		sc.space()
		if !ok || sc.i == len(s) || s[sc.i] != '>' || len(sc.stack) == 0 || sc.stack[len(sc.stack)-1].name != name {
			return false
		}
		sc.i++
		sc.stack = sc.stack[:len(sc.stack)-1]
		return true
	case '?':
		sc.i++
		target, ok := sc.name()
		if !ok {
			return false
		}
		sc.space()
		end := strings.Index(s[sc.i:], "?>")
		if end < 0 {
			return false
		}
		inst := s[sc.i : sc.i+end]
		sc.i += end + 2
		if target == "xml" && !plainXMLDecl(inst) {
			return false
		}
		n := sc.node(xProcInst)
		n.name, n.text = target, inst
		sc.add(n)
		return true
	case '!':
		if !strings.HasPrefix(s[sc.i:], "!--") {
			return false // CDATA, DOCTYPE and other directives
		}
		sc.i += 3
		start := sc.i
		// encoding/xml's reading of a comment: the first "--" ends it, and must be
		// followed by '>'.
		var b0, b1 byte
		for ; ; sc.i++ {
			if sc.i == len(s) {
				return false
			}
			b := s[sc.i]
			if b0 == '-' && b1 == '-' {
				if b != '>' {
					return false
				}
				break
			}
			b0, b1 = b1, b
		}
		sc.i++
		n := sc.node(xComment)
		n.text = s[start : sc.i-3]
		sc.add(n)
		return true
	}
	return sc.start()
}

// start reads a start tag after its '<'.
func (sc *xmlScanner) start() bool {
	if len(sc.stack) == 0 && sc.root != nil || len(sc.stack) >= maxDepth {
		return false
	}
	name, _, local, ok := sc.nsname()
	if !ok {
		return false
	}
	n := sc.node(xElem)
	n.name, n.local = name, local
	s := sc.s
	for {
		sc.space()
		if sc.i == len(s) {
			return false
		}
		if s[sc.i] == '/' || s[sc.i] == '>' {
			break
		}
		_, space, local, ok := sc.nsname()
		if !ok {
			return false
		}
		sc.space()
		if sc.i == len(s) || s[sc.i] != '=' {
			return false
		}
		sc.i++
		sc.space()
		if sc.i == len(s) || s[sc.i] != '"' && s[sc.i] != '\'' {
			return false
		}
		q := s[sc.i]
		sc.i++
		value, mayIP, ok := sc.text(q)
		if !ok {
			return false
		}
		sc.i++ // the closing quote
		n.attrs = append(n.attrs, xattr{space: space, local: local, value: value, mayIP: mayIP})
	}
	sc.add(n)
	if sc.root == nil {
		sc.root = n
	}
	if s[sc.i] == '/' {
		if sc.i+1 == len(s) || s[sc.i+1] != '>' {
			return false
		}
		sc.i += 2
		sc.nodes++ // the end element encoding/xml reports
		return sc.nodes <= maxXMLNodes
	}
	sc.i++
	sc.stack = append(sc.stack, n)
	return true
}

// space skips white space.
func (sc *xmlScanner) space() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\n', '\t':
			sc.i++
		default:
			return
		}
	}
}

// name reads an ASCII XML name.
func (sc *xmlScanner) name() (string, bool) {
	s, start := sc.s, sc.i
	if start == len(s) || !(isNameByte(s[start]) && (s[start] < '0' || s[start] > '9') && s[start] != '.' && s[start] != '-') {
		return "", false
	}
	i := start + 1
	for i < len(s) && isNameByte(s[i]) {
		i++
	}
	if i < len(s) && s[i] >= utf8.RuneSelf {
		return "", false // a name that goes on beyond ASCII
	}
	sc.i = i
	return s[start:i], true
}

// nsname reads a name and splits it as encoding/xml does: at its one colon, unless that
// leaves an empty part.
func (sc *xmlScanner) nsname() (name, space, local string, ok bool) {
	name, ok = sc.name()
	if !ok || strings.Count(name, ":") > 1 {
		return "", "", "", false
	}
	if sp, l, found := strings.Cut(name, ":"); found && sp != "" && l != "" {
		return name, sp, l, true
	}
	return name, "", name, true
}

// isNameByte reports whether c may be part of an ASCII XML name.
func isNameByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == ':' || c == '.' || c == '-'
}

// text reads character data up to '<' (q == 0) or up to the quote q of an attribute value,
// and returns it with its references replaced, and whether it may hold an IP address
// (mayHoldIP, counted on the way).
func (sc *xmlScanner) text(q byte) (text string, mayIP, ok bool) {
	s, start := sc.s, sc.i
	decoded := false
	dots, colons := 0, 0
	sc.buf = sc.buf[:0]
	last := start // decoded: s[last:i] is still to be copied to buf
	i := start
	for i < len(s) {
		c := s[i]
		switch {
		case c == '.':
			dots++
			i++
			continue
		case c == ':':
			colons++
			i++
			continue
		case c == '<':
			if q != 0 {
				return "", false, false
			}
		case c == q && q != 0:
		case c == '&':
			r, n := charRef(s[i:])
			if n == 0 {
				return "", false, false
			}
			sc.buf = utf8.AppendRune(append(sc.buf, s[last:i]...), r)
			decoded = true
			i += n
			last = i
			continue
		case c == '>' && q == 0 && i-start >= 2 && s[i-2] == ']' && s[i-1] == ']':
			return "", false, false // "]]>" outside a CDATA section
		case c < ' ' && c != '\t' && c != '\n':
			return "", false, false
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 || !isXMLChar(r) {
				return "", false, false
			}
			i += n
			continue
		default:
			i++
			continue
		}
		break
	}
	if q != 0 && i == len(s) {
		return "", false, false
	}
	sc.i = i
	if !decoded {
		return s[start:i], dots >= 3 || colons >= 2, true
	}
	sc.buf = append(sc.buf, s[last:i]...)
	return string(sc.buf), mayHoldIP(sc.buf), true // a reference may be a dot or a colon
}

// charRef reads the reference at the start of s: a predefined entity or a character
// reference to a character XML allows. n is its length, 0 for another.
func charRef(s string) (r rune, n int) {
	for _, e := range [...]struct {
		ref string
		r   rune
	}{{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&apos;", '\''}, {"&quot;", '"'}} {
		if strings.HasPrefix(s, e.ref) {
			return e.r, len(e.ref)
		}
	}
	if !strings.HasPrefix(s, "&#") {
		return 0, 0
	}
	i, base := 2, rune(10)
	if strings.HasPrefix(s, "&#x") {
		i, base = 3, 16
	}
	digits := i
	for ; i < len(s) && i-digits < 8; i++ {
		c := rune(s[i])
		switch {
		case '0' <= c && c <= '9':
			r = r*base + c - '0'
		case base == 16 && 'a' <= c && c <= 'f':
			r = r*base + c - 'a' + 10
		case base == 16 && 'A' <= c && c <= 'F':
			r = r*base + c - 'A' + 10
		default:
			if c != ';' || i == digits || !isXMLChar(r) {
				return 0, 0
			}
			return r, i + 1
		}
	}
	return 0, 0
}

// isXMLChar reports whether XML allows r in a document.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// plainXMLDecl reports whether inst, the content of an XML declaration, is one of the plain
// forms (version 1.0, encoding UTF-8, standalone) whose reading by encoding/xml is clear.
func plainXMLDecl(inst string) bool {
	for inst != "" {
		var p string
		if i := strings.IndexAny(inst, " \t\n"); i >= 0 {
			p, inst = inst[:i], inst[i+1:]
		} else {
			p, inst = inst, ""
		}
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, "=")
		if !ok || len(v) < 2 || v[0] != v[len(v)-1] || v[0] != '"' && v[0] != '\'' {
			return false
		}
		switch v = v[1 : len(v)-1]; k {
		case "version":
			ok = v == "1.0"
		case "encoding":
			ok = strings.EqualFold(v, "utf-8")
		case "standalone":
			ok = v == "yes" || v == "no"
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
	return true
}
