package policy

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// dumpXML writes the trees of nodes, every field a node has after parsing.
func dumpXML(b *strings.Builder, nodes []*xnode, depth int) {
	for _, n := range nodes {
		// mayIP says whether text is scanned for addresses at all: a scanner that said
		// false wrongly would let an address through unmasked.
		fmt.Fprintf(b, "%s%d %q %q %q %t", strings.Repeat(" ", depth), n.kind, n.name, n.local, n.text, n.mayIP)
		for _, a := range n.attrs {
			fmt.Fprintf(b, " [%q %q %q %t]", a.space, a.local, a.value, a.mayIP)
		}
		b.WriteByte('\n')
		dumpXML(b, n.kids, depth+1)
	}
}

// referenceTree is the tree encoding/xml's tokens give raw, with its root's place in the
// dump.
func referenceTree(raw []byte) (string, error) {
	t := &xmlTree{d: xml.NewDecoder(bytes.NewReader(raw))}
	t.d.Strict = true
	if err := t.read(); err != nil {
		return "", err
	}
	return treeString(t.top, t.root), nil
}

func treeString(top []*xnode, root *xnode) string {
	var b strings.Builder
	dumpXML(&b, top, 0)
	for i, n := range top {
		if n == root {
			fmt.Fprintf(&b, "root %d\n", i)
		}
	}
	return b.String()
}

// xmlScannerSeeds are the XML documents of testdata and of the equivalence test, and
// fragments at the edges of what the scanner reads.
func xmlScannerSeeds(tb testing.TB) [][]byte {
	seeds := [][]byte{
		readTestdata(tb, "idmef/secef-gateway-test-alert.xml"),
		readTestdata(tb, "idmef/rfc4765-portscan.xml"),
		readTestdata(tb, "iodef/rfc7970-scan.xml"),
	}
	for _, s := range []string{idmefCorners, iodefCorners} {
		for _, l := range strings.Split(s, "\n") {
			seeds = append(seeds, []byte(l))
		}
	}
	for _, s := range []string{
		`<a/>`, `<a></a>`, `<a:b xmlns:a="x"/>`, `<:a/>`, `<a:/>`, `<a:b:c/>`, `<a b:c:d="1"/>`,
		`<a x="1"y='2'/>`, `<a x = "1" />`, `<a x=1/>`, `<a x/>`, `<a>&lt;&gt;&amp;&apos;&quot;</a>`,
		`<a>&#65;&#x41;&#x0041;&#x;&#0;</a>`, `<a>&#xD800;</a>`, `<a>&#1114111;</a>`, `<a>&#1114112;</a>`,
		`<a>&#X41;</a>`, `<a>&ltx;</a>`, `<a>&lt</a>`, `<a>]]></a>`, `<a>]]&gt;</a>`, `<a x="]]>"/>`,
		`<a x="<"/>`, "<a>\x00</a>", "<a>\x7f\u00e9\ufffe</a>", "<a>\xff</a>", "<a>\r\n</a>",
		`<a><![CDATA[x]]></a>`, `<!DOCTYPE a><a/>`, `<a><!----></a>`, `<a><!-- a -- b --></a>`,
		`<a><!---></a>`, `<?xml version="1.0"?><a/>`, `<?xml version="1.1"?><a/>`,
		`<?xml version='1.0' encoding='utf-8' standalone='yes'?><a/>`, `<?xml encoding="latin1"?><a/>`,
		`<?xml?><a/>`, `<?xmlx y?><a/>`, `<?x??><a/>`, `<a><?p ?></a>`, `<a></b>`, `<a></a >`,
		`<a></a`, `<a>`, `<a/><b/>`, ` <a/> `, `x<a/>`, `<a/>x`, "\u00a0<a/>", "\ufeff<a/>",
		`<é/>`, `<aé/>`, `<a é="1"/>`, `<1/>`, `<.a/>`, `<-a/>`, `<_a.-1/>`, `< a/>`, `<a/ >`,
		"<a>\t\n x</a>", `<a x="&#10;&#9;&#13;"/>`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// FuzzXMLScanner: a document the scanner reads gives the tree that encoding/xml's tokens
// give (and encoding/xml reads it too), with its nodes reused from another document.
func FuzzXMLScanner(f *testing.F) {
	seeds := xmlScannerSeeds(f)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var sc xmlScanner
		sc.read(seeds[0]) // leaves nodes, with their slices, to be reused
		top, root, ok := sc.read(raw)
		if !ok {
			return // read by encoding/xml
		}
		want, err := referenceTree(raw)
		if err != nil {
			t.Fatalf("the scanner reads %q, encoding/xml refuses it: %v", raw, err)
		}
		if got := treeString(top, root); got != want {
			t.Fatalf("%q:\nscanner:\n%s\nencoding/xml:\n%s", raw, got, want)
		}
	})
}

// TestXMLScannerReads: the scanner reads the documents of testdata and the benchmark's, so
// that encoding/xml is left only the unusual ones.
func TestXMLScannerReads(t *testing.T) {
	var docs [][]byte
	for _, f := range []string{protocol.FormatIDMEF, protocol.FormatIODEF} {
		docs = append(docs, benchRecords(t, f, len(benchSamples[f].files))...)
	}
	var sc xmlScanner
	for _, d := range docs {
		if _, _, ok := sc.read(d); !ok {
			t.Errorf("the scanner leaves to encoding/xml:\n%s", d)
		}
	}
	var declined int
	for _, s := range xmlScannerSeeds(t) {
		if _, _, ok := sc.read(s); !ok {
			declined++
		}
	}
	if declined == 0 {
		t.Error("the scanner declines none of the seeds: they do not reach its edges")
	}
}

// TestXMLScannerMutations is FuzzXMLScanner on documents mutated at random, with a fixed
// seed, from its seeds: bytes replaced, inserted and deleted, drawn mostly from the markup.
func TestXMLScannerMutations(t *testing.T) {
	seeds := xmlScannerSeeds(t)
	rng := rand.New(rand.NewPCG(19, 19))
	const alphabet = "<>/?!-=\"'&#;:x[]]CDATA \n\tamp;lt;#x41;\u00e9\xff\x00\r"
	var sc xmlScanner
	read := 0
	for range 20000 {
		doc := slices.Clone(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(3) {
			i := rng.IntN(len(doc) + 1)
			c := alphabet[rng.IntN(len(alphabet))]
			switch op := rng.IntN(3); {
			case op == 0 && i < len(doc):
				doc[i] = c
			case op == 1 && i < len(doc):
				doc = slices.Delete(doc, i, i+1)
			default:
				doc = slices.Insert(doc, i, c)
			}
		}
		top, root, ok := sc.read(doc)
		if !ok {
			continue
		}
		read++
		want, err := referenceTree(doc)
		if err != nil {
			t.Fatalf("the scanner reads %q, encoding/xml refuses it: %v", doc, err)
		}
		if got := treeString(top, root); got != want {
			t.Fatalf("%q:\nscanner:\n%s\nencoding/xml:\n%s", doc, got, want)
		}
	}
	t.Logf("%d of 20000 mutated documents read by the scanner", read)
}
