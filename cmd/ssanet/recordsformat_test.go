package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// TestRecordsFormat: `ssanet records --format stix|ecs` prints each record as a STIX bundle
// or an ECS document under the SSA, with its TLP marking; an unknown format is a usage error.
func TestRecordsFormat(t *testing.T) {
	ssa, err := protocol.ParseSSAYAML(protocol.ExampleRequester, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ssa.ID = "ssa-records-format"
	b, err := os.ReadFile("sample-eve.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.SplitN(b, []byte("\n"), 2)[0]
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
