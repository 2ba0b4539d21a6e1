package agent

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
)

// jsonLines reads the JSON objects of a JSONL file.
func jsonLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// TestSinkFormats: records received in a real exchange reach JSONL sinks as raw envelopes
// that carry their batch's marking, as STIX bundles and as ECS documents, and a misp-feed as
// events, each with the SSA's TLP marking and the SSA.
func TestSinkFormats(t *testing.T) {
	prov, req, s := exchangePair(t)
	run, refined := refineSample(t, prov, s.ID)
	k := uint64(len(refined))
	if _, err := prov.store.Enqueue(s.ID, refined, k, 0); err != nil {
		t.Fatal(err)
	}
	prov.deliver.wake(run)
	waitRecords(t, req, s.ID, k)
	tlp := s.Policy.Handling.TLP
	ref, ok := policy.TLPMarkingID(tlp)
	if !ok {
		t.Fatalf("the example SSA has no TLP label (%q)", tlp)
	}
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	cfgs := []SinkConfig{
		{Name: "raw", Type: "jsonl", Path: path("raw.jsonl")},
		{Name: "stix", Type: "jsonl", Format: cti.FormatSTIX, Path: path("stix.jsonl")},
		{Name: "ecs", Type: "jsonl", Format: cti.FormatECS, Path: path("ecs.jsonl")},
		{Name: "misp", Type: "misp-feed", Path: path("feed")},
	}
	for i := range cfgs {
		if err := cfgs[i].validate(); err != nil {
			t.Fatal(err)
		}
	}
	startSinks(t, req, req.log, cfgs...)
	waitFor(t, 20*time.Second, func() (bool, string) {
		for _, n := range []string{"raw", "stix", "ecs", "misp"} {
			b, _ := os.ReadFile(filepath.Join(req.home, SinksDir, n+".json"))
			var p map[string]uint64
			if json.Unmarshal(b, &p) != nil || p[s.ID] != k {
				return false, "sink " + n + " progress " + string(b)
			}
		}
		return true, ""
	})
	hash := req.mgr.requested(s.ID).ssp.Hash()
	for _, r := range jsonLines(t, path("raw.jsonl")) {
		if r["tlp"] != tlp || r["marking"] != ref || r["ssp"] != hash {
			t.Fatalf("raw record without its batch's marking: tlp %v marking %v ssp %v", r["tlp"], r["marking"], r["ssp"])
		}
	}
	bundles := jsonLines(t, path("stix.jsonl"))
	if uint64(len(bundles)) != k {
		t.Fatalf("%d bundles for %d records", len(bundles), k)
	}
	for _, b := range bundles {
		for _, x := range b["objects"].([]any) {
			o := x.(map[string]any)
			if o["type"] == "observed-data" && (!slices.Equal(anyStrings(o["object_marking_refs"]), []string{ref})) {
				t.Fatalf("observed-data markings %v, want [%s]", o["object_marking_refs"], ref)
			}
		}
	}
	docs := jsonLines(t, path("ecs.jsonl"))
	for _, d := range docs {
		th, _ := d["threat"].(map[string]any)
		labels, _ := d["labels"].(map[string]any)
		if th == nil || th["indicator"].(map[string]any)["marking"].(map[string]any)["tlp"] != strings.ToUpper(tlp) || labels["ssa_id"] != s.ID {
			t.Fatalf("ECS document: threat %v labels %v", th, labels)
		}
	}
	b, err := os.ReadFile(filepath.Join(path("feed"), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest map[string]cti.MISPManifestEntry
	if err := json.Unmarshal(b, &manifest); err != nil || len(manifest) == 0 {
		t.Fatalf("manifest %s: %v", b, err)
	}
	for id, e := range manifest {
		if !slices.ContainsFunc(e.Tag, func(g cti.MISPTag) bool { return g.Name == "tlp:"+strings.ToLower(tlp) }) {
			t.Errorf("event %s: tags %v lack the TLP", id, e.Tag)
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestSinkFormatConfig: a format other than raw only on jsonl and webhook sinks, a misp-feed
// needs its directory.
func TestSinkFormatConfig(t *testing.T) {
	for _, c := range []SinkConfig{
		{Type: "jsonl", Path: "p", Format: "xml"},
		{Type: "syslog", Network: "udp", Address: "127.0.0.1:514", Format: cti.FormatSTIX},
		{Type: "misp-feed"},
		{Type: "misp-feed", Path: "d", Format: cti.FormatECS},
		{Type: "jsonl", Path: "p", MaxAttributes: 5},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: taken", c)
		}
	}
	for _, c := range []SinkConfig{{Type: "jsonl", Path: "p", Format: cti.FormatECS}, {Type: "misp-feed", Path: "d", MaxAttributes: 10}} {
		if err := c.validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
