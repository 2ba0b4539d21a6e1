package policy

import (
	"go/parser"
	"go/token"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docRow is a row of the field table in the package documentation.
type docRow struct {
	field, kind, byName string
	locations           []string // as written; one "derived: ..." text for a derived field
}

// TestDocFields checks the tables of the package documentation against the code: the
// formats of the first table are Formats(), and the field table lists every field of every
// format's view, no other, with its kind, the methods a rule may apply to it by name, and
// exactly the locations its codec reads it from. Whoever adds, drops or moves a field in
// formats.go and not in doc.go (or the other way round) fails here.
func TestDocFields(t *testing.T) {
	blocks := docBlocks(t)
	formatTable, fieldTable := blocks["eve "], blocks["all formats"]
	if formatTable == nil || fieldTable == nil {
		t.Fatalf("doc.go: the table of formats (first line \"eve ...\") or of fields (first line \"all formats\") is missing")
	}
	var listed []string
	for _, l := range formatTable {
		if l != "" && l[0] != ' ' {
			listed = append(listed, strings.Fields(l)[0])
		}
	}
	if want := slices.Sorted(slices.Values(Formats())); !slices.Equal(slices.Sorted(slices.Values(listed)), want) {
		t.Errorf("doc.go lists the formats %v, the code has %v", listed, want)
	}

	table := parseFieldTable(t, fieldTable)
	common := table["all formats"]
	delete(table, "all formats")
	for _, name := range Formats() {
		spec, _ := lookupFormat(name)
		rows, ok := table[name]
		if !ok {
			t.Errorf("doc.go: no fields for format %s", name)
			continue
		}
		delete(table, name)
		maps.Copy(rows, common)
		t.Run(name, func(t *testing.T) {
			checkDocFields(t, spec, rows)
		})
	}
	for name := range table {
		t.Errorf("doc.go lists fields of %s, which is not a format", name)
	}
}

func checkDocFields(t *testing.T, spec *formatSpec, rows map[string]docRow) {
	for field, k := range spec.fields {
		row, ok := rows[field]
		if !ok {
			t.Errorf("field %s (%s) is in the view but not in doc.go", field, k)
			continue
		}
		if row.kind != k.String() {
			t.Errorf("%s: doc.go says %s, the code %s", field, row.kind, k)
		}
		if want := byNameMethods(spec, field); row.byName != want {
			t.Errorf("%s: doc.go says masked by name with %q, the code %q", field, row.byName, want)
		}
	}
	for field := range rows {
		if _, ok := spec.fields[field]; !ok {
			t.Errorf("doc.go lists %s, which is not in the view", field)
		}
	}
	got, known := codecLocations(t, spec)
	if !known {
		return // syslog: the codec reads fixed parts of a line; the table names them in words
	}
	var documented []string
	for _, row := range rows {
		if derived(row) {
			if spec.maskable(row.field) {
				t.Errorf("%s: doc.go says derived, but a rule may name it", row.field)
			}
			continue
		}
		for _, l := range row.locations {
			l = strings.NewReplacer("<source>", iodefSource, "<target>", iodefTarget).Replace(l)
			documented = append(documented, row.field+" <- "+l)
		}
	}
	slices.Sort(documented)
	for _, d := range documented {
		if !slices.Contains(got, d) {
			t.Errorf("doc.go: %s, but the codec reads no such location", d)
		}
	}
	for _, g := range got {
		if !slices.Contains(documented, g) {
			t.Errorf("the codec reads %s, doc.go does not say so", g)
		}
	}
}

func derived(r docRow) bool {
	return len(r.locations) == 1 && strings.HasPrefix(r.locations[0], "derived:")
}

// byNameMethods is what the by-name column says for a field, from what compileMasks allows.
func byNameMethods(spec *formatSpec, field string) string {
	switch {
	case !spec.maskable(field):
		return "-"
	case spec.fields[field] == kindIP:
		return "any"
	default:
		return "remove hmac"
	}
}

// codecLocations lists "field <- location" for every location the format's codec reads, in
// the notation of the table; known is false for a codec whose locations are not data.
func codecLocations(t *testing.T, spec *formatSpec) (locs []string, known bool) {
	t.Helper()
	switch c := spec.codec(0).(type) {
	case *jsonCodec:
		for native, field := range c.paths {
			locs = append(locs, field+" <- "+native)
		}
	case *xmlCodec:
		for _, m := range c.maps {
			locs = append(locs, m.field+" <- "+xmlPathString(m))
		}
	case *syslogCodec:
		return nil, false
	default:
		t.Fatalf("TestDocFields does not know where the codec %T of %s reads its fields: teach codecLocations", c, spec.name)
	}
	slices.Sort(locs)
	return locs, true
}

// xmlPathString writes m back in the notation xpath parses.
func xmlPathString(m xmlMap) string {
	var segs []string
	for _, s := range m.path {
		if s.pattr != "" {
			segs = append(segs, s.local+"["+s.pattr+"="+s.pval+"]")
		} else {
			segs = append(segs, s.local)
		}
	}
	p := strings.Join(segs, "/")
	if m.attr != "" {
		p += "@" + m.attr
	}
	return p
}

var cells = regexp.MustCompile(`\s{2,}`)

// parseFieldTable reads the field table: a line that is not indented names a format (or
// "all formats"); a row is "  field  kind  by-name  location", cells at least two spaces
// apart; a line of one indented cell is one more location of the row above.
func parseFieldTable(t *testing.T, lines []string) map[string]map[string]docRow {
	t.Helper()
	table := map[string]map[string]docRow{}
	var format, last string
	for _, l := range lines {
		if l == "" {
			continue
		}
		if l[0] != ' ' {
			format = strings.TrimSpace(l)
			if _, dup := table[format]; dup {
				t.Errorf("doc.go: format %s twice in the field table", format)
			}
			table[format] = map[string]docRow{}
			continue
		}
		c := cells.Split(strings.TrimSpace(l), -1)
		switch {
		case format == "":
			t.Fatalf("doc.go: field table row %q before any format", l)
		case len(c) == 1 && last != "":
			row := table[format][last]
			row.locations = append(row.locations, c[0])
			table[format][last] = row
		case len(c) == 4:
			if _, dup := table[format][c[0]]; dup {
				t.Errorf("doc.go: %s twice in the fields of %s", c[0], format)
			}
			table[format][c[0]] = docRow{field: c[0], kind: c[1], byName: c[2], locations: []string{c[3]}}
			last = c[0]
		default:
			t.Fatalf("doc.go: field table row %q: want field, kind, by-name, location, two spaces apart", l)
		}
	}
	return table
}

// docBlocks returns the preformatted blocks of the package documentation by the start of
// their first line, each line without the block's indentation.
func docBlocks(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil || f.Doc == nil {
		t.Fatalf("doc.go: %v (or no package comment)", err)
	}
	blocks := map[string][]string{}
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			for _, key := range []string{"eve ", "all formats"} {
				if strings.HasPrefix(cur[0], key) {
					blocks[key] = cur
				}
			}
		}
		cur = nil
	}
	for _, l := range strings.Split(f.Doc.Text(), "\n") {
		if rest, ok := strings.CutPrefix(l, "\t"); ok {
			cur = append(cur, rest)
			continue
		}
		flush()
	}
	flush()
	return blocks
}
