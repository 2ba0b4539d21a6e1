package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFollowCrashExactlyOnce: a provider follows a file of 100,000 EVE records, each with its
// own flow_id, and is killed with SIGKILL again and again while it reads it: half of the
// kills come the moment its records_queued_total metric moves (a chunk has just been
// committed: the window in which an offset saved apart from the records is behind them),
// the others a random moment later. Restarted on the same home, it finishes the file. The
// provider must have queued every record once: its report counts 100,000 records ingested
// and refined, and the requester holds each flow_id exactly once.
func TestFollowCrashExactlyOnce(t *testing.T) {
	const (
		total    = 100_000
		maxKills = 20               // bound on the kill loop's rounds
		killFor  = 60 * time.Second // and on its time
		// quiet is how long the queue may stay still before the kill loop takes the file
		// for read to its end.
		quiet = 5 * time.Second
	)
	port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
	dir := t.TempDir()
	eve := filepath.Join(dir, "eve.json")
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	prov := newAgent(t, "provider", port(), append(fastExchange,
		withYAML(fmt.Sprintf("metrics: %s\ningest:\n  follow:\n    - {path: %q, format: eve}", metrics, eve)))...)
	req := newAgent(t, "requester", port(), fastExchange...)
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))

	// The file appears once the SSA is in force, so that every record is queued under it.
	stream := withFlowIDs(eveStream(sampleEVE(t), streamBase, 0, total, nil))
	if _, err := writeStream(dir, "eve.json", stream); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 11))
	var kills []string
	for len(kills) < maxKills && time.Since(start) < killFor {
		if !waitQueued(t, metrics, quiet) {
			break // the file was read to its end
		}
		how := "as a chunk was queued"
		if len(kills)%2 == 1 {
			d := time.Duration(rng.IntN(300)) * time.Millisecond
			time.Sleep(d) // the fault's moment, not a wait for a condition
			how = fmt.Sprintf("%s after a chunk was queued", d)
		}
		prov.kill()
		kills = append(kills, fmt.Sprintf("%s at %s", how, time.Since(start).Round(time.Millisecond)))
		prov.start()
	}
	if len(kills) < 2 {
		t.Fatalf("only %d kill(s) while the provider read the file (%v): the test did not test", len(kills), kills)
	}

	// Let the provider finish and the requester receive everything it queued.
	deadline := time.Now().Add(deliverBy)
	var as assessmentView
	for stable := 0; stable < 3; {
		before := as
		as = req.monitor(id)
		p := as.Provider
		done := p != nil && p.Ingested >= total && as.Local.Last == p.Refined && p.Acked == p.Refined
		if done && before.Provider != nil && before.Provider.Ingested == p.Ingested {
			stable++
		} else {
			stable = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the provider reports %+v and the requester holds %d records (want %d)",
				deliverBy, p, as.Local.Last, total)
		}
		time.Sleep(pollInterval * 5)
	}

	held := req.records(id)
	seen := make(map[uint64]int, total)
	for _, r := range held {
		var v struct {
			FlowID uint64 `json:"flow_id"`
		}
		if err := json.Unmarshal(r.body(), &v); err != nil {
			t.Fatalf("record #%d: %v", r.Seq, err)
		}
		seen[v.FlowID]++
	}
	dups, missing := 0, 0
	for f := uint64(1); f <= total; f++ {
		switch n := seen[f]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	p := as.Provider
	t.Logf("%d kills of the provider (%s); provider: %d ingested, %d refined; requester: %d records held, %d unique flow IDs of %d, %d duplicates, %d missing",
		len(kills), strings.Join(kills, "; "), p.Ingested, p.Refined, len(held), len(seen), total, dups, missing)
	if p.Ingested != total || p.Refined != total {
		t.Errorf("the provider ingested %d and refined %d records of a file of %d", p.Ingested, p.Refined, total)
	}
	if dups != 0 || missing != 0 || len(held) != total {
		t.Errorf("the requester holds %d records: %d duplicates, %d missing of %d", len(held), dups, missing, total)
	}
}

var flowIDField = regexp.MustCompile(`"flow_id":\d+,`)

// withFlowIDs gives record i of the stream the flow_id i+1, its identity.
func withFlowIDs(recs []eveRecord) []eveRecord {
	for i := range recs {
		line := flowIDField.ReplaceAll(recs[i].line, nil)
		recs[i].line = append([]byte(`{"flow_id":`+strconv.Itoa(i+1)+`,`), line[1:]...)
	}
	return recs
}

// waitQueued polls the agent's metrics (a loopback address) until records_queued_total is
// above zero, and reports false if it stays at zero (or the agent does not answer) for
// timeout.
func waitQueued(t *testing.T, addr string, timeout time.Duration) bool {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if n, err := queuedMetric(client, addr); err == nil && n > 0 {
			return true
		}
		time.Sleep(time.Millisecond) // a tight poll: the kill is to come right after a commit
	}
	return false
}

// queuedMetric reads ssanet_records_queued_total from the agent's metrics.
func queuedMetric(client *http.Client, addr string) (float64, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ssanet_records_queued_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no ssanet_records_queued_total in the metrics of %s", addr)
}
