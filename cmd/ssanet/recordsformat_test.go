package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// sampleSSA is the example requester's SSA with ID id, and the first EVE record of the sample.
func sampleSSA(t *testing.T, id string) (*protocol.SSA, []byte) {
	t.Helper()
	ssa, err := protocol.ParseSSAYAML(protocol.ExampleRequester, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ssa.ID = id
	b, err := os.ReadFile("sample-eve.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return ssa, bytes.SplitN(b, []byte("\n"), 2)[0]
}

// TestRecordsFormat: `ssanet records --format stix|ecs` prints each record as a STIX bundle
// or an ECS document under the SSA, with its TLP marking; an unknown format is a usage error.
func TestRecordsFormat(t *testing.T) {
	ssa, line := sampleSSA(t, "ssa-records-format")
	rec := agent.ForwardedRecord{SSAID: ssa.ID, Seq: 1, Received: time.Now(), Format: protocol.FormatEVE, Record: line}
	ref, _ := policy.TLPMarkingID(ssa.Policy.Handling.TLP)
	for _, tc := range []struct{ format, want string }{
		{"stix", `"object_marking_refs":["` + ref + `"]`},
		{"ecs", `"tlp":"` + strings.ToUpper(ssa.Policy.Handling.TLP) + `"`},
	} {
		f, err := formatterOf(ssa, tc.format)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := f(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(doc) || !strings.Contains(string(doc), tc.want) || !strings.Contains(string(doc), ssa.ID) {
			t.Errorf("%s: %.300s lacks %s or the SSA", tc.format, doc, tc.want)
		}
	}
	if _, errs, code := ssanet(t, "records", "--ssa", ssa.ID, "--format", "xml"); code != exitUsage {
		t.Errorf("--format xml: exit %d (%s), want %d", code, errs, exitUsage)
	}
}

// TestRecordsFormatLeftOut: `ssanet records --format stix|ecs` prints the records it can map
// and counts on stderr those it leaves out, quarantined ones and ones it cannot map (each of
// these with its sequence number), exiting 1 if one could not be mapped; --json does not
// change that.
func TestRecordsFormatLeftOut(t *testing.T) {
	ssa, line := sampleSSA(t, "ssa-left-out")
	rec := func(seq uint64) agent.ForwardedRecord {
		return agent.ForwardedRecord{SSAID: ssa.ID, Seq: seq, Received: time.Now(), Format: protocol.FormatEVE, Record: line}
	}
	home := func(records func() []agent.ForwardedRecord) string {
		return fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var v any
			switch r.URL.Path {
			case "/v1/ssa/" + ssa.ID:
				v = agent.NegotiationView{SSAID: ssa.ID, SSA: ssa}
			case "/v1/records":
				after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
				var out []agent.ForwardedRecord
				for _, x := range records() {
					if x.Seq > after {
						out = append(out, x)
					}
				}
				v = out
			default:
				http.NotFound(w, r)
				return
			}
			json.NewEncoder(w).Encode(v)
		}))
	}
	for _, tc := range []struct {
		name       string
		records    func() []agent.ForwardedRecord
		json       bool
		code, docs int
		errs       []string
	}{
		{name: "all mapped", records: func() []agent.ForwardedRecord { return []agent.ForwardedRecord{rec(1), rec(2)} }, docs: 2},
		{name: "quarantined", docs: 2, errs: []string{"1 of 3 records left out of the FORMAT output: 1 quarantined", "0 could not be mapped"},
			records: func() []agent.ForwardedRecord {
				q := rec(2)
				q.Quarantined = true
				return []agent.ForwardedRecord{rec(1), q, rec(3)}
			}},
		{name: "unmappable", code: exitError, docs: 2,
			errs: []string{"record #3 (frob) left out of the FORMAT output: cti: record cannot be mapped", "2 of 4 records left out of the FORMAT output: 1 quarantined", "1 could not be mapped"},
			records: func() []agent.ForwardedRecord {
				q, bad := rec(2), rec(3)
				q.Quarantined = true
				bad.Format = "frob" // no mapping knows it
				return []agent.ForwardedRecord{rec(1), q, bad, rec(4)}
			}},
		{name: "unmappable json", json: true, code: exitError, docs: 1, errs: []string{"1 of 2 records left out", "1 could not be mapped"},
			records: func() []agent.ForwardedRecord {
				bad := rec(1)
				bad.Format = "frob" // no mapping knows it
				return []agent.ForwardedRecord{bad, rec(2)}
			}},
	} {
		home := home(tc.records)
		for _, format := range []string{"stix", "ecs"} {
			t.Run(tc.name+" "+format, func(t *testing.T) {
				args := []string{"--home", home, "records", "--ssa", ssa.ID, "--format", format}
				if tc.json {
					args = append(args, "--json")
				}
				out, errs, code := ssanet(t, args...)
				docs := strings.Count(out, "\n")
				if code != tc.code || docs != tc.docs {
					t.Errorf("exit %d, %d documents; want exit %d, %d documents\nstdout: %.500s\nstderr: %s", code, docs, tc.code, tc.docs, out, errs)
				}
				for _, want := range tc.errs {
					if want = strings.ReplaceAll(want, "FORMAT", format); !strings.Contains(errs, want) {
						t.Errorf("stderr lacks %q:\n%s", want, errs)
					}
				}
				if tc.errs == nil && errs != "" {
					t.Errorf("stderr: %s, want nothing", errs)
				}
			})
		}
	}

	// --follow runs until stopped: it counts after each batch that left a record out.
	t.Run("follow", func(t *testing.T) {
		home := home(func() []agent.ForwardedRecord {
			q := rec(2)
			q.Quarantined = true
			return []agent.ForwardedRecord{rec(1), q}
		})
		errFile := filepath.Join(t.TempDir(), "stderr")
		stderr, err := os.Create(errFile)
		if err != nil {
			t.Fatal(err)
		}
		defer stderr.Close()
		cmd := exec.Command(binary, "--home", home, "records", "--ssa", ssa.ID, "--format", "stix", "--follow")
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		const want = "1 of 2 records left out of the stix output so far: 1 quarantined"
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			b, _ := os.ReadFile(errFile)
			if strings.Contains(string(b), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("records --follow: stderr %q after 20s, want %q", b, want)
			}
		}
	})
}
