package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sinkNames are the names of the agent's sinks, as `ssanet sinks --json` lists them.
func (a *agent) sinkNames() []string {
	a.t.Helper()
	var st []struct {
		Name string `json:"name"`
	}
	a.query(&st, "sinks")
	var out []string
	for _, s := range st {
		out = append(out, s.Name)
	}
	return out
}

// TestReloadSinksWhileRecordsFlow: records flow from a followed file on the provider to two
// JSONL sinks of the requester; a SIGHUP with a config that keeps one sink, removes the other
// and adds two (one from the beginning, one read-from: end) loses and repeats nothing: the
// kept sink holds every record exactly once, in order; the one added from the beginning
// every record once; the one added at the end every record from some point on, once each; the
// removed one a prefix, each once, ending on a complete line and growing no more. Then
// `ssanet reload` with a broken config exits 1 saying why and changes no sink.
func TestReloadSinksWhileRecordsFlow(t *testing.T) {
	const (
		total = 3000
		batch = 50
	)
	port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
	dir := t.TempDir()
	eve := filepath.Join(dir, "eve.json")
	sink := func(name string) string { return filepath.Join(dir, name+".jsonl") }
	prov := newAgent(t, "provider", port(), append(fastExchange,
		withYAML(fmt.Sprintf("ingest:\n  follow:\n    - {path: %q, format: eve}", eve)))...)
	req := newAgent(t, "requester", port(), append(fastExchange,
		withYAML(fmt.Sprintf("sinks:\n  - {name: stay, type: jsonl, path: %q}\n  - {name: gone, type: jsonl, path: %q}", sink("stay"), sink("gone"))))...)
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))

	// The provider's sensor appends a batch every 20 ms.
	stream := eveStream(sampleEVE(t), streamBase, 0, total, nil)
	written := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(eve, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			written <- err
			return
		}
		defer f.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < total; i += batch {
			var b bytes.Buffer
			for _, r := range stream[i:min(i+batch, total)] {
				b.Write(r.line)
				b.WriteByte('\n')
			}
			if _, err := f.Write(b.Bytes()); err != nil {
				written <- err
				return
			}
			<-tick.C
		}
		written <- nil
	}()

	// Records flow to both sinks; then the config changes under the running agent.
	pollUntil(t, deliverBy, "300 records in both sinks", func() bool { return sinkLines(sink("stay")) >= 300 && sinkLines(sink("gone")) >= 300 })
	path := filepath.Join(req.home, "config.yaml")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := bytes.Cut(cfg, []byte("\nsinks:\n"))
	if !ok {
		t.Fatalf("config.yaml has no sinks: section:\n%s", cfg)
	}
	next := fmt.Sprintf("%s\nsinks:\n  - {name: stay, type: jsonl, path: %q}\n  - {name: added, type: jsonl, path: %q}\n  - {name: tail, type: jsonl, path: %q, read-from: end}\n",
		head, sink("stay"), sink("added"), sink("tail"))
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	req.signal(syscall.SIGHUP)
	want := []string{"stay", "added", "tail"}
	pollUntil(t, 10*time.Second, fmt.Sprintf("sinks %v after SIGHUP", want), func() bool { return slices.Equal(req.sinkNames(), want) })
	gone := sinkLines(sink("gone"))
	stayAtReload := sinkLines(sink("stay"))

	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if stayAtReload >= total {
		t.Fatalf("the sink held all %d records at the reload: the test did not reload while records flowed", total)
	}
	stay := waitSink(t, sink("stay"), id, total, deliverBy)
	checkDense(t, "kept sink", id, stay, total)
	added := waitSink(t, sink("added"), id, total, deliverBy)
	if dups := sinkCoverage(t, "sink added from the beginning", id, added, total); dups != 0 {
		t.Errorf("sink added from the beginning: %d records repeated", dups)
	}
	pollUntil(t, deliverBy, "the last record in the sink added with read-from: end", func() bool {
		recs, _ := readSink(t, sink("tail"))
		return len(recs) > 0 && recs[len(recs)-1].Seq == total
	})
	tail, bad := readSink(t, sink("tail"))
	if bad != 0 || len(tail) == 0 || tail[0].Seq <= 1 {
		t.Fatalf("sink added with read-from: end: %d records from #%d (%d bad lines), want those received after the reload", len(tail), firstSeq(tail), bad)
	}
	for i, r := range tail {
		if r.SSAID != id || r.Seq != tail[0].Seq+uint64(i) {
			t.Fatalf("sink added with read-from: end: record %d is %s #%d, want #%d: a gap or a repeat", i, r.SSAID, r.Seq, tail[0].Seq+uint64(i))
		}
	}
	removed, bad := readSink(t, sink("gone"))
	data, err := os.ReadFile(sink("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 || !bytes.HasSuffix(data, []byte("\n")) || len(removed) != gone || gone >= total {
		t.Errorf("removed sink: %d records (%d at the reload, of %d), %d bad lines, ends with a newline: %v", len(removed), gone, total, bad, bytes.HasSuffix(data, []byte("\n")))
	}
	checkDense(t, "removed sink", id, removed, len(removed))
	t.Logf("reload with %d of %d records in the kept sink; the removed sink stopped at %d; read-from: end started at #%d",
		stayAtReload, total, gone, tail[0].Seq)

	// A broken config: `ssanet reload` says why, and nothing changes.
	if err := os.WriteFile(path, []byte(strings.Replace(next, "\nsinks:", "\nsinkz:", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := req.cli("reload")
	if r.code != 1 || !strings.Contains(r.stderr, "sinkz") || !strings.Contains(r.stderr, "config not reloaded") {
		t.Errorf("ssanet reload of a broken config: %s; want exit 1 naming the key", r)
	}
	if got := req.sinkNames(); !slices.Equal(got, want) {
		t.Errorf("sinks %v after a failed reload, want %v", got, want)
	}
	// A key that needs a restart is said to need one.
	if err := os.WriteFile(path, []byte(strings.Replace(next, "\nretry-interval: 1s", "\nretry-interval: 2s", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := req.cli("reload"); r.code != 0 || !strings.Contains(r.stderr, "retry-interval") {
		t.Errorf("ssanet reload with retry-interval changed: %s; want exit 0 saying it needs a restart", r)
	}
}

func firstSeq(recs []recordView) uint64 {
	if len(recs) == 0 {
		return 0
	}
	return recs[0].Seq
}

// waitFor polls cond every pollInterval until it holds; after timeout the test fails with
// what cond last said.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, last)
		}
		time.Sleep(pollInterval)
	}
}

// pollUntil polls cond every pollInterval until it holds, failing t after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, timeout, func() (bool, string) { return cond(), "not yet: " + what })
}
