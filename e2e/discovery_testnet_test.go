//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The helpers of the discovery tests and of BenchmarkDiscovery: a testnet run as the product
// runs it (`ssanet testnet` as a child process), offers written to files, and the agents'
// processes found through /proc by their home, as an operator would with pgrep. Linux only.

const (
	// testnetReadyTimeout bounds `ssanet testnet` until it prints its table.
	testnetReadyTimeout = 90 * time.Second
	// testnetReadyPerAgent is the wait per agent for larger testnets (100 agents: 200 s).
	testnetReadyPerAgent = 2 * time.Second
	// testnetStopTimeout is how long `ssanet testnet` may take to stop its agents and exit
	// after SIGTERM (it gives each agent 10 s).
	testnetStopTimeout = 30 * time.Second
	// advertiseTimeout bounds the wait until an added offer is found in the directory.
	advertiseTimeout = 30 * time.Second
)

// tnNode is one agent of a testnet, as `ssanet --json testnet` prints it.
type tnNode struct {
	Name   string `json:"name"`
	PeerID string `json:"peer_id"`
	Addr   string `json:"addr"`
	Home   string `json:"home"`
}

// testnet is a running `ssanet testnet` child process and its agents.
type testnet struct {
	tb     testing.TB
	dir    string
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	err    error         // cmd.Wait's result, once done
	stderr *syncBuffer
	nodes  []tnNode // nodes[0] is node1, everyone's bootstrap peer
}

// syncBuffer is a bytes.Buffer that a child process writes to while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startTestnet runs `ssanet --json testnet --nodes n --dir DIR` and waits for its table of
// agents. Cleanup stops it with SIGTERM and checks that it exits 0 and leaves no agent
// running.
func startTestnet(tb testing.TB, n int) *testnet {
	tb.Helper()
	tn := &testnet{tb: tb, dir: tb.TempDir(), done: make(chan struct{}), stderr: &syncBuffer{}}
	tn.cmd = exec.Command(bin, "--json", "testnet", "--nodes", strconv.Itoa(n), "--dir", tn.dir)
	tn.cmd.Env = baseEnv()
	tn.cmd.Stderr = tn.stderr
	// If the test binary dies, the testnet is told to stop its agents.
	tn.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stdout, err := tn.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := tn.cmd.Start(); err != nil {
		tb.Fatalf("start ssanet testnet: %v", err)
	}
	table := make(chan error, 1)
	go func() {
		err := json.NewDecoder(stdout).Decode(&tn.nodes)
		table <- err
		io.Copy(io.Discard, stdout) // nothing more is expected; never block the child
		tn.err = tn.cmd.Wait()
		close(tn.done)
	}()
	tb.Cleanup(tn.stop)
	select {
	case err := <-table:
		if err != nil {
			tb.Fatalf("ssanet testnet printed no table of agents: %v\nstderr:\n%s", err, tn.stderr)
		}
	case <-time.After(max(testnetReadyTimeout, time.Duration(n)*testnetReadyPerAgent)):
		tb.Fatalf("ssanet testnet --nodes %d printed no table after %s\nstderr:\n%s", n, max(testnetReadyTimeout, time.Duration(n)*testnetReadyPerAgent), tn.stderr)
	}
	if len(tn.nodes) != n {
		tb.Fatalf("ssanet testnet --nodes %d listed %d agents: %+v", n, len(tn.nodes), tn.nodes)
	}
	for i, nd := range tn.nodes {
		if nd.Name != fmt.Sprintf("node%d", i+1) || nd.PeerID == "" || !strings.HasSuffix(nd.Addr, "/p2p/"+nd.PeerID) ||
			nd.Home != filepath.Join(tn.dir, nd.Name) {
			tb.Fatalf("ssanet testnet: row %d is %+v", i, nd)
		}
	}
	return tn
}

