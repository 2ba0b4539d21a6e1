package policy

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// xmlCodec reads and writes one XML document per record. The document is kept as a tree of
// everything the decoder reports — elements with their qualified names and every attribute,
// text, comments, processing instructions, directives — so that what the engine does not
// model is written back unchanged. Only the layout inside tags (attribute quoting, spacing)
// and the escaping of text are normalised.
type xmlCodec struct {
	root       string   // local name of the root element
	namespaces []string // namespaces the root may be in
	// single names the root's children of which a record may hold at most one: the
	// normalised view describes one alert or incident, so a document with several is
	// refused rather than half filtered.
	single []string
	kinds  []string // the event.kind of each of single: its name in lower case
	maps   []xmlMap
	// scan reads the documents it can; a codec is therefore made per Enforcer or Verifier
	// (xmlFormat) and is not safe for concurrent use.
	scan xmlScanner
}

// xmlMap binds the text of an element, or one of its attributes, to a view field.
type xmlMap struct {
	path  []xseg
	attr  string
	field string
}

type xseg struct{ local, pattr, pval string }

// xpath parses "A/B[attr=value]/C@attr" (local names, from the root's children down).
func xpath(field, p string) xmlMap {
	m := xmlMap{field: field}
	if i := strings.IndexByte(p, '@'); i >= 0 {
		p, m.attr = p[:i], p[i+1:]
	}
	for _, s := range strings.Split(p, "/") {
		seg := xseg{local: s}
		if i := strings.IndexByte(s, '['); i >= 0 {
			seg.local = s[:i]
			kv := strings.TrimSuffix(s[i+1:], "]")
			seg.pattr, seg.pval, _ = strings.Cut(kv, "=")
		}
		m.path = append(m.path, seg)
	}
	return m
}

type xkind uint8

const (
	xElem xkind = iota
	xText
	xComment
	xProcInst
	xDirective
)

type xnode struct {
	kind  xkind
	name  string // qualified name as written (elements), target (processing instructions)
	local string
	attrs []xattr
	kids  []*xnode
	text  string
	field string
	mayIP bool // text: mayHoldIP(text), known from the scan
}

type xattr struct {
	space, local string
	value        string
	field        string
	drop         bool
	mayIP        bool // mayHoldIP(value), known from the scan
}

func (a *xattr) qname() string {
	if a.space == "" {
		return a.local
	}
	return a.space + ":" + a.local
}

func (n *xnode) attr(local string) (string, bool) {
	for _, a := range n.attrs {
		if a.local == local {
			return a.value, true
		}
	}
	return "", false
}

const maxXMLNodes = 1 << 16

func (c *xmlCodec) refine(dst, raw []byte, w *walker) ([]byte, error) {
	doc, root, err := c.parse(raw)
	if err != nil {
		return dst, err
	}
	for _, m := range c.maps {
		c.bind(root, m.path, m)
	}
	if w.named("event.kind") != "" {
		w.value("event.kind", c.eventKind(root))
	}
	for _, n := range doc {
		walkXML(n, w)
	}
	w.finish()
	if w.check != nil && w.mask == nil {
		return dst, nil // a Verifier does not read the document as written
	}
	for i, n := range doc {
		if n == root {
			// What follows the root is white space or comments; the record ends here.
			doc = append(doc[:i+1], trimTail(doc[i+1:])...)
			break
		}
	}
	for _, n := range doc {
		dst = writeXML(dst, n)
	}
	return dst, nil
}

// trimTail drops the white space after the root element, keeping comments and processing
// instructions.
func trimTail(tail []*xnode) []*xnode {
	var keep []*xnode
	for _, n := range tail {
		if n.kind != xText {
			keep = append(keep, n)
		}
	}
	return keep
}

func (c *xmlCodec) eventKind(root *xnode) string {
	for _, k := range root.kids {
		if k.kind != xElem {
			continue
		}
		for i, s := range c.single {
			if k.local == s {
				return c.kinds[i]
			}
		}
		return strings.ToLower(k.local)
	}
	return ""
}

// parse reads one document: its top-level nodes and its root element, which must be the
// format's. The scanner reads the documents it can; encoding/xml reads the others, and
// words the errors.
func (c *xmlCodec) parse(raw []byte) ([]*xnode, *xnode, error) {
	top, root, ok := c.scan.read(raw)
	if !ok {
		t := &xmlTree{d: xml.NewDecoder(bytes.NewReader(raw))}
		t.d.Strict = true
		if err := t.read(); err != nil {
			return nil, nil, err
		}
		top, root = t.top, t.root
	}
	if err := c.checkRoot(root); err != nil {
		return nil, nil, err
	}
	return top, root, nil
}

// xmlTree builds the tree of one document from the decoder's tokens.
type xmlTree struct {
	d *xml.Decoder
	xmlNodes
}

