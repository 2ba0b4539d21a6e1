package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

// TestIngestStdinStreams: `ssanet ingest -` reading a pipe that stays open queues its records
// under the SSA in force before the input ends, and exits 0 once it ends.
func TestIngestStdinStreams(t *testing.T) {
	port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	prov := newAgent(t, "provider", port(), append(fastExchange, withYAML("metrics: "+metrics))...)
	req := newAgent(t, "requester", port(), fastExchange...)
	prov.offer("provider.yaml")
	agree(t, req, prov, requesterTemplate(t, "", "90d"))

	cmd := exec.Command(bin, "--home", prov.home, "ingest", "--format", "eve", "-")
	cmd.Env = baseEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		stdin.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ingest: %v\n%s", err, out.String())
			}
		case <-time.After(cliTimeout):
			cmd.Process.Kill()
			t.Errorf("ingest still running %s after its input ended\n%s", cliTimeout, out.String())
		}
	}()
	recs := sampleEVE(t)
	if _, err := stdin.Write(append(bytes.Join(recs, []byte("\n")), '\n')); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		n, err := queuedMetric(client, metrics)
		if err == nil && n > 0 {
			return // queued with the pipe still open
		}
		last = fmt.Sprintf("%v records queued (%v)", n, err)
		if time.Now().After(deadline) {
			t.Fatalf("after 20s with the input open: %s", last)
		}
		time.Sleep(50 * time.Millisecond) // polling the metrics
	}
}