// stop sends SIGTERM to `ssanet testnet`, which must stop every agent and exit 0. An agent
// still running afterwards is an error, and is killed by its PID.
func (tn *testnet) stop() {
	tb := tn.tb
	tb.Helper()
	if tn.cmd.Process == nil {
		return
	}
	select {
	case <-tn.done:
		tb.Errorf("ssanet testnet exited on its own: %v\nstderr:\n%s", tn.err, tn.stderr)
	default:
		if err := tn.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			tb.Errorf("SIGTERM ssanet testnet: %v", err)
		}
		select {
		case <-tn.done:
			if tn.err != nil {
				tb.Errorf("ssanet testnet did not exit cleanly on SIGTERM: %v\nstderr:\n%s", tn.err, tn.stderr)
			}
		case <-time.After(testnetStopTimeout):
			tb.Errorf("ssanet testnet still running %s after SIGTERM; killing it", testnetStopTimeout)
			tn.cmd.Process.Kill()
			<-tn.done
		}
	}
	for _, nd := range tn.nodes {
		pids, err := agentPIDs(nd.Home)
		if err != nil {
			tb.Errorf("%s: %v", nd.Name, err)
		}
		for _, pid := range pids {
			tb.Errorf("%s (pid %d) still running after ssanet testnet exited; killing it", nd.Name, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if tb.Failed() {
		tb.Logf("ssanet testnet stderr:\n%s", tn.stderr)
	}
}

// node returns the testnet's agent called name (node1, node2, …).
func (tn *testnet) node(name string) tnNode {
	tn.tb.Helper()
	for _, nd := range tn.nodes {
		if nd.Name == name {
			return nd
		}
	}
	tn.tb.Fatalf("testnet has no %s", name)
	return tnNode{}
}

// nameOf maps a peer ID to the name of its testnet agent (the ID itself if none).
func (tn *testnet) nameOf(peerID string) string {
	for _, nd := range tn.nodes {
		if nd.PeerID == peerID {
			return nd.Name
		}
	}
	return peerID
}

// dumpLog logs the end of an agent's log (HOME/agent.log, written by ssanet testnet).
func (tn *testnet) dumpLog(name string) {
	data, err := os.ReadFile(filepath.Join(tn.node(name).Home, "agent.log"))
	if err != nil {
		tn.tb.Logf("log of %s: %v", name, err)
		return
	}
	const max = 6000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	tn.tb.Logf("last lines of %s's log:\n%s", name, data)
}

// agentPIDs lists the processes running `ssanet --home HOME run` for exactly this home (a
// zombie has no command line and is not listed).
func agentPIDs(home string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if n := len(args); n >= 4 && args[n-3] == "--home" && args[n-2] == home && args[n-1] == "run" {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// agentPID is the PID of the one daemon running in home.
func agentPID(tb testing.TB, home string) int {
	tb.Helper()
	pids, err := agentPIDs(home)
	if err != nil {
		tb.Fatal(err)
	}
	if len(pids) != 1 {
		tb.Fatalf("want one daemon running in %s, found PIDs %v", home, pids)
	}
	return pids[0]
}

// killAgent kills the daemon of home with SIGKILL, as a crash would, and waits until it is
// gone.
func killAgent(tb testing.TB, home string) {
	tb.Helper()
	pid := agentPID(tb, home)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("kill %d: %v", pid, err)
	}
	deadline := time.Now().Add(stopTimeout)
	for {
		pids, err := agentPIDs(home)
		if err != nil {
			tb.Fatal(err)
		}
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("daemon in %s (pid %d) still running %s after SIGKILL", home, pid, stopTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// rssKiB is the resident set size of a process (VmRSS in /proc/PID/status), in KiB.
func rssKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// offerSpec is an offer the tests write to a file and add with `ssanet offer add`.
type offerSpec struct {
	id   string
	info [][2]string // (type, format) pairs
}

// offerFile writes the offer as YAML in dir and returns its path. The terms are those of
// testdata/provider.yaml, which testdata/requester.yaml fits.
func offerFile(tb testing.TB, dir string, o offerSpec) string {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "id: %s\napproval: auto\nproposal-validity: 1h\nterms:\n", o.id)
	b.WriteString("  participants:\n    provider:\n      affiliation: Example Hosting Ltd\n      name: Security operations\n")
	b.WriteString("  information:\n")
	for _, in := range o.info {
		fmt.Fprintf(&b, "    - name: %s in %s\n      type: %s\n      format: %s\n", in[0], in[1], in[0], in[1])
	}
	b.WriteString(`  policy:
    masking:
      - scope: public-ip
        method: truncate
        bits: 8
    handling:
      tlp: AMBER
      retention: 180d
      redistribution: organisation
  method:
    protocols: [/ssanet/exchange/1.0.0]
    security: [noise, tls]
`)
	path := filepath.Join(dir, o.id+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// provides reports whether the offer shares typ (in format, if not empty).
func (o offerSpec) provides(typ, format string) bool {
	return slices.ContainsFunc(o.info, func(in [2]string) bool { return in[0] == typ && (format == "" || in[1] == format) })
}

// providerView is one provider of `ssanet discover --json`.
type providerView struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
	Offers []struct {
		ID    string `json:"id"`
		Terms struct {
			Information []infoView `json:"information"`
		} `json:"terms"`
	} `json:"offers"`
}

// infoView is one (type, format) pair of an offer.
type infoView struct {
	Type   string `json:"type"`
	Format string `json:"format"`
}

// query is one discovery query: an information type and, if not empty, a format.
type query struct{ typ, format string }

func (q query) String() string {
	if q.format == "" {
		return q.typ
	}
	return q.typ + "/" + q.format
}

// args are the arguments of `ssanet discover` for the query.
func (q query) args() []string {
	a := []string{"--json", "discover", "--type", q.typ}
	if q.format != "" {
		a = append(a, "--format", q.format)
	}
	return a
}

// controlClient talks to an agent's control API on HOME/control.sock, as the CLI does.
func controlClient(home string) *http.Client {
	sock := filepath.Join(home, "control.sock")
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// apiDiscover runs one query through the control API (GET /v1/discover, what `ssanet
// discover` calls) and returns the providers once the whole answer has been read.
func apiDiscover(hc *http.Client, q query) ([]providerView, error) {
	v := url.Values{"type": {q.typ}, "format": {q.format}, "timeout": {"10s"}}
	resp, err := hc.Get("http://ssanet/v1/discover?" + v.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/discover: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var ps []providerView
	if err := json.Unmarshal(data, &ps); err != nil {
		return nil, err
	}
	if ps == nil {
		return nil, errors.New("GET /v1/discover: null, want a list")
	}
	return ps, nil
}
