package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCTIOutputs: records received under an SSA reach CTI tools as the agreement governs:
// a JSONL sink with format stix writes one bundle per record whose objects carry the SSA's
// TLP marking-definition and the SSA; a misp-feed sink writes a feed whose events are tagged
// with the TLP and the SSA and hold the truncated addresses as networks; `ssanet records
// --format ecs|stix` prints the same mapping; and `records --json` shows the handling
// marking that travelled with each batch.
func TestCTIOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stixPath, feed := filepath.Join(dir, "stix.jsonl"), filepath.Join(dir, "feed")
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "", withYAML(fmt.Sprintf("sinks:\n  - {name: opencti, type: jsonl, format: stix, path: %q}\n  - {name: misp, type: misp-feed, path: %q}", stixPath, feed)))
	prov.offer("provider.yaml")
	v, r := req.request(prov, requesterTemplate(t, "", "90d"), 20*time.Second)
	if r.code != 0 || v.State != "approved" {
		t.Fatalf("request: want approved: %s", r)
	}
	id := v.SSAID
	prov.waitState(id, "approved", settle)
	const n = 40
	ing := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil))
	queued := int(ing.Queued[id])
	if queued == 0 {
		t.Fatalf("nothing queued: %+v", ing)
	}
	waitSinkLines(t, stixPath, queued, 60*time.Second)

	type envelope struct{ TLP, Marking, SSP string }
	var env []envelope
	for _, line := range strings.Split(strings.TrimSpace(req.must("--json", "records", "--ssa", id)), "\n") {
		var e envelope
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		env = append(env, e)
	}
	if len(env) != queued || env[0].TLP == "" || !strings.HasPrefix(env[0].Marking, "marking-definition--") || len(env[0].SSP) != 64 {
		t.Fatalf("records --json: %d records, first %+v: want %d with the batch's TLP, marking and SSP", len(env), env[0], queued)
	}
	tlp, marking := env[0].TLP, env[0].Marking

	data, err := os.ReadFile(stixPath)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var b struct {
			Type    string           `json:"type"`
			Objects []map[string]any `json:"objects"`
		}
		if err := json.Unmarshal(line, &b); err != nil || b.Type != "bundle" {
			t.Fatalf("stix line %d is no bundle (%v): %.200s", i, err, line)
		}
		marked, hasDef := 0, false
		for _, o := range b.Objects {
			if o["id"] == marking {
				hasDef = true
			}
			if refs, ok := o["object_marking_refs"].([]any); ok && len(refs) == 1 && refs[0] == marking {
				marked++
			}
		}
		if !hasDef || marked == 0 || !bytes.Contains(line, []byte(`"ssa_id":"`+id+`"`)) {
			t.Fatalf("bundle %d: marking-definition %v, %d marked objects, SSA %s: %.300s", i, hasDef, marked, id, line)
		}
	}

	var manifest map[string]struct {
		Tag []struct {
			Name string `json:"name"`
		} `json:"Tag"`
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(feed, "manifest.json"))
		return err == nil && json.Unmarshal(b, &manifest) == nil && len(manifest) > 0, fmt.Sprintf("no MISP event in the feed: %s %v", b, err)
	})
	for ev, e := range manifest {
		var names []string
		for _, g := range e.Tag {
			names = append(names, g.Name)
		}
		if !strings.Contains(strings.Join(names, " "), "tlp:"+strings.ToLower(tlp)) || !strings.Contains(strings.Join(names, " "), `ssanet:ssa="`+id+`"`) {
			t.Errorf("event %s tags %v, want tlp:%s and the SSA", ev, names, strings.ToLower(tlp))
		}
		b, err := os.ReadFile(filepath.Join(feed, ev+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`.0/24"`)) {
			t.Errorf("event %s holds no truncated network: %.300s", ev, b)
		}
	}

	for format, want := range map[string]string{"ecs": `"tlp":"` + strings.ToUpper(tlp) + `"`, "stix": `"object_marking_refs":["` + marking + `"]`} {
		out := strings.TrimSpace(req.must("records", "--ssa", id, "--format", format))
		lines := strings.Split(out, "\n")
		if len(lines) != queued || !strings.Contains(lines[0], want) || !strings.Contains(lines[0], id) {
			t.Errorf("records --format %s: %d lines, want %d holding %s and the SSA: %.300s", format, len(lines), queued, want, lines[0])
		}
	}
}