// xmlNodes is what a reader of a document builds (xmlTree, xmlScanner).
type xmlNodes struct {
	top   []*xnode // the document's top-level nodes, the root among them
	stack []*xnode // the elements open at this point
	root  *xnode
	nodes int
}

// read builds the whole tree: one root element, closed, at most maxXMLNodes nodes.
func (t *xmlTree) read() error {
	for {
		tok, err := t.d.RawToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrFormat, err)
		}
		if t.nodes++; t.nodes > maxXMLNodes {
			return t.bad("more than %d nodes", maxXMLNodes)
		}
		if err := t.token(tok); err != nil {
			return err
		}
	}
	if len(t.stack) > 0 {
		return t.bad("unclosed element <%s>", t.stack[len(t.stack)-1].name)
	}
	if t.root == nil {
		return fmt.Errorf("%w: no root element", ErrFormat)
	}
	return nil
}

func (t *xmlTree) token(tok xml.Token) error {
	switch tok := tok.(type) {
	case xml.StartElement:
		return t.start(tok)
	case xml.EndElement:
		if len(t.stack) == 0 || t.stack[len(t.stack)-1].name != qname(tok.Name) {
			return t.bad("unexpected end tag </%s>", qname(tok.Name))
		}
		t.stack = t.stack[:len(t.stack)-1]
	case xml.CharData:
		if len(t.stack) == 0 && len(bytes.TrimSpace(tok)) > 0 {
			return t.bad("text outside the root element")
		}
		t.add(&xnode{kind: xText, text: string(tok), mayIP: mayHoldIP([]byte(tok))})
	case xml.Comment:
		t.add(&xnode{kind: xComment, text: string(tok)})
	case xml.ProcInst:
		t.add(&xnode{kind: xProcInst, name: tok.Target, text: string(tok.Inst)})
	case xml.Directive:
		t.add(&xnode{kind: xDirective, text: string(tok)})
	}
	return nil
}

func (t *xmlTree) start(tok xml.StartElement) error {
	if len(t.stack) == 0 && t.root != nil {
		return t.bad("a second root element")
	}
	if len(t.stack) >= maxDepth {
		return t.bad("nested deeper than %d", maxDepth)
	}
	n := &xnode{kind: xElem, name: qname(tok.Name), local: tok.Name.Local}
	for _, a := range tok.Attr {
		n.attrs = append(n.attrs, xattr{space: a.Name.Space, local: a.Name.Local, value: a.Value, mayIP: mayHoldIP(a.Value)})
	}
	t.add(n)
	t.stack = append(t.stack, n)
	if t.root == nil {
		t.root = n
	}
	return nil
}

// add appends n to the open element, or to the top level.
func (t *xmlNodes) add(n *xnode) {
	if len(t.stack) > 0 {
		p := t.stack[len(t.stack)-1]
		p.kids = append(p.kids, n)
	} else {
		t.top = append(t.top, n)
	}
}

// bad is a format error located where the decoder is.
func (t *xmlTree) bad(format string, a ...any) error {
	line, col := t.d.InputPos()
	return fmt.Errorf("%w: line %d column %d: %s", ErrFormat, line, col, fmt.Sprintf(format, a...))
}

// checkRoot refuses a root element that is not the format's: another name, another
// namespace, or more than one of the children of which the view describes one.
func (c *xmlCodec) checkRoot(root *xnode) error {
	if root.local != c.root {
		return fmt.Errorf("%w: root element is %s, want %s", ErrFormat, root.name, c.root)
	}
	ns := namespaceOf(root)
	if !slices.Contains(c.namespaces, ns) {
		want := make([]string, len(c.namespaces))
		for i, n := range c.namespaces {
			want[i] = n
			if n == "" {
				want[i] = "none"
			}
		}
		return fmt.Errorf("%w: %s is in namespace %q, want %s", ErrFormat, c.root, ns, strings.Join(want, " or "))
	}
	if prefix, _, ok := strings.Cut(root.name, ":"); ok && ns == "" {
		return fmt.Errorf("%w: the prefix %q of %s is not declared on it", ErrFormat, prefix, root.name)
	}
	count := 0
	for _, k := range root.kids {
		if k.kind == xElem && slices.Contains(c.single, k.local) {
			count++
		}
	}
	if count > 1 {
		return fmt.Errorf("%w: %s holds %d %s: one per record", ErrFormat, c.root, count, strings.Join(c.single, " or "))
	}
	return nil
}

// namespaceOf returns the namespace an element declares, on itself, for the prefix of its
// own name (the default namespace when it has none); "" if it declares none there.
func namespaceOf(n *xnode) string {
	prefix, _, ok := strings.Cut(n.name, ":")
	if !ok {
		prefix = ""
	}
	ns := ""
	for _, a := range n.attrs {
		if prefix == "" && a.space == "" && a.local == "xmlns" || prefix != "" && a.space == "xmlns" && a.local == prefix {
			ns = a.value
		}
	}
	return ns
}

func qname(n xml.Name) string {
	if n.Space == "" {
		return n.Local
	}
	return n.Space + ":" + n.Local
}

