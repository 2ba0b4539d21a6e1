package discovery

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ssanet/ssanet/protocol"
)

const (
	// simProviders is how many agents of the simulated directory offer the looked-up type.
	simProviders = 5
	// simLookups is how many lookups are timed at every size, each from a random agent that
	// does not provide.
	simLookups = 50
	// simBudgetPerAgent bounds one size of the simulation, from the first host to the last
	// lookup: 10 minutes, or this much per agent if more.
	simBudgetPerAgent = 2 * time.Second
)

// TestDirectorySimulation runs the real directory (Directory, kad-dht with the /ssanet prefix)
// on N agents over libp2p's in-process mock network, every agent bootstrapping through the
// first as `ssanet testnet` does, and measures the lookup (Find: the DHT query until it
// completes, then the fetch and verification of every provider's signed offers) from random
// agents: latency p50 and p95, hops and peers queried per lookup, and the memory each agent
// takes. Every lookup must return every provider. The mock network has no latency, so the
// latency is the CPU cost; over a real network add about one round trip per hop.
//
// Hops are counted from kad-dht's query events: a peer queried first (from the routing table)
// is hop 1, a peer first named by a hop-k peer's answer is hop k+1; the lookup's hops are
// the largest hop among the peers that answered.
//
// N = 10 runs always; larger sizes only when asked (1,000 takes many minutes and a few GB):
//
//	SSANET_SIM_SIZES=10,100,1000 go test ./discovery -run DirectorySimulation -v -timeout 30m
func TestDirectorySimulation(t *testing.T) {
	sizes := []int{10}
	if s := os.Getenv("SSANET_SIM_SIZES"); s != "" {
		sizes = nil
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < simProviders+2 || n > 5000 {
				t.Fatalf("SSANET_SIM_SIZES=%q: each size must be a number from %d to 5000", s, simProviders+2)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) { simulate(t, n) })
	}
}

type simResult struct {
	lat           []time.Duration
	hops, queried []int
}

