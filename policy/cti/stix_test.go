package cti

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// schemaBase is the $id prefix of the OASIS STIX 2.1 schemas; the schema files under
// testdata/stix/schemas are added under it, so their relative $refs resolve offline.
const schemaBase = "http://raw.githubusercontent.com/oasis-open/cti-stix2-json-schemas/stix2.1/schemas/"

// stixSchemas compiles the schema of every STIX type and the bundle's, from disk.
func stixSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.UseLoader(noNetwork{})
	dir := filepath.Join("testdata", "stix", "schemas")
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, _ := filepath.Rel(dir, path)
		names = append(names, filepath.ToSlash(rel))
		return c.AddResource(schemaBase+filepath.ToSlash(rel), doc)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*jsonschema.Schema{}
	for _, n := range names {
		if strings.HasPrefix(n, "common/") && n != "common/bundle.json" && n != "common/marking-definition.json" && n != "common/extension-definition.json" {
			continue
		}
		sch, err := c.Compile(schemaBase + n)
		if err != nil {
			t.Fatalf("compile %s: %v", n, err)
		}
		out[strings.TrimSuffix(filepath.Base(n), ".json")] = sch
	}
	if len(out) < 40 {
		t.Fatalf("only %d STIX schemas compiled", len(out))
	}
	return out
}

// noNetwork refuses every URL: the schemas must all come from disk.
type noNetwork struct{}

func (noNetwork) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not on disk (no network in tests)", url)
}

func validate(t *testing.T, schemas map[string]*jsonschema.Schema, typ string, v any) {
	t.Helper()
	validateOnce(t, schemas, typ, v, nil)
}

// validateOnce validates v unless done holds it already (the same object made for another
// record): the schemas are costly under the race detector.
func validateOnce(t *testing.T, schemas map[string]*jsonschema.Schema, typ string, v any, done map[string]bool) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if done != nil {
		if done[string(b)] {
			return
		}
		done[string(b)] = true
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	sch, ok := schemas[typ]
	if !ok {
		t.Fatalf("no schema for STIX type %q", typ)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s does not validate: %v\n%.400s", typ, err, b)
	}
}

// TestSTIXSchemas: every object made from the shared samples of every format, raw and
// refined under truncation, validates against the OASIS STIX 2.1 schemas, for every TLP
// level and none, and so does every bundle (the bundle schema checks each object against
// every type, so whole bundles are checked for no label and for AMBER+STRICT, the objects
// alone for the other labels, which differ from those only in their marking); every object
// made from the records carries the SSA's marking and the ssanet extension, and the bundle
// holds the marking-definition it refers to.
func TestSTIXSchemas(t *testing.T) {
	schemas := stixSchemas(t)
	validate(t, schemas, "extension-definition", ExtensionDefinition())
	// The schemas do reject: an observed-data without what it observed, a marking with a bad id.
	for typ, bad := range map[string]string{
		"observed-data":      `{"type":"observed-data","spec_version":"2.1","id":"observed-data--6e49a292-60e3-5539-9c30-b7b5d99470b5","created":"2026-12-06T10:30:00.123Z","modified":"2026-12-06T10:30:00.123Z","first_observed":"2026-12-06T10:30:00.123Z","last_observed":"2026-12-06T10:30:00.123Z","number_observed":1}`,
		"marking-definition": `{"type":"marking-definition","spec_version":"2.1","id":"marking-definition--nope","created":"2022-10-01T00:00:00.000Z","name":"TLP:AMBER"}`,
	} {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		if schemas[typ].Validate(inst) == nil {
			t.Errorf("the %s schema takes %s", typ, bad)
		}
	}
	validate(t, schemas, "identity", SystemIdentity())
	done := map[string]bool{}
	for _, tlp := range append([]string{""}, protocol.TLPLevels...) {
		a, p := agreement(t, tlp, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8})
		wantRef, hasTLP := policy.TLPMarkingID(tlp)
		for _, s := range samples {
			for _, refined := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/refined=%v", orNone(tlp), s.file, refined), func(t *testing.T) {
					recs := readSample(t, s.format, s.file, 0)
					if refined {
						recs = refine(t, p, recs)
					}
					b, err := a.Bundle(recs)
					if err != nil {
						t.Fatal(err)
					}
					if tlp == "" || tlp == protocol.TLPAmberStrict {
						validate(t, schemas, "bundle", b)
					}
					types := map[string]int{}
					for _, o := range b.Objects {
						typ := o.Type()
						types[typ]++
						validateOnce(t, schemas, typ, o, done)
						shared := o.ID() == SystemIdentityID || o.ID() == ExtensionID || typ == "marking-definition"
						refs, _ := o["object_marking_refs"].([]string)
						switch {
						case shared && refs != nil:
							t.Errorf("%s: a shared object carries markings %v", o.ID(), refs)
						case !shared && hasTLP && !slices.Equal(refs, []string{wantRef}):
							t.Errorf("%s: markings %v, want [%s]", o.ID(), refs, wantRef)
						case !shared && !hasTLP && refs != nil:
							t.Errorf("%s: markings %v without a TLP label", o.ID(), refs)
						}
						if !shared {
							ext, _ := o["extensions"].(map[string]any)[ExtensionID].(map[string]any)
							if ext["ssa_id"] != a.SSA || ext["ssp_hash"] != p.Hash() {
								t.Errorf("%s: ssanet extension %v, want ssa %s ssp %s", o.ID(), ext, a.SSA, p.Hash())
							}
						}
					}
					if hasTLP {
						i := slices.IndexFunc(b.Objects, func(o Object) bool { return o.ID() == wantRef })
						if i < 0 {
							t.Fatalf("no marking-definition %s in the bundle", wantRef)
						}
						tl := b.Objects[i]["extensions"].(map[string]any)[tlpExtension].(map[string]any)["tlp_2_0"]
						if want := strings.ToLower(tlp); tl != want {
							t.Errorf("marking-definition tlp_2_0 %v, want %s", tl, want)
						}
					} else if types["marking-definition"] != 0 {
						t.Errorf("a marking-definition without a TLP label")
					}
					if types["observed-data"] != len(recs) {
						t.Errorf("%d observed-data for %d records", types["observed-data"], len(recs))
					}
				})
			}
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// TestSTIXMaskedAddresses: an address truncated by the SSA becomes the network it is, and
// one left alone stays an address.
func TestSTIXMaskedAddresses(t *testing.T) {
	a, p := agreement(t, protocol.TLPAmber, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8})
	raw := []byte(`{"timestamp":"2026-12-06T10:00:00.000000+0000","event_type":"flow","src_ip":"203.0.113.9","dest_ip":"8.8.4.4","src_port":5555,"dest_port":53,"proto":"UDP","app_proto":"dns"}`)
	recs := refine(t, p, []Record{{Seq: 1, Received: received, Format: protocol.FormatEVE, Data: raw}})
	objs, err := a.STIX(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, o := range objs {
		if o.Type() == "ipv4-addr" {
			values = append(values, o["value"].(string))
		}
		if o.Type() == "network-traffic" {
			if got := o["protocols"]; !slices.Equal(got.([]string), []string{"udp", "dns"}) {
				t.Errorf("protocols %v", got)
			}
		}
	}
	slices.Sort(values)
	// 203.0.113.9 is a documentation address, not public: not truncated.
	if want := []string{"203.0.113.9", "8.8.4.0/24"}; !slices.Equal(values, want) {
		t.Errorf("ipv4-addr values %v, want %v", values, want)
	}
	if got := p.AddrPrefix("destination.ip", netip.MustParseAddr("8.8.4.1")); got.Bits() != 32 {
		t.Errorf("AddrPrefix of an address with its low bits set: %v, want a single address", got)
	}
}

