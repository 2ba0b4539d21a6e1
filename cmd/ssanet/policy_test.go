package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const policyTemplate = `
information:
  - type: attack-detection-log
    format: eve
policy:
  masking:
    - scope: public-ip
      method: truncate
      bits: 8
  filtering:
    - expr: 'r["event.kind"] != "stats"'
`

func TestCmdPolicy(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "ssa.yaml")
	if err := os.WriteFile(tmpl, []byte(policyTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join("..", "..", "policy", "testdata", "eve", "test-eve-6-0.jsonl")
	raw, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	refined := filepath.Join(dir, "out.jsonl")
	run := func(stdin []byte, args ...string) (string, string, int) {
		return ssanetStdin(t, stdin, append([]string{"policy"}, args...)...)
	}

	if _, stderr, code := run(nil, "apply", "--template", tmpl, "--format", "eve", in, "--out", refined); code != exitOK {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	got, err := os.ReadFile(refined)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte(`"src_ip":"175.16.199.0"`)) || bytes.Contains(got, []byte("81.2.69.192")) {
		t.Errorf("apply output:\n%s", got)
	}
	// Standard input to standard output gives the same.
	if stdout, _, code := run(raw, "apply", "--template", tmpl, "--format", "eve"); code != exitOK || stdout != string(got) {
		t.Errorf("apply from stdin: exit %d, output differs", code)
	}
	if stdout, stderr, code := run(nil, "check", "--template", tmpl, "--format", "eve", refined); code != exitOK || stdout != "" {
		t.Errorf("check of refined records: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, _, code := run(nil, "check", "--template", tmpl, "--format", "eve", in)
	if code != exitError || !strings.Contains(stdout, "line 1 (byte 0): not-truncated") || !strings.Contains(stdout, "81.2.69.192") {
		t.Errorf("check of raw records: exit %d\n%s", code, stdout)
	}
	// --json, after the command or before it, prints the violations as one object.
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		violations int // at least
	}{
		{"raw, json after", []string{"policy", "check", "--template", tmpl, "--format", "eve", in, "--json"}, exitError, 1},
		{"raw, json before", []string{"--json", "policy", "check", "--template", tmpl, "--format", "eve", in}, exitError, 1},
		{"refined", []string{"policy", "check", "--json", "--template", tmpl, "--format", "eve", refined}, exitOK, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := ssanet(t, tc.args...)
			var got struct {
				SSP        string `json:"ssp"`
				Records    int    `json:"records"`
				Violations []struct {
					Line int    `json:"line"`
					Byte int    `json:"byte"`
					Code string `json:"code"`
					Text string `json:"text"`
				} `json:"violations"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil || code != tc.code {
				t.Fatalf("exit %d (want %d), %v\n%s%s", code, tc.code, err, stdout, stderr)
			}
			if len(got.Violations) < tc.violations || got.Violations == nil || got.Records == 0 || got.SSP == "" {
				t.Errorf("check --json: %s", stdout)
			}
			if tc.violations > 0 && (got.Violations[0].Line != 1 || got.Violations[0].Code != "not-truncated") {
				t.Errorf("first violation %+v, want line 1 not-truncated", got.Violations[0])
			}
		})
	}
	if _, stderr, code := ssanet(t, "--json", "policy", "apply", "--template", tmpl, "--format", "eve", in); code != exitUsage || !strings.Contains(stderr, "policy apply prints no data as JSON") {
		t.Errorf("--json policy apply: exit %d, %s", code, stderr)
	}
	// A bad record is reported with its line and the others are refined.
	bad := append([]byte("{oops\n"), raw...)
	stdout, stderr, code := run(bad, "apply", "--template", tmpl, "--format", "eve")
	if code != exitError || strings.Count(stdout, "\n") != 3 || !strings.Contains(stderr, "line 1 (byte 0)") {
		t.Errorf("apply with a bad record: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"apply", "--format", "eve"},
		{"apply", "--template", tmpl},
		{"apply", "--template", tmpl, "--format", "stix"},
		{"check", "--template", tmpl, "--ssa", tmpl, "--format", "eve"},
		{"check", "--template", tmpl, "--format", "eve", "a", "b"},
	} {
		if _, _, code := run(nil, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
