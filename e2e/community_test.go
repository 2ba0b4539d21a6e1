package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// communityT bounds how long a roster published at one agent may take to be applied by every
// member of the testnet (and a removed member to be disconnected everywhere).
const communityT = 30 * time.Second

// communityView is the part of `ssanet community show --json` the test reads.
type communityView struct {
	Version uint64 `json:"version"`
}

func (a *agent) rosterVersion() uint64 {
	a.t.Helper()
	var v communityView
	a.query(&v, "community", "show")
	return v.Version
}

// connectedTo lists the agents of among that a holds a connection to.
func (a *agent) connectedTo(among []*agent, ids []string) []string {
	a.t.Helper()
	var ps []peerView
	a.query(&ps, "peers")
	var out []string
	for _, p := range ps {
		if i := slices.Index(ids, p.Peer); i >= 0 && p.Connected {
			out = append(out, among[i].name)
		}
	}
	return out
}

// appliedAt is when a's log says it applied roster version v (zero if it does not): for the
// report of T only, at the precision of the log rather than of the polls.
func (a *agent) appliedAt(v uint64) time.Time {
	data, err := os.ReadFile(a.log)
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(data), "\n") {
		var e struct {
			Time    time.Time `json:"time"`
			Msg     string    `json:"msg"`
			Version uint64    `json:"version"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "community roster applied" && e.Version == v {
			return e.Time
		}
	}
	return time.Time{}
}

// lastApplied is the latest time at which one of agents applied roster version v, after since.
func lastApplied(agents []*agent, v uint64, since time.Time) time.Duration {
	var last time.Duration
	for _, a := range agents {
		if at := a.appliedAt(v); !at.IsZero() {
			last = max(last, at.Sub(since))
		}
	}
	return last
}

// waitAll polls until every agent satisfies cond, and returns how long it took.
func waitAll(t *testing.T, agents []*agent, since time.Time, what string, cond func(a *agent) bool) time.Duration {
	t.Helper()
	pending := slices.Clone(agents)
	deadline := since.Add(communityT)
	for {
		pending = slices.DeleteFunc(pending, cond)
		if len(pending) == 0 {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			var names []string
			for _, a := range pending {
				names = append(names, a.name)
			}
			t.Fatalf("%s: after %s, not yet at %s", what, communityT, strings.Join(names, ", "))
		}
		time.Sleep(pollInterval)
	}
}

// notDialled reports whether r is the outcome `ssanet request` documents for a provider this
// agent's own roster (or allow-list) refuses to dial: nothing is sent, the request waits in
// request-sent to be tried again, and after --wait the CLI exits 1 saying the peer could not be
// reached and why. (Exit 3 is the provider's refusal, which it cannot give here: it is never
// reached.)
func notDialled(r result) bool {
	return r.code == 1 && strings.Contains(r.stderr, "still request-sent") &&
		strings.Contains(r.stderr, "could not be reached") && strings.Contains(r.stderr, "not admitted by this agent's community roster")
}

// TestCommunityRoster runs a community of 10 agents (admins m1, m2, m3; k = 2) bootstrapped
// on m1, and an agent x outside it: x cannot negotiate with the members; a roster adding x,
// signed by m2 and m3 and published at m4 alone, reaches every member, and x then negotiates
// with each of them; a roster removing x, published at m7, disconnects x everywhere and x
// cannot negotiate any more; the older roster published again changes nothing.
func TestCommunityRoster(t *testing.T) {
	const n = 10
	members := make([]*agent, n)
	for i := range members {
		members[i] = newAgent(t, fmt.Sprintf("m%d", i+1), fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))
	}
	x := newAgent(t, "x", "")
	x.offer("provider.yaml")
	members[0].offer("provider.yaml")
	ids := make([]string, n)
	for i, m := range members {
		ids[i] = m.peerID()
	}
	xid := x.peerID()
	boot := members[0].addr()

	dir := t.TempDir()
	v1, v2, v3 := filepath.Join(dir, "v1.cbor"), filepath.Join(dir, "v2.cbor"), filepath.Join(dir, "v3.cbor")
	members[0].must("community", "init", "--name", "e2e", "--admins", strings.Join(ids[:3], ","), "--threshold", "2",
		"--members", strings.Join(ids[3:], ","), "--out", v1)
	members[0].must("community", "sign", v1)
	members[1].must("community", "sign", v1)
	for i, m := range members {
		m.stop()
		extra := "community: " + v1 + "\n"
		if i > 0 {
			extra += "bootstrap:\n  - " + boot + "\n"
		}
		appendConfig(t, m.home, extra)
		m.start()
	}
	waitAll(t, members, time.Now(), "version 1 at start", func(a *agent) bool { return a.rosterVersion() == 1 })

	// Outside the community, x can negotiate with nobody.
	if _, r := members[4].request(x, testdata(t, "requester.yaml"), 5*time.Second); !notDialled(r) {
		t.Fatalf("m5 requested from x, not a member: %s\nwant exit 1: the request waits, its own roster refuses to dial x", r)
	}

	// v2 adds x: proposed and published at m4, signed by m2 and m3 (2 of 3).
	members[3].must("community", "propose", "--add", xid, "--org", xid+"=CERT-X", "--out", v2)
	members[1].must("community", "sign", v2)
	members[2].must("community", "sign", v2)
	published := time.Now()
	members[3].must("community", "publish", v2)
	tApply := waitAll(t, members, published, "version 2", func(a *agent) bool { return a.rosterVersion() == 2 })
	var started []<-chan result
	for _, m := range members {
		started = append(started, m.spawn("--json", "request", "--provider", x.addr(), "--template", testdata(t, "requester.yaml"), "--wait", "20s"))
	}
	for i, ch := range started {
		r := <-ch
		var v negView
		if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "approved" {
			t.Fatalf("%s -> x after version 2: want approved: %s", members[i].name, r)
		}
	}
	tNegotiate := time.Since(published)
	t.Logf("T: version 2 applied by all %d members %s after its publication at m4 (their logs: %s); all %d negotiated with x after %s",
		n, tApply.Round(time.Millisecond), lastApplied(members, 2, published).Round(time.Millisecond), n, tNegotiate.Round(time.Millisecond))
	if tNegotiate > communityT {
		t.Errorf("x negotiated with everyone %s after the publication, want within %s", tNegotiate, communityT)
	}
	// x must hold connections for its disconnection below to show anything.
	before := x.connectedTo(members, ids)
	if len(before) == 0 {
		t.Fatal("x holds no connection to a member after negotiating with all of them: its removal could not be seen to disconnect it")
	}
	t.Logf("x connected to %d members before its removal", len(before))

	// v3 removes x: published at m7, signed by m1 and m3.
	members[6].must("community", "propose", "--remove", xid, "--out", v3)
	members[0].must("community", "sign", v3)
	members[2].must("community", "sign", v3)
	published = time.Now()
	members[6].must("community", "publish", v3)
	tApply = waitAll(t, members, published, "version 3", func(a *agent) bool { return a.rosterVersion() == 3 })
	tRemoved := waitAll(t, []*agent{x}, published, "x disconnected", func(a *agent) bool { return len(a.connectedTo(members, ids)) == 0 })
	t.Logf("T: version 3 applied by all %d members %s after its publication at m7 (their logs: %s); x disconnected from all after %s",
		n, tApply.Round(time.Millisecond), lastApplied(members, 3, published).Round(time.Millisecond), tRemoved.Round(time.Millisecond))
	for _, m := range members {
		if c := m.connectedTo([]*agent{x}, []string{xid}); len(c) > 0 {
			t.Errorf("%s still connected to x", m.name)
		}
	}

	// The older roster again, at m9: refused, nothing changes.
	if r := members[8].cli("community", "publish", v2); r.code != 2 || !strings.Contains(r.stderr, "not newer") {
		t.Errorf("replay of version 2: %s", r)
	}
	for _, m := range members {
		if v := m.rosterVersion(); v != 3 {
			t.Errorf("%s holds version %d after the replay", m.name, v)
		}
	}
	if _, r := members[4].request(x, testdata(t, "requester.yaml"), 5*time.Second); !notDialled(r) {
		t.Errorf("m5 requested from x after its removal: %s\nwant exit 1: the request waits, its own roster refuses to dial x", r)
	}
	if _, r := x.request(members[0], testdata(t, "requester.yaml"), 5*time.Second); r.code != 3 {
		t.Errorf("x requested from m1 after its removal: want exit 3 (refused by the peer): %s", r)
	}
}
