package policy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// jqProgram is the closest jq equivalent of benchPolicy: drop stats records and zero the
// last octet of every IPv4 address inside any string (jq has no notion of public addresses
// and no IPv6 handling here, so it does less work than ssanet).
const jqProgram = `select(.event_type != "stats") | walk(if type == "string" then gsub("(?<a>[0-9]+\\.[0-9]+\\.[0-9]+)\\.[0-9]+"; "\(.a).0") else . end)`

// jqFieldsProgram does much less: it truncates src_ip and dest_ip only. It bounds from
// below what jq costs for this policy.
const jqFieldsProgram = `select(.event_type != "stats") | (.src_ip, .dest_ip) |= (if type == "string" then sub("\\.[0-9]+$"; ".0") else . end)`

// TestJQComparison runs ssanet and jq on the same EVE file and prints both throughputs and
// their ratio. It needs jq (Debian package jq) and runs only with SSANET_BENCH_JQ=1:
//
//	SSANET_BENCH_JQ=1 go test ./policy/ -run JQComparison -v
func TestJQComparison(t *testing.T) {
	if os.Getenv("SSANET_BENCH_JQ") != "1" {
		t.Skip("set SSANET_BENCH_JQ=1 to compare with jq")
	}
	jq, err := exec.LookPath("jq")
	if err != nil {
		t.Fatalf("jq not found: %v (apt-get install -y jq)", err)
	}
	const n = 50_000
	in := benchEVE(t, n)
	file := filepath.Join(t.TempDir(), "eve.jsonl")
	if err := os.WriteFile(file, in, 0o644); err != nil {
		t.Fatal(err)
	}

	p := mustCompile(t, ssaFor(benchPolicy(), "eve"))
	e, err := NewEnforcer(p, "eve", Config{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	start := time.Now()
	st, err := e.Run(context.Background(), f, &out)
	if err != nil {
		t.Fatal(err)
	}
	ours := time.Since(start)

	rs := float64(n) / ours.Seconds()
	t.Logf("ssanet: %d records in %v: %.0f records/s (%d kept)", n, ours, rs, st.Refined)
	for _, prog := range []struct{ name, src string }{{"jq, every string", jqProgram}, {"jq, two fields", jqFieldsProgram}} {
		cmd := exec.Command(jq, "-c", prog.src, file)
		var jout bytes.Buffer
		cmd.Stdout = &jout
		start = time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v", prog.name, err)
		}
		theirs := time.Since(start)
		if kept := bytes.Count(jout.Bytes(), []byte("\n")); int64(kept) != st.Refined {
			t.Errorf("%s kept %d records, ssanet %d", prog.name, kept, st.Refined)
		}
		rj := float64(n) / theirs.Seconds()
		t.Logf("%s: %d records in %v: %.0f records/s; ratio ssanet/jq %.1fx", prog.name, n, theirs, rj, rs/rj)
	}
}
