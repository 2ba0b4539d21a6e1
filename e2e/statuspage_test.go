package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// statusView is what the status tests read of `ssanet --json status`.
type statusView struct {
	Agreements []struct {
		SSAID   string `json:"ssa_id"`
		Role    string `json:"role"`
		Phase   string `json:"phase"`
		Verdict string `json:"verdict"`
	} `json:"agreements"`
	Flows []struct {
		SSAID  string  `json:"ssa_id"`
		In     uint64  `json:"in"`
		InRate float64 `json:"in_per_second"`
	} `json:"flows"`
	Sinks []struct {
		Name string `json:"name"`
		SSAs map[string]struct {
			Position uint64 `json:"position"`
		} `json:"ssas"`
	} `json:"sinks"`
}

// TestStatusPage: while records flow from a provider to a requester that forwards them to a
// JSON Lines sink, the requester's status page on its metrics address, loaded in a real
// headless browser (Debian's chromium), shows the SSA with its phase and verdict, a nonzero
// flow and the sink's position; `ssanet status` shows the same on one screen. The test
// writes the browser's screenshot of the page to its artifact directory (go test -artifacts
// -outputdir DIR keeps it).
func TestStatusPage(t *testing.T) {
	browser := findChromium(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sinkPath := filepath.Join(t.TempDir(), "out.jsonl")
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "", withYAML("metrics: "+metrics), withJSONLSink(sinkPath))
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))

	// Records flow for as long as the test looks: a batch every 200 ms.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sample := sampleEVE(t)
		dir := t.TempDir()
		for i := 0; ctx.Err() == nil && i < 1000; i++ {
			path, err := writeStream(dir, "batch.jsonl", eveStream(sample, streamBase, i*20, 20, nil))
			if err != nil {
				t.Error(err)
				return
			}
			if r := runCLI("", nil, []string{"--home", prov.home, "ingest", "--format", "eve", path}); r.code != 0 {
				if ctx.Err() == nil {
					t.Errorf("ingest: %s", r)
				}
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // the pace of the sensor
			}
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })

	// The agent's own view first: flowing, assessed, forwarded.
	var st statusView
	deadline := time.Now().Add(60 * time.Second)
	for !statusShows(st, id) {
		if time.Now().After(deadline) {
			t.Fatalf("ssanet status never showed SSA %s in execution, assessed fulfilled, flowing and forwarded: %+v", id, st)
		}
		time.Sleep(pollInterval) // poll of the agent's state, with a deadline
		req.query(&st, "status")
	}
	text := req.must("status")
	for _, want := range []string{"AGREEMENTS", "FLOWS", "SINKS", "PEERS", id, "execution", "fulfilled", "jsonl"} {
		if !strings.Contains(text, want) {
			t.Errorf("ssanet status lacks %q:\n%s", want, text)
		}
	}
	t.Logf("ssanet status:\n%s", text)

	// The page, as a browser renders it after its script has polled the agent.
	url := "http://" + metrics + "/"
	dom := chromium(t, browser, "--dump-dom", url)
	agreement := regexp.MustCompile(`<tr data-ssa="` + id + `">.*?</tr>`).FindString(dom)
	flow := regexp.MustCompile(`<tr data-ssa="` + id + `"><td class="id">` + id + `</td><td>requester</td><td class="num in-rate">([0-9.]+)</td>`).FindStringSubmatch(dom)
	sinkRow := regexp.MustCompile(`<tr data-sink="jsonl" data-ssa="` + id + `">.*?<td class="num position">([0-9]+)</td>`).FindStringSubmatch(dom)
	switch {
	case !strings.Contains(dom, `class="live"`):
		t.Errorf("the page did not update from the agent (its script did not run, or its request failed):\n%s", dom)
	case !strings.Contains(agreement, `>execution<`) || !strings.Contains(agreement, `>fulfilled<`):
		t.Errorf("the page does not show SSA %s in execution and fulfilled: %q\n%s", id, agreement, dom)
	case flow == nil || flow[1] == "0.0":
		t.Errorf("the page does not show records of SSA %s flowing in: %q\n%s", id, flow, dom)
	case sinkRow == nil || sinkRow[1] == "0":
		t.Errorf("the page does not show the sink jsonl forwarding SSA %s: %q\n%s", id, sinkRow, dom)
	}

	shot := filepath.Join(t.ArtifactDir(), "status-page.png")
	chromium(t, browser, "--screenshot="+shot, "--window-size=1280,900", url)
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Fatalf("no screenshot of the page: %v", err)
	}
	t.Logf("screenshot: %s", shot)
}

// statusShows reports whether a status shows SSA id requested, in execution, assessed
// fulfilled, with records flowing in and forwarded to the sink.
func statusShows(st statusView, id string) bool {
	ok := 0
	for _, a := range st.Agreements {
		if a.SSAID == id && a.Phase == "execution" && a.Verdict == "fulfilled" {
			ok++
		}
	}
	for _, f := range st.Flows {
		if f.SSAID == id && f.InRate > 0 {
			ok++
		}
	}
	for _, s := range st.Sinks {
		if s.SSAs[id].Position > 0 {
			ok++
		}
	}
	return ok == 3
}

// findChromium is Debian's chromium (package chromium); the test skips only where it is not
// installed.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not installed (Debian package chromium): no headless browser to load the status page")
	return ""
}

// chromium runs the headless browser on url with args, its scripts given 5 s of virtual
// time, and returns what it printed.
func chromium(t *testing.T, browser string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000"}, args...)
	cmd := exec.CommandContext(ctx, browser, all...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
