//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssanet/ssanet/discovery"
)

const (
	// kuboVersion is the kubo release the test is written against.
	kuboVersion = "0.43."
	// kuboReadyTimeout bounds the daemon's start, until it prints "Daemon is ready".
	kuboReadyTimeout = time.Minute
	// kuboStopTimeout is how long the daemon may take to exit after SIGINT.
	kuboStopTimeout = 30 * time.Second
	// kuboCommunity is the community name of the agents' keys.
	kuboCommunity = "cert-example"
)

// kuboBuildHint says how to get the binary the test needs.
const kuboBuildHint = "set SSANET_KUBO=/path/to/ipfs (kubo 0.43) to run the agents against a real kubo node; " +
	"build it (about 12 minutes on 2 cores) with: mkdir kubo && cd kubo && go mod init scratch && " +
	"go get github.com/ipfs/kubo/cmd/ipfs@v0.43.0 && go build -o ipfs github.com/ipfs/kubo/cmd/ipfs"

// TestKubo joins ssanet agents with `directory: amino` to a real kubo 0.43 node on loopback,
// kubo's own repository in a temporary directory (`ipfs init --profile test`: loopback
// addresses, no bootstrap peers, no mDNS, no AutoConf or delegated routers; telemetry off;
// `Routing.Type: dhtserver`, so kubo serves /ipfs/kad/1.0.0 without waiting to find itself
// publicly reachable). A provider agent bootstrapped to kubo advertises an offer; `ipfs routing
// findprovs` with the key kubo itself computes from the documented name finds the agent's peer
// ID; a requester agent bootstrapped to kubo alone finds the provider and its signed offer with
// `ssanet discover`.
//
// Two ways of running kubo on loopback:
//   - public-filters: kubo as shipped. Its public DHT keeps only peers with public addresses in
//     its routing table (it stays empty) and strips the provider's loopback addresses from the
//     provider record; the requester gets the provider's peer ID from kubo's provider store and
//     its addresses from kubo's peerstore (FIND_PEER).
//   - loopback-routing-table: kubo with TEST_DHT_STUB=1 (kubo's documented switch for tests on
//     loopback), which lifts those filters: both agents are in kubo's public routing table and
//     the record keeps its addresses.
//
// It needs a kubo binary, so it runs only when SSANET_KUBO names one:
//
//	SSANET_KUBO=/path/to/ipfs go test ./e2e -run TestKubo -v
func TestKubo(t *testing.T) {
	bin := os.Getenv("SSANET_KUBO")
	if bin == "" {
		t.Skip(kuboBuildHint)
	}
	out, err := exec.Command(bin, "version", "--number").Output()
	if err != nil || !strings.HasPrefix(string(out), kuboVersion) {
		t.Fatalf("SSANET_KUBO=%s: `ipfs version --number` = %q, %v; want kubo %sx", bin, out, err, kuboVersion)
	}
	for _, tc := range []struct {
		name string
		stub bool // TEST_DHT_STUB=1
	}{
		{"public-filters", false},
		{"loopback-routing-table", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			k := startKubo(t, bin, tc.stub)
			boot := withYAML(fmt.Sprintf("directory: amino\ndirectory-community: %s\nbootstrap:\n  - %s", kuboCommunity, k.addr()))
			prov := newAgent(t, "prov", "", boot)
			req := newAgent(t, "req", "", boot, withConfig("dht-mode", "client"))
			o := offerSpec{"eve-alerts", [][2]string{{"attack-detection-log", "eve"}}}
			prov.must("offer", "add", offerFile(t, t.TempDir(), o))
			provID := prov.peerID()

			// The documented key, computed by kubo from the documented name: a CIDv1 (raw) of
			// the SHA-256 of the name, what `ipfs add` makes of so small a file.
			name := fmt.Sprintf("ssanet/v1 community=%s type=attack-detection-log format=eve", kuboCommunity)
			key := k.hashOf(name)
			if want := discovery.CommunityKey(kuboCommunity, "attack-detection-log", "eve").String(); key != want {
				t.Fatalf("kubo's CID of %q is %s; discovery.CommunityKey gives %s", name, key, want)
			}
			found := k.waitProvider(key, provID)
			t.Logf("kubo's findprovs lists the provider %s after %s", provID, found.Round(time.Millisecond))

			q := query{"attack-detection-log", "eve"}
			ps, took := waitDiscover(t, req.home, q, provID)
			if len(ps) != 1 || len(ps[0].Offers) != 1 || ps[0].Offers[0].ID != o.id {
				t.Fatalf("discover %s from the requester: %+v; want the provider %s with offer %s", q, ps, provID, o.id)
			}
			if !slices.Contains(ps[0].Addrs, prov.addr()) {
				t.Errorf("discover lists the provider at %v, not at its address %s", ps[0].Addrs, prov.addr())
			}
			t.Logf("the requester, bootstrapped to kubo alone, finds the provider after %s", took.Round(time.Millisecond))

			// What kubo's public routing table holds: nothing on loopback as shipped, the
			// provider (a DHT server; the requester is a client) with the filters lifted.
			rt := k.wanPeers()
			if tc.stub && !slices.Contains(rt, provID) {
				t.Errorf("kubo's public routing table %v lacks the provider %s", rt, provID)
			}
			if !tc.stub && len(rt) != 0 {
				t.Errorf("kubo's public routing table holds %v on loopback; want none (its filter keeps public addresses only)", rt)
			}
			t.Logf("kubo's public routing table: %d peers; whole run %s", len(rt), time.Since(begin).Round(time.Millisecond))
		})
	}
}

