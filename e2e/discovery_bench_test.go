//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	// benchNodes is the size of the measured testnet.
	benchNodes = 20
	// benchIdle is how long the agents are left alone before their memory is read.
	benchIdle = 10 * time.Second
	// benchBudget bounds the whole measurement; past it the benchmark fails.
	benchBudget = 3 * time.Minute
	// benchCLIQueries is how many queries are also timed through the CLI, for comparison.
	benchCLIQueries = 20
)

// BenchmarkDiscovery measures the DHT directory on a 20-agent testnet on 127.0.0.1 started
// with `ssanet testnet`: six agents offer (type, format) pairs, then every iteration is one
// discovery query, from each agent in turn, over eight queries (by type, by type and format,
// one with no provider), timed until the agent's control API has returned the complete answer
// (every provider, with its verified signed offers). It reports the median and p95 latency
// and the resident memory (VmRSS) of the agents when idle, before and after the queries.
//
// It starts 20 processes and takes about a minute, so it runs only when asked:
//
//	SSANET_BENCH_DISCOVERY=1 go test ./e2e -run '^$' -bench BenchmarkDiscovery -benchtime 100x -timeout 5m
func BenchmarkDiscovery(b *testing.B) {
	if os.Getenv("SSANET_BENCH_DISCOVERY") != "1" {
		b.Skip("set SSANET_BENCH_DISCOVERY=1 to start a 20-agent testnet and measure discovery")
	}
	begin := time.Now()
	tn := startTestnet(b, benchNodes)
	b.Logf("testnet of %d agents ready in %s", benchNodes, time.Since(begin).Round(time.Millisecond))

	// Six providers, two of each kind, spread over the testnet.
	kinds := []offerSpec{
		{"eve-alerts", [][2]string{{"attack-detection-log", "eve"}}},
		{"ids-incidents", [][2]string{{"attack-detection-log", "idmefv2"}, {"incident", "iodef"}}},
		{"blocklist", [][2]string{{"blacklist", "syslog"}}},
	}
	offers := map[string]offerSpec{}
	dir := b.TempDir()
	for i, name := range []string{"node3", "node6", "node9", "node12", "node15", "node18"} {
		o := kinds[i%len(kinds)]
		if r := run(b, "", nil, "--home", tn.node(name).Home, "offer", "add", offerFile(b, dir, o)); r.code != 0 {
			b.Fatalf("%s: %s", name, r)
		}
		offers[tn.node(name).PeerID] = o
	}
	added := time.Now()
	queries := []query{
		{"attack-detection-log", ""},
		{"attack-detection-log", "eve"},
		{"attack-detection-log", "idmefv2"},
		{"incident", ""},
		{"incident", "iodef"},
		{"blacklist", ""},
		{"blacklist", "syslog"},
		{"blacklist", "eve"}, // offered by nobody
	}
	// want is the complete answer to q asked by self: every provider but self.
	want := func(self string, q query) []string {
		var out []string
		for id, o := range offers {
			if id != self && o.provides(q.typ, q.format) {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	got := func(ps []providerView) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.PeerID)
		}
		slices.Sort(out)
		return out
	}
	clients := make([]*http.Client, len(tn.nodes))
	for i, nd := range tn.nodes {
		clients[i] = controlClient(nd.Home)
	}

	// The offers are advertised in the background: wait until every query from node1
	// and from node20 is answered in full.
	for _, i := range []int{0, len(tn.nodes) - 1} {
		for _, q := range queries {
			deadline := time.Now().Add(advertiseTimeout)
			for {
				ps, err := apiDiscover(clients[i], q)
				if err == nil && slices.Equal(got(ps), want(tn.nodes[i].PeerID, q)) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("discover %s from %s: %v, %v after %s; want %v", q, tn.nodes[i].Name, got(ps), err, advertiseTimeout, want(tn.nodes[i].PeerID, q))
				}
				time.Sleep(pollInterval)
			}
		}
	}
	settled := time.Since(added)

	// Idle: nothing asked of the agents (a fixed pause is the measurement's condition here,
	// not a wait for an event).
	time.Sleep(benchIdle)
	rssStart := benchRSS(b, tn)

	var (
		lat        []time.Duration
		incomplete []string
	)
	for i := 0; b.Loop(); i++ {
		if time.Since(begin) > benchBudget {
			b.Fatalf("over the time budget of %s after %d queries", benchBudget, i)
		}
		n, q := i%len(tn.nodes), queries[i%len(queries)]
		start := time.Now()
		ps, err := apiDiscover(clients[n], q)
		d := time.Since(start)
		if err != nil {
			b.Fatalf("discover %s from %s: %v", q, tn.nodes[n].Name, err)
		}
		lat = append(lat, d)
		if g, w := got(ps), want(tn.nodes[n].PeerID, q); !slices.Equal(g, w) {
			incomplete = append(incomplete, fmt.Sprintf("%s from %s: %d providers, want %d", q, tn.nodes[n].Name, len(g), len(w)))
		}
	}
	b.StopTimer()

	// The same through the CLI (a process per query, as an operator would), for comparison.
	var cliLat []time.Duration
	for i := range benchCLIQueries {
		nd, q := tn.nodes[i%len(tn.nodes)], queries[i%len(queries)]
		start := time.Now()
		r := run(b, "", nil, append([]string{"--home", nd.Home}, q.args()...)...)
		cliLat = append(cliLat, time.Since(start))
		if r.code != 0 {
			b.Fatalf("%s", r)
		}
	}

	time.Sleep(benchIdle)
	rssEnd := benchRSS(b, tn)

	if len(incomplete) > 0 {
		b.Errorf("%d of %d answers were incomplete or wrong:\n%s", len(incomplete), len(lat), strings.Join(incomplete, "\n"))
	}
	med, p95, worst := percentile(lat, 50), percentile(lat, 95), percentile(lat, 100)
	b.ReportMetric(ms(med), "median-ms")
	b.ReportMetric(ms(p95), "p95-ms")
	b.ReportMetric(float64(percentile(rssStart, 50))/1024, "idle-rss-median-MiB")
	b.ReportMetric(float64(percentile(rssStart, 100))/1024, "idle-rss-max-MiB")
	b.Logf("%d agents on 127.0.0.1; 6 providers; offers answered in full everywhere %s after they were added",
		benchNodes, settled.Round(time.Millisecond))
	b.Logf("discovery latency over %d queries from %d agents (control API, complete answer): median %.1f ms, p95 %.1f ms, max %.1f ms; %d incomplete",
		len(lat), min(len(lat), len(tn.nodes)), ms(med), ms(p95), ms(worst), len(incomplete))
	b.Logf("the same through the CLI (%d queries, process start included): median %.1f ms, p95 %.1f ms",
		len(cliLat), ms(percentile(cliLat, 50)), ms(percentile(cliLat, 95)))
	b.Logf("RSS per agent after %s idle, before the queries: median %.1f MiB, max %.1f MiB (%d agents, %.0f MiB in all)",
		benchIdle, float64(percentile(rssStart, 50))/1024, float64(percentile(rssStart, 100))/1024, len(rssStart), float64(sum(rssStart))/1024)
	b.Logf("RSS per agent after %s idle, after the queries:  median %.1f MiB, max %.1f MiB",
		benchIdle, float64(percentile(rssEnd, 50))/1024, float64(percentile(rssEnd, 100))/1024)
	b.Logf("measurement took %s", time.Since(begin).Round(time.Second))
}

// benchRSS reads the VmRSS (KiB) of every agent of the testnet.
func benchRSS(b *testing.B, tn *testnet) []int {
	b.Helper()
	var out []int
	for _, nd := range tn.nodes {
		kib, err := rssKiB(agentPID(b, nd.Home))
		if err != nil {
			b.Fatalf("%s: %v", nd.Name, err)
		}
		out = append(out, kib)
	}
	return out
}

// percentile is the nearest-rank p-th percentile of xs (p in 1..100); xs must not be empty.
func percentile[T int | time.Duration](xs []T, p int) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
