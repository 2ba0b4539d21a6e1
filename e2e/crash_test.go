package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestProviderCrashMidBurst fires a burst of concurrent `ssanet request` processes at one
// provider and kills the provider with SIGKILL in the middle of it (after a few requests have
// completed, and again later), each time restarting it on the same home and port. Once the requester's retries have
// settled, no SSA may be approved on one side only, and every SSA approved on both sides must
// have byte-identical exports and identical transcripts.
func TestProviderCrashMidBurst(t *testing.T) {
	const (
		burst    = 40                    // concurrent request processes
		pace     = 20 * time.Millisecond // between two launches
		downtime = time.Second           // how long the provider stays dead
		settleBy = 60 * time.Second      // bound on the wait for the retries to settle
	)
	// The provider is killed once this many requests have completed, each time.
	killAfter := []int{5, 20}

	port := freePort(t)
	fast := []option{withConfig("retry-interval", "1s"), withConfig("message-timeout", "5s")}
	// The burst agrees 40 SSAs with one requester: more than a sensor's default bound.
	prov := newAgent(t, "provider", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port),
		append(fast, withConfig("max-agreements-per-peer", fmt.Sprint(2*burst)))...)
	req := newAgent(t, "requester", "", fast...)
	prov.offer("provider.yaml")
	addr, tmpl := prov.addr(), testdata(t, "requester.yaml")

	results := make(chan result, burst)
	go func() {
		for i := 0; i < burst; i++ {
			ch := req.spawn("--json", "request", "--provider", addr, "--template", tmpl, "--wait", "20s")
			go func() { results <- <-ch }()
			time.Sleep(pace)
		}
	}()

	start := time.Now()
	var done []result
	var kills []string
	for len(done) < burst {
		select {
		case r := <-results:
			done = append(done, r)
		case <-time.After(cliTimeout + 10*time.Second):
			t.Fatalf("only %d of %d requests completed", len(done), burst)
		}
		if len(kills) < len(killAfter) && len(done) == killAfter[len(kills)] {
			prov.kill()
			kills = append(kills, fmt.Sprintf("after %d completed, at %s", len(done), time.Since(start).Round(time.Millisecond)))
			time.Sleep(downtime) // the fault: requests meet a dead provider meanwhile
			prov.start()
		}
	}
	burstTime := time.Since(start)
	exits := map[int]int{}
	for _, r := range done {
		exits[r.code]++
		if r.code != 0 && r.code != 1 {
			t.Errorf("request: unexpected exit: %s", r)
		}
	}

	// Wait until neither side waits for the other any more.
	deadline := time.Now().Add(settleBy)
	var reqs, provs map[string]negView
	for {
		reqs, provs = byID(t, req), byID(t, prov)
		pending := pendingStates(reqs) + pendingStates(provs)
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d negotiations still wait for the peer %s after the burst", pending, settleBy)
			break
		}
		time.Sleep(pollInterval * 5)
	}
	settled := time.Since(start)

	approvedBoth := 0
	for id, r := range reqs {
		p, ok := provs[id]
		switch {
		case r.State == "approved" && (!ok || p.State != "approved"):
			t.Errorf("SSA %s is approved on the requester only (provider: %q)", id, p.State)
		case r.State == "approved":
			approvedBoth++
			sameAgreement(t, req, prov, id)
			sameTranscript(t, req, prov, id, "request", "proposal", "acceptance", "confirmation")
		}
	}
	for id, p := range provs {
		if r := reqs[id]; p.State == "approved" && r.State != "approved" {
			t.Errorf("SSA %s is approved on the provider only (requester: %q)", id, r.State)
		}
	}
	if len(reqs) != burst {
		t.Errorf("the requester holds %d negotiations, want one per request: %d", len(reqs), burst)
	}
	t.Logf("crash test: %d requests (one every %s), %d kill(s) of the provider (%s), each down %s; "+
		"burst done in %s, settled at %s; request exits %v; requester %d negotiations %v; provider %d %v; "+
		"approved on both sides: %d; requester log: %d messages not delivered at first",
		burst, pace, len(kills), strings.Join(kills, "; "), downtime, burstTime.Round(time.Millisecond),
		settled.Round(time.Millisecond), exits, len(reqs), states(reqs), len(provs), states(provs), approvedBoth,
		req.logLines("not delivered yet"))
}

// byID lists an agent's negotiations by SSA ID.
func byID(t *testing.T, a *agent) map[string]negView {
	t.Helper()
	out := map[string]negView{}
	for _, v := range a.list() {
		if _, dup := out[v.SSAID]; dup {
			t.Errorf("%s lists SSA %q twice", a.name, v.SSAID)
		}
		out[v.SSAID] = v
	}
	return out
}

// pendingStates counts the negotiations that wait for the peer (a *-sent state).
func pendingStates(vs map[string]negView) int {
	n := 0
	for _, v := range vs {
		if strings.HasSuffix(v.State, "-sent") {
			n++
		}
	}
	return n
}

// states counts negotiations per state, for the log.
func states(vs map[string]negView) string {
	count := map[string]int{}
	for _, v := range vs {
		count[v.State]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, count[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}