// waitDiscover polls `ssanet discover` from the agent in home until it lists the provider
// want, for at most advertiseTimeout, and returns the answer and how long it took. An answer
// that lists another provider fails at once.
func waitDiscover(t *testing.T, home string, q query, want string) ([]providerView, time.Duration) {
	t.Helper()
	begin := time.Now()
	for {
		ps := discover(t, home, q)
		for _, p := range ps {
			if p.PeerID != want {
				t.Fatalf("discover %s lists %s, which is not a provider of it", q, p.PeerID)
			}
		}
		if len(ps) > 0 {
			return ps, time.Since(begin)
		}
		if time.Since(begin) > advertiseTimeout {
			t.Fatalf("discover %s from %s lists no provider after %s; want %s", q, home, advertiseTimeout, want)
		}
		time.Sleep(pollInterval)
	}
}

// kubo is one kubo daemon with its own repository (IPFS_PATH) in a temporary directory.
type kubo struct {
	t    *testing.T
	bin  string
	env  []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startKubo initialises a repository for tests on loopback and starts the daemon. Cleanup
// stops it with SIGINT (kubo's graceful shutdown) and checks that it exits 0; the repository
// goes with the test's temporary directory.
func startKubo(t *testing.T, bin string, stub bool) *kubo {
	t.Helper()
	dir := t.TempDir()
	k := &kubo{t: t, bin: bin, log: filepath.Join(dir, "kubo.log"),
		env: append(baseEnv(), "IPFS_PATH="+filepath.Join(dir, "repo"), "IPFS_TELEMETRY=off")}
	if stub {
		k.env = append(k.env, "TEST_DHT_STUB=1")
	}
	k.ipfs("init", "--profile", "test", "--empty-repo")
	k.ipfs("config", "Routing.Type", "dhtserver")
	logf, err := os.Create(k.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	k.cmd = exec.Command(bin, "daemon")
	k.cmd.Env = k.env
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kubo: %v", err)
	}
	k.done = make(chan struct{})
	go func() {
		k.cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(k.stop)
	deadline := time.Now().Add(kuboReadyTimeout)
	for {
		data, err := os.ReadFile(k.log)
		if err == nil && bytes.Contains(data, []byte("Daemon is ready")) {
			return k
		}
		select {
		case <-k.done:
			t.Fatalf("kubo exited before it was ready: %v\n%s", k.cmd.ProcessState, data)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubo not ready after %s:\n%s", kuboReadyTimeout, data)
		}
		time.Sleep(pollInterval)
	}
}

// stop sends SIGINT and waits for the daemon to exit 0, killing it after kuboStopTimeout.
func (k *kubo) stop() {
	defer func() {
		if k.t.Failed() {
			data, _ := os.ReadFile(k.log)
			k.t.Logf("kubo's log:\n%s", data)
		}
	}()
	select {
	case <-k.done:
		k.t.Errorf("kubo exited on its own: %v", k.cmd.ProcessState)
		return
	default:
	}
	if err := k.cmd.Process.Signal(syscall.SIGINT); err != nil {
		k.t.Errorf("SIGINT kubo: %v", err)
	}
	select {
	case <-k.done:
		if !k.cmd.ProcessState.Success() {
			k.t.Errorf("kubo did not exit cleanly on SIGINT: %v", k.cmd.ProcessState)
		}
	case <-time.After(kuboStopTimeout):
		k.t.Errorf("kubo still running %s after SIGINT; killing it", kuboStopTimeout)
		k.cmd.Process.Kill()
		<-k.done
	}
}

// ipfs runs an ipfs command on this repository (through the daemon's API once it runs),
// bounded by cliTimeout; it must exit 0.
func (k *kubo) ipfs(args ...string) string {
	k.t.Helper()
	out, err := k.run(cliTimeout, "", args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// run runs an ipfs command with stdin, bounded by timeout, and returns its standard output.
func (k *kubo) run(timeout time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = k.env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ipfs %s: %w\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// addr is kubo's loopback TCP address, ending in /p2p/ID.
func (k *kubo) addr() string {
	k.t.Helper()
	var id struct{ Addresses []string }
	if err := json.Unmarshal([]byte(k.ipfs("id", "--enc=json")), &id); err != nil {
		k.t.Fatalf("ipfs id: %v", err)
	}
	for _, a := range id.Addresses {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") && strings.Contains(a, "/p2p/") {
			return a
		}
	}
	k.t.Fatalf("kubo has no loopback TCP address in %v", id.Addresses)
	return ""
}

// hashOf is the CID kubo gives the bytes of s as a file: CIDv1, raw leaves, SHA-256.
func (k *kubo) hashOf(s string) string {
	k.t.Helper()
	out, err := k.run(cliTimeout, s, "add", "--only-hash", "--quieter", "--cid-version", "1", "--raw-leaves", "--hash", "sha2-256")
	if err != nil {
		k.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// waitProvider polls `ipfs routing findprovs key` until it lists want, for at most
// advertiseTimeout, and returns how long it took.
func (k *kubo) waitProvider(key, want string) time.Duration {
	k.t.Helper()
	begin := time.Now()
	for {
		out, err := k.run(20*time.Second, "", "routing", "findprovs", "--num-providers", "20", key)
		if err == nil && slices.Contains(strings.Fields(out), want) {
			return time.Since(begin)
		}
		if time.Since(begin) > advertiseTimeout {
			k.t.Fatalf("ipfs routing findprovs %s does not list %s after %s: %q, %v", key, want, advertiseTimeout, out, err)
		}
		time.Sleep(pollInterval)
	}
}

// peerIDPattern matches a peer ID (base58 multihash: Qm… for RSA keys, 12D3Koo… for Ed25519).
var peerIDPattern = regexp.MustCompile(`\b(Qm[1-9A-HJ-NP-Za-km-z]{44}|12D3Koo[1-9A-HJ-NP-Za-km-z]{45})\b`)

// wanPeers lists the peer IDs in kubo's public (WAN) DHT routing table, from `ipfs stats dht wan`.
func (k *kubo) wanPeers() []string {
	k.t.Helper()
	return peerIDPattern.FindAllString(k.ipfs("stats", "dht", "wan"), -1)
}
