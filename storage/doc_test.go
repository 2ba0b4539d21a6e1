package storage

import (
	"encoding/binary"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDocKeys checks the key layout of the package documentation against the code: every
// key prefix a source file of the package spells (a string literal such as "n/" or
// "m/schema") has a row, every row's prefix is one the code spells, and each row shows the
// key as the package's key functions build it. Whoever adds, drops or reshapes a key in the
// code and not in doc.go (or the other way round) fails here.
func TestDocKeys(t *testing.T) {
	rows := docKeyRows(t)
	inCode := codeKeyLiterals(t)
	// The prefixes of schema versions 1 and 2 that later versions moved, which only their
	// migrations read (migrate.go, migrate_records.go): doc.go names them in its text, not in
	// the table.
	retired := map[string]bool{v1PrefixOutboxState: true, v1PrefixInboxState: true, v1PrefixInboxRun: true, v1PrefixMark: true,
		v2PrefixOutbox: true, v2PrefixInbox: true, v2PrefixMark: true}
	for lit := range inCode {
		pattern, ok := rows[lit[:2]]
		switch {
		case retired[lit]:
		case !ok:
			t.Errorf("the code writes keys %q..., doc.go has no row for them", lit)
		case !strings.HasSuffix(lit, "/") && pattern != lit:
			t.Errorf("the code writes the key %q, doc.go says %q", lit, pattern)
		}
	}
	shapes := keyShapes()
	for prefix, pattern := range rows {
		if !inCode[prefix] && !inCode[pattern] {
			t.Errorf("doc.go documents %s, but no key of the code starts with %q", pattern, prefix)
			continue
		}
		shape, ok := shapes[prefix]
		if !ok {
			t.Errorf("doc.go documents %s: add to keyShapes how the code builds it", pattern)
			continue
		}
		if shape != pattern {
			t.Errorf("doc.go documents %s, the code builds %s", pattern, shape)
		}
	}
}

// keyShapes renders, by prefix, a key of each kind as the key functions build it, with the
// documentation's names in place of its variable parts.
func keyShapes() map[string]string {
	const ssa = "<ssa>"
	// lengthOf is the SSA ID's length that ssaPrefix writes before it.
	lengthOf := string(binary.BigEndian.AppendUint16(nil, uint16(len(ssa))))
	// render replaces the fixed-width fields at the end of k by their names, and the
	// length-prefixed SSA ID by <ssa>.
	render := func(k []byte, tail ...keyField) string {
		s, end := string(k), ""
		for i := len(tail) - 1; i >= 0; i-- {
			s, end = s[:len(s)-tail[i].width], tail[i].name+end
		}
		return strings.Replace(s, lengthOf+ssa, ssa, 1) + end
	}
	evidence := binary.BigEndian.AppendUint64(seqKey(evidencePrefix(ssa), 1), 2)
	return map[string]string{
		"m/": string(keySchema),
		"n/": string(negotiationKey([]byte("<nid>"))),
		"t/": render(transcriptKey([]byte("<nid>"), 1), keyField{4, "<seq>"}),
		"a/": string(agreementKey("<ssaID>")),
		"i/": string(indexKey("<ssaID>")),
		"o/": string(offerKey("<offerID>")),
		"f/": string(filePosKey("<path>")),
		"s/": string(outboxStateKey("<ssaID>")),
		"x/": render(seqKey(outboxPrefix(ssa), 1), keyField{8, "<last>"}),
		"v/": string(inboxStateKey("<ssaID>")),
		"y/": render(seqKey(inboxPrefix(ssa), 1), keyField{8, "<last>"}),
		"u/": render(seqKey(runPrefix(ssa), 1), keyField{8, "<end>"}),
		"e/": render(evidence, keyField{8, "<first>"}, keyField{8, "<at>"}),
		"c/": render(rosterKey(1), keyField{8, "<version>"}),
	}
}

// keyField is a fixed-width number at the end of a key: a uint32 or uint64, big-endian.
type keyField struct {
	width int
	name  string
}

var keyRow = regexp.MustCompile(`^([A-Za-z]/\S*)\s{2,}`)

// docKeyRows returns the key patterns of the documentation's tables by prefix ("n/" ->
// "n/<nid>"): the first cell of each row of a preformatted block that starts with a letter
// and a slash.
func docKeyRows(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil || f.Doc == nil {
		t.Fatalf("doc.go: %v (or no package comment)", err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(f.Doc.Text(), "\n") {
		m := keyRow.FindStringSubmatch(strings.TrimPrefix(l, "\t"))
		if m == nil || !strings.HasPrefix(l, "\t") {
			continue
		}
		if prev, dup := rows[m[1][:2]]; dup {
			t.Errorf("doc.go: two rows for prefix %s: %s and %s", m[1][:2], prev, m[1])
		}
		rows[m[1][:2]] = m[1]
	}
	if len(rows) == 0 {
		t.Fatal("doc.go: no key table")
	}
	return rows
}

// codeKeyLiterals returns every string literal of the package's source (tests aside) that
// looks like a key or a key prefix: a letter and a slash.
func codeKeyLiterals(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	lits := map[string]bool{}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "doc.go" {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if b, ok := n.(*ast.BasicLit); ok && b.Kind == token.STRING {
				if s, err := strconv.Unquote(b.Value); err == nil && len(s) >= 2 && isKeyLetter(s[0]) && s[1] == '/' {
					lits[s] = true
				}
			}
			return true
		})
	}
	return lits
}

func isKeyLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
