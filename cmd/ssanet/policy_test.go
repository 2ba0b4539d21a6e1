package main

import (
	"bytes"
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
		var out, errb bytes.Buffer
		code := cmdPolicy(args, bytes.NewReader(stdin), &out, &errb)
		return out.String(), errb.String(), code
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
