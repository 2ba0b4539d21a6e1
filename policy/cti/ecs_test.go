package cti

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssanet/ssanet/protocol"
)

// ecsField is an entry of ECS's ecs_flat.yml.
type ecsField struct {
	Type           string                  `yaml:"type"`
	ObjectType     string                  `yaml:"object_type"`
	Normalize      []string                `yaml:"normalize"`
	AllowedValues  []struct{ Name string } `yaml:"allowed_values"`
	ExpectedValues []string                `yaml:"expected_values"`
}

func loadECS(t testing.TB) map[string]ecsField {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ecs", "ecs_flat.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]ecsField
	if err := yaml.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	if len(fields) < 1000 {
		t.Fatalf("ecs_flat.yml holds %d fields", len(fields))
	}
	return fields
}

// flatten turns a nested document into dotted names, stopping at labels (an object field).
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && name != "labels" {
			flatten(name, sub, out)
			continue
		}
		out[name] = v
	}
}

// checkECS returns what is wrong with one document (as JSON decodes it) against ECS.
func checkECS(fields map[string]ecsField, doc map[string]any) []string {
	flat := map[string]any{}
	flatten("", doc, flat)
	var bad []string
	for name, v := range flat {
		f, ok := fields[name]
		if !ok {
			bad = append(bad, name+": not an ECS field")
			continue
		}
		vals := []any{v}
		if list, ok := v.([]any); ok {
			if !slices.Contains(f.Normalize, "array") {
				bad = append(bad, name+": an array, but ECS does not make it one")
			}
			vals = list
		}
		for _, x := range vals {
			if err := ecsType(f, x); err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", name, err))
			}
		}
	}
	return bad
}

func ecsType(f ecsField, v any) error {
	switch f.Type {
	case "keyword", "wildcard", "match_only_text", "text", "constant_keyword":
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%T %v, want a string", v, v)
		}
		if len(f.AllowedValues) > 0 && !slices.ContainsFunc(f.AllowedValues, func(a struct{ Name string }) bool { return a.Name == s }) {
			return fmt.Errorf("%q is not an allowed value", s)
		}
		if len(f.ExpectedValues) > 0 && !slices.Contains(f.ExpectedValues, s) {
			return fmt.Errorf("%q is not an expected value", s)
		}
	case "long", "integer", "short", "byte":
		n, ok := v.(float64)
		if !ok || n != float64(int64(n)) {
			return fmt.Errorf("%T %v, want an integer", v, v)
		}
	case "ip":
		s, _ := v.(string)
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("%v, want an IP address", v)
		}
	case "date":
		s, _ := v.(string)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fmt.Errorf("%v, want a date", v)
		}
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%T, want an object", v)
		}
		for k, x := range m {
			if _, ok := x.(string); !ok && f.ObjectType == "keyword" {
				return fmt.Errorf("%s: %T, want a keyword", k, x)
			}
		}
	default:
		return fmt.Errorf("type %s is not one the mapping writes", f.Type)
	}
	return nil
}

// TestECSFields: the fields the mapping may write are all ECS fields of the types it gives.
func TestECSFields(t *testing.T) {
	fields := loadECS(t)
	want := map[ecsKind][]string{ecsKeyword: {"keyword", "wildcard", "match_only_text"}, ecsLower: {"keyword"},
		ecsLong: {"long"}, ecsIP: {"ip"}, ecsIPs: {"ip"}}
	for name, k := range ecsFromView {
		if f, ok := fields[name]; !ok || !slices.Contains(want[k], f.Type) {
			t.Errorf("%s: ECS type %q, the mapping writes %v", name, f.Type, want[k])
		}
	}
	for name, typ := range ecsOwn {
		if f, ok := fields[name]; !ok || f.Type != typ {
			t.Errorf("%s: ECS type %q, the mapping writes %s", name, f.Type, typ)
		}
	}
}

// TestECSDocuments: every document made from the shared samples of every format, raw and
// refined, uses only ECS fields with values of their types, carries the SSA in labels and its
// TLP label in threat.indicator.marking.tlp.
func TestECSDocuments(t *testing.T) {
	fields := loadECS(t)
	for _, tlp := range append([]string{""}, protocol.TLPLevels...) {
		a, p := agreement(t, tlp, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8})
		for _, s := range samples {
			recs := readSample(t, s.format, s.file, 0)
			for _, recs := range [][]Record{recs, refine(t, p, recs)} {
				for _, r := range recs {
					doc, err := a.ECSJSON(r)
					if err != nil {
						t.Fatal(err)
					}
					var m map[string]any
					if err := json.Unmarshal(doc, &m); err != nil {
						t.Fatal(err)
					}
					for _, b := range checkECS(fields, m) {
						t.Errorf("%s seq %d: %s", s.file, r.Seq, b)
					}
					labels, _ := m["labels"].(map[string]any)
					if labels["ssa_id"] != a.SSA || labels["ssp_hash"] != p.Hash() {
						t.Errorf("%s seq %d: labels %v", s.file, r.Seq, labels)
					}
					got := ""
					if th, ok := m["threat"].(map[string]any); ok {
						got, _ = th["indicator"].(map[string]any)["marking"].(map[string]any)["tlp"].(string)
					}
					if got != tlp {
						t.Errorf("%s seq %d: threat.indicator.marking.tlp %q, want %q", s.file, r.Seq, got, tlp)
					}
				}
			}
		}
	}
}

// TestECSCheckRejects: the check itself finds a field ECS does not define and a wrong type.
func TestECSCheckRejects(t *testing.T) {
	fields := loadECS(t)
	for _, doc := range []string{`{"source":{"ipaddr":"1.2.3.4"}}`, `{"source":{"port":"80"}}`, `{"event":{"kind":"flow"}}`,
		`{"source":{"ip":"host"}}`, `{"rule":{"id":["1","2"]}}`} {
		var m map[string]any
		if err := json.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		if len(checkECS(fields, m)) == 0 {
			t.Errorf("%s passes the ECS check", doc)
		}
	}
}