func simulate(t *testing.T, n int) {
	begin := time.Now()
	budget := max(10*time.Minute, time.Duration(n)*simBudgetPerAgent)
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })

	m0 := liveBytes()
	nodes := make([]*node, n)
	for i := range nodes {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		a := ma.StringCast(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001", i>>16&0xff, i>>8&0xff, i&0xff))
		h, err := mn.AddPeer(k, a)
		if err != nil {
			t.Fatal(err)
		}
		id, err := protocol.NewIdentity(k)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = &node{h: h, id: id}
	}
	m1 := liveBytes()
	// Every pair may connect (one link per pair); who connects to whom is the DHT's business.
	for i := range nodes {
		for j := i + 1; j < n; j++ {
			if _, err := mn.LinkPeers(nodes[i].h.ID(), nodes[j].h.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
	m2 := liveBytes()

	boot := []peer.AddrInfo{{ID: nodes[0].h.ID(), Addrs: nodes[0].h.Addrs()}}
	for i, nd := range nodes {
		var bi []peer.AddrInfo
		if i > 0 {
			bi = boot
		}
		dir, err := New(nd.h, nd.id, Config{Bootstrap: bi, Readvertise: time.Hour}, nd.currentOffers, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		nd.dir = dir
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() { nd.dir.Close() })
		}
		wg.Wait()
	})
	// Every agent joined through node 0; a routing table refresh everywhere (which a running
	// agent does every 10 minutes) stands for a directory that has been up for a while.
	waitUntil(t, begin, budget, "every agent has a peer in its routing table", func() bool {
		for _, nd := range nodes {
			if nd.dir.dht.RoutingTable().Size() == 0 {
				return false
			}
		}
		return true
	})
	joined := time.Since(begin)
	refreshAll(t, nodes)
	refreshed := time.Since(begin)

	rng := mrand.New(mrand.NewPCG(uint64(n), 17))
	perm := rng.Perm(n)
	providers, others := perm[:simProviders], perm[simProviders:]
	for _, i := range providers {
		nd := nodes[i]
		nd.setOffers(offer(t, nd, "sim", info("attack-detection-log", "eve")))
	}
	// Providing takes a lookup per key; the first lookup from a non-provider must find them
	// all within a minute (and 0.1 s per agent).
	waitUntil(t, time.Now(), time.Minute+time.Duration(n)*100*time.Millisecond, "the first lookup finds every provider", func() bool {
		got, _ := lookup(nodes[others[0]], time.Minute)
		return len(got) == simProviders
	})
	advertised := time.Since(begin)
	m3 := liveBytes()

	var res simResult
	var missing []string
	for i := range simLookups {
		if time.Since(begin) > budget {
			t.Fatalf("N=%d: over the budget of %s after %d lookups", n, budget, i)
		}
		from := nodes[others[rng.IntN(len(others))]]
		start := time.Now()
		got, ev := lookup(from, time.Minute)
		res.lat = append(res.lat, time.Since(start))
		res.hops = append(res.hops, ev.hops)
		res.queried = append(res.queried, ev.queried)
		if len(got) != simProviders {
			missing = append(missing, fmt.Sprintf("lookup %d from %s: %d providers", i, from.h.ID().ShortString(), len(got)))
		}
		if ev.hops < 1 {
			t.Errorf("lookup %d: no peer answered (%d queried)", i, ev.queried)
		}
	}
	if len(missing) > 0 {
		t.Errorf("N=%d: %d of %d lookups did not return all %d providers:\n%s", n, len(missing), simLookups, simProviders, strings.Join(missing, "\n"))
	}
	mean := func(xs []int) float64 {
		s := 0
		for _, x := range xs {
			s += x
		}
		return float64(s) / float64(len(xs))
	}
	t.Logf("N=%d agents, %d providers, %d lookups: latency p50 %.2f ms, p95 %.2f ms; hops mean %.2f, max %d; peers queried mean %.1f, max %d",
		n, simProviders, simLookups, simMS(pct(res.lat, 50)), simMS(pct(res.lat, 95)),
		mean(res.hops), slices.Max(res.hops), mean(res.queried), slices.Max(res.queried))
	t.Logf("N=%d memory per agent (Go heap + stacks after GC): directory (DHT, routing table, provider records) %.0f KiB; mock host %.0f KiB; mock links %.0f KiB in all (not counted); joined %s, refreshed %s, advertised %s, done %s after the start",
		n, float64(m3-m2)/float64(n)/1024, float64(m1-m0)/float64(n)/1024, float64(m2-m1)/1024,
		joined.Round(time.Millisecond), refreshed.Round(time.Millisecond), advertised.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}

// refreshAll refreshes every agent's routing table, 16 at a time, and waits for them (at most
// 2 minutes each: a refresh still running then is counted and logged).
func refreshAll(t *testing.T, nodes []*node) {
	t.Helper()
	sem := make(chan struct{}, 16)
	var (
		wg   sync.WaitGroup
		slow atomic.Int64
	)
	for _, nd := range nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			select {
			case err := <-nd.dir.dht.RefreshRoutingTable():
				if err != nil {
					t.Logf("refresh %s: %v", nd.h.ID().ShortString(), err)
				}
			case <-time.After(2 * time.Minute):
				// Counted, not fatal: the lookups below say whether the directory works.
				slow.Add(1)
			}
		})
	}
	wg.Wait()
	if slow.Load() > 0 {
		t.Logf("%d of %d routing table refreshes had not finished after 2 minutes", slow.Load(), len(nodes))
	}
}

type queryStats struct{ hops, queried int }

// lookup runs Find for the simulated type from nd, counting kad-dht's query events.
func lookup(nd *node, timeout time.Duration) ([]Provider, queryStats) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, events := routing.RegisterForQueryEvents(ctx)
	statsc := make(chan queryStats, 1)
	go func() {
		depth := map[peer.ID]int{}
		var st queryStats
		for ev := range events {
			switch ev.Type {
			case routing.SendingQuery:
				st.queried++
				if depth[ev.ID] == 0 {
					depth[ev.ID] = 1
				}
			case routing.PeerResponse:
				d := max(depth[ev.ID], 1)
				st.hops = max(st.hops, d)
				for _, r := range ev.Responses {
					if depth[r.ID] == 0 {
						depth[r.ID] = d + 1
					}
				}
			}
		}
		statsc <- st
	}()
	got, _ := nd.dir.Find(ctx, "attack-detection-log", "eve")
	cancel() // closes events
	return got, <-statsc
}

// waitUntil polls cond until it holds, or fails the test once budget has passed since begin.
func waitUntil(t *testing.T, begin time.Time, budget time.Duration, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if time.Since(begin) > budget {
			t.Fatalf("not true after %s: %s", budget, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// liveBytes is the live Go heap and the goroutine stacks, after a collection.
func liveBytes() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}

// pct is the nearest-rank p-th percentile of xs.
func pct(xs []time.Duration, p int) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[max((p*len(s)+99)/100, 1)-1]
}

func simMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
