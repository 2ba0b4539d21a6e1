//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// benchNodes is the size of the measured testnet unless SSANET_BENCH_NODES says another
	// (from 20 to 200, the most `ssanet testnet` starts).
	benchNodes = 20
	// benchIdle is how long the agents are left alone before their memory is read.
	benchIdle = 10 * time.Second
	// benchBudget bounds the whole measurement at 20 agents (past it the benchmark fails);
	// each agent above 20 adds benchBudgetPerAgent.
	benchBudget         = 3 * time.Minute
	benchBudgetPerAgent = 3 * time.Second
	// benchCLIQueries is how many queries are also timed through the CLI, for comparison.
	benchCLIQueries = 20
)

// BenchmarkDiscovery measures the DHT directory on a testnet of 20 agents (or
// SSANET_BENCH_NODES) on 127.0.0.1 started with `ssanet testnet`: six agents offer (type,
// format) pairs, then every iteration is one discovery query, from each agent in turn, over
// eight queries (by type, by type and format, one with no provider), timed until the agent's
// control API has returned the complete answer (every provider, with its verified signed
// offers). It reports the median and p95 latency, the resident memory (VmRSS) of the agents
// when idle, before and after the queries, and the CPU each agent used while idle (utime +
// stime from /proc/PID/stat over benchIdle).
//
// It starts 20 processes and takes about a minute (100: about 10 minutes), so it runs only
// when asked:
//
//	SSANET_BENCH_DISCOVERY=1 go test ./e2e -run '^$' -bench BenchmarkDiscovery -benchtime 100x -timeout 5m
//	SSANET_BENCH_DISCOVERY=1 SSANET_BENCH_NODES=100 go test ./e2e -run '^$' -bench BenchmarkDiscovery -benchtime 200x -timeout 20m
func BenchmarkDiscovery(b *testing.B) {
	if os.Getenv("SSANET_BENCH_DISCOVERY") != "1" {
		b.Skip("set SSANET_BENCH_DISCOVERY=1 to start a 20-agent testnet and measure discovery")
	}
	nodes := benchNodes
	if s := os.Getenv("SSANET_BENCH_NODES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < benchNodes || n > 200 {
			b.Fatalf("SSANET_BENCH_NODES=%q: want a number from %d to 200", s, benchNodes)
		}
		nodes = n
	}
	budget := benchBudget + time.Duration(nodes-benchNodes)*benchBudgetPerAgent
	begin := time.Now()
	tn := startTestnet(b, nodes)
	b.Logf("testnet of %d agents ready in %s", nodes, time.Since(begin).Round(time.Millisecond))

	// Six providers, two of each kind, spread over the testnet.
	kinds := []offerSpec{
		{"eve-alerts", [][2]string{{"attack-detection-log", "eve"}}},
		{"ids-incidents", [][2]string{{"attack-detection-log", "idmefv2"}, {"incident", "iodef"}}},
		{"blocklist", [][2]string{{"blacklist", "syslog"}}},
	}
	offers := map[string]offerSpec{}
	dir := b.TempDir()
	for i := range 6 {
		name := fmt.Sprintf("node%d", 3+i*(nodes-2)/6)
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
			deadline := time.Now().Add(advertiseTimeout * time.Duration(nodes/benchNodes))
			for {
				ps, err := apiDiscover(clients[i], q)
				if err == nil && slices.Equal(got(ps), want(tn.nodes[i].PeerID, q)) {
					break
				}
				if time.Now().After(deadline) {
					for _, w := range want(tn.nodes[i].PeerID, q) {
						if !slices.Contains(got(ps), w) {
							tn.dumpLog(tn.nameOf(w))
						}
					}
					b.Fatalf("discover %s from %s: %v, %v after %s; want %v", q, tn.nodes[i].Name, got(ps), err, advertiseTimeout*time.Duration(nodes/benchNodes), want(tn.nodes[i].PeerID, q))
				}
				time.Sleep(pollInterval)
			}
		}
	}
	settled := time.Since(added)

	// Idle: nothing asked of the agents (a fixed pause is the measurement's condition here,
	// not a wait for an event).
	cpu0, t0 := benchCPU(b, tn), time.Now()
	time.Sleep(benchIdle)
	rssStart := benchRSS(b, tn)
	cpu1, idle := benchCPU(b, tn), time.Since(t0)
	var idleCPU []time.Duration
	for i := range cpu0 {
		idleCPU = append(idleCPU, cpu1[i]-cpu0[i])
	}
	// idleShare is CPU time over wall time, in % of one core.
	idleShare := func(d time.Duration) float64 { return 100 * float64(d) / float64(idle) }

	var (
		lat        []time.Duration
		incomplete []string
	)
	for i := 0; b.Loop(); i++ {
		if time.Since(begin) > budget {
			b.Fatalf("over the time budget of %s after %d queries", budget, i)
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
	b.ReportMetric(float64(sum(rssStart))/1024, "idle-rss-total-MiB")
	b.ReportMetric(idleShare(percentile(idleCPU, 50)), "idle-cpu-median-%core")
	b.Logf("%d agents on 127.0.0.1; 6 providers; offers answered in full from the first and the last agent %s after they were added",
		nodes, settled.Round(time.Millisecond))
	b.Logf("discovery latency over %d queries from %d agents (control API, complete answer): median %.1f ms, p95 %.1f ms, max %.1f ms; %d incomplete",
		len(lat), min(len(lat), len(tn.nodes)), ms(med), ms(p95), ms(worst), len(incomplete))
	b.Logf("the same through the CLI (%d queries, process start included): median %.1f ms, p95 %.1f ms",
		len(cliLat), ms(percentile(cliLat, 50)), ms(percentile(cliLat, 95)))
	b.Logf("RSS per agent after %s idle, before the queries: median %.1f MiB, max %.1f MiB (%d agents, %.0f MiB in all)",
		benchIdle, float64(percentile(rssStart, 50))/1024, float64(percentile(rssStart, 100))/1024, len(rssStart), float64(sum(rssStart))/1024)
	b.Logf("RSS per agent after %s idle, after the queries:  median %.1f MiB, max %.1f MiB (%.0f MiB in all)",
		benchIdle, float64(percentile(rssEnd, 50))/1024, float64(percentile(rssEnd, 100))/1024, float64(sum(rssEnd))/1024)
	var idleSum time.Duration
	for _, d := range idleCPU {
		idleSum += d
	}
	b.Logf("CPU per agent while idle (%s, before the queries): median %.2f %%, max %.2f %% of a core; all %d agents %.1f %%",
		idle.Round(time.Millisecond), idleShare(percentile(idleCPU, 50)), idleShare(percentile(idleCPU, 100)), len(idleCPU), idleShare(idleSum))
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

// benchCPU reads the CPU time (user + system) every agent of the testnet has used so far.
func benchCPU(b *testing.B, tn *testnet) []time.Duration {
	b.Helper()
	var out []time.Duration
	for _, nd := range tn.nodes {
		d, err := cpuTime(agentPID(b, nd.Home))
		if err != nil {
			b.Fatalf("%s: %v", nd.Name, err)
		}
		out = append(out, d)
	}
	return out
}

// cpuTime is the user + system CPU time of a process (utime and stime, fields 14 and 15 of
// /proc/PID/stat, in clock ticks of 1/100 s, USER_HZ on Linux).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: fields are counted
	// after its closing one, which starts at field 3.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
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