// TestSCOIDs: deterministic IDs per STIX 2.1 §2.9, the values computed independently
// (Python: uuid.uuid5(uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7"), '{"value":"198.51.100.3"}')).
func TestSCOIDs(t *testing.T) {
	for _, c := range []struct {
		typ   string
		props map[string]any
		want  string
	}{
		{"ipv4-addr", map[string]any{"value": "198.51.100.3"}, "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4"},
		{"domain-name", map[string]any{"value": "example.com"}, "domain-name--bedb4899-d24b-5401-bc86-8f6b4cc18ec7"},
		{"url", map[string]any{"value": "http://a.example/?x=<&>"}, "url--6b8b370e-2d7b-5545-bb1e-d70b8380d000"},
	} {
		if got := scoID(c.typ, c.props); got != c.want {
			t.Errorf("scoID(%s, %v) = %s, want %s", c.typ, c.props, got, c.want)
		}
	}
}

// TestFixedIDs: the IDs of the ssanet extension-definition and identity are wire values
// consumers key on (an OpenCTI or MISP import keeps them): they never change.
func TestFixedIDs(t *testing.T) {
	if ExtensionID != "extension-definition--224a54d4-ec95-5058-a07c-58441e83bcad" || SystemIdentityID != "identity--a8027057-2299-54fb-aeac-e9c8d12d1d2f" {
		t.Errorf("ExtensionID %s, SystemIdentityID %s changed", ExtensionID, SystemIdentityID)
	}
}

// TestTLPMarkings: the marking-definitions are those OASIS publishes for TLP 2.0
// (cti-stix-common-objects, the examples in policy/testdata/tlp), field for field, and the
// IDs of GREEN and RED are those its schema fixes.
func TestTLPMarkings(t *testing.T) {
	for label, file := range map[string]string{protocol.TLPClear: "tlp-clear.json", protocol.TLPAmber: "tlp-amber.json", protocol.TLPAmberStrict: "tlp-amber+strict.json"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "tlp", file))
		if err != nil {
			t.Fatal(err)
		}
		var bundle struct{ Objects []map[string]any }
		if err := json.Unmarshal(b, &bundle); err != nil || len(bundle.Objects) != 1 {
			t.Fatalf("%s: %v", file, err)
		}
		m, ok := TLPMarking(label)
		if !ok {
			t.Fatalf("no marking for %s", label)
		}
		got, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(bundle.Objects[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", label, got, want)
		}
	}
	schema, err := os.ReadFile(filepath.Join("..", "testdata", "tlp", "tlp2.0-marking-definition.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, label := range protocol.TLPLevels {
		m, _ := TLPMarking(label)
		if !bytes.Contains(schema, []byte(`"`+m.ID()+`"`)) || !bytes.Contains(schema, []byte(`"`+m["name"].(string)+`"`)) {
			t.Errorf("%s: %s %s not in the OASIS TLP 2.0 schema", label, m.ID(), m["name"])
		}
	}
	if _, ok := TLPMarking(""); ok {
		t.Error("a marking for no label")
	}
}