// bind marks the nodes a mapping reaches below n.
func (c *xmlCodec) bind(n *xnode, path []xseg, m xmlMap) {
	if len(path) == 0 {
		if m.attr == "" {
			if n.field == "" {
				n.field = m.field
			}
			return
		}
		for i := range n.attrs {
			if n.attrs[i].local == m.attr && n.attrs[i].space != "xmlns" && n.attrs[i].field == "" {
				n.attrs[i].field = m.field
			}
		}
		return
	}
	seg := path[0]
	for _, k := range n.kids {
		if k.kind != xElem || k.local != seg.local {
			continue
		}
		if seg.pattr != "" {
			if v, _ := k.attr(seg.pattr); v != seg.pval {
				continue
			}
		}
		c.bind(k, path[1:], m)
	}
}

// walkXML hands every text of n to w: attribute values, element text, comments,
// processing instructions and directives. Namespace declarations are left alone.
func walkXML(n *xnode, w *walker) {
	switch n.kind {
	case xElem:
		for i := range n.attrs {
			a := &n.attrs[i]
			if a.space == "xmlns" || a.space == "" && a.local == "xmlns" {
				continue
			}
			a.value, a.drop = w.scannedText(a.field, a.value, a.mayIP)
		}
		if n.field != "" {
			walkBoundText(n, w)
		}
		for _, k := range n.kids {
			if n.field != "" && k.kind == xText {
				continue
			}
			walkXML(k, w)
		}
	case xText:
		n.text, _ = w.scannedText("", n.text, n.mayIP)
	case xProcInst:
		if n.name != "xml" {
			n.text, _ = w.unscannedText("", n.text)
		}
	default:
		n.text, _ = w.unscannedText("", n.text)
	}
}

// walkBoundText masks the text of an element bound to a view field as one value, keeping
// the whitespace around it.
func walkBoundText(n *xnode, w *walker) {
	first, texts := -1, 0
	for i, k := range n.kids {
		if k.kind == xText {
			if first < 0 {
				first = i
			}
			texts++
		}
	}
	var all string
	switch texts {
	case 0:
	case 1:
		all = n.kids[first].text
	default:
		var sb strings.Builder
		for _, k := range n.kids {
			if k.kind == xText {
				sb.WriteString(k.text)
			}
		}
		all = sb.String()
	}
	core := strings.TrimSpace(all)
	lead := all[:strings.Index(all, core)]
	trail := all[len(lead)+len(core):]
	out, drop := w.unscannedText(n.field, core)
	if drop {
		out = ""
	}
	if texts == 1 && out == core {
		return // the text as it was
	}
	if first < 0 {
		if out != "" {
			n.kids = append(n.kids, &xnode{kind: xText, text: out})
		}
		return
	}
	kids := n.kids[:0]
	for i, k := range n.kids {
		switch {
		case i == first:
			k.text = lead + out + trail
			kids = append(kids, k)
		case k.kind != xText:
			kids = append(kids, k)
		}
	}
	n.kids = kids
}

func writeXML(dst []byte, n *xnode) []byte {
	switch n.kind {
	case xElem:
		dst = append(dst, '<')
		dst = append(dst, n.name...)
		for _, a := range n.attrs {
			if a.drop {
				continue
			}
			dst = append(dst, ' ')
			dst = append(dst, a.qname()...)
			dst = append(dst, '=', '"')
			dst = appendXMLEscaped(dst, a.value, true)
			dst = append(dst, '"')
		}
		if len(n.kids) == 0 {
			return append(dst, '/', '>')
		}
		dst = append(dst, '>')
		for _, k := range n.kids {
			dst = writeXML(dst, k)
		}
		dst = append(dst, '<', '/')
		dst = append(dst, n.name...)
		return append(dst, '>')
	case xText:
		return appendXMLEscaped(dst, n.text, false)
	case xComment:
		// "--" cannot appear in a comment; a masked value never adds one, an input never has one.
		dst = append(dst, "<!--"...)
		dst = append(dst, n.text...)
		return append(dst, "-->"...)
	case xProcInst:
		dst = append(dst, "<?"...)
		dst = append(dst, n.name...)
		if n.text != "" {
			dst = append(dst, ' ')
			dst = append(dst, n.text...)
		}
		return append(dst, "?>"...)
	default:
		dst = append(dst, "<!"...)
		dst = append(dst, n.text...)
		return append(dst, '>')
	}
}

func appendXMLEscaped(dst []byte, s string, attr bool) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\r':
			esc = "&#xD;"
		case '"':
			esc = "&quot;"
		case '\n':
			esc = "&#x0A;"
		case '\t':
			esc = "&#x09;"
		default:
			continue
		}
		if !attr && (s[i] == '"' || s[i] == '\n' || s[i] == '\t') {
			continue // only an attribute value must escape them
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		last = i + 1
	}
	return append(dst, s[last:]...)
}
