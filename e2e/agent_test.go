// Package e2e runs ssanet agents as separate processes on 127.0.0.1, each with its own home,
// and drives them only through the ssanet command line, as an operator would; the peers it
// plays itself are a provider that cheats (cheat_test.go), which no build of ssanet can be,
// and a libp2p host that does not speak ssanet (reach_test.go).
// It holds no production code.
//
// TestMain builds the binary once. Every daemon is started with `ssanet run`, waited for by
// polling `ssanet id` with a deadline, and stopped with SIGTERM at cleanup, where it must exit
// 0 within a few seconds. Every wait in this package is bounded in count and time.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the ssanet binary TestMain builds; daemon is the one the daemons run: the same, or
// built with -race when the tests are.
var bin, daemon string

const (
	// cliTimeout bounds every CLI invocation; the longest waits are `--wait 20s`.
	cliTimeout = 45 * time.Second
	// readyTimeout bounds a daemon's start, until `ssanet id` answers.
	readyTimeout = 20 * time.Second
	// stopTimeout is how long a daemon may take to exit after SIGTERM.
	stopTimeout = 10 * time.Second
	// pollInterval is the pause between two polls of a daemon's state.
	pollInterval = 100 * time.Millisecond
)

// reasonDecodeBug is what the CLI prints when it cannot read a daemon's answer that carries
// reasons (see the report: protocol.Code marshals as text but does not unmarshal from it).
const reasonDecodeBug = "cannot unmarshal string into Go struct field Reason"

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ssanet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bin, daemon = filepath.Join(dir, "ssanet"), filepath.Join(dir, "ssanet")
	builds := [][]string{{"build", "-o", bin, "./cmd/ssanet"}}
	if raceEnabled {
		daemon = filepath.Join(dir, "ssanet-race")
		builds = append(builds, []string{"build", "-race", "-o", daemon, "./cmd/ssanet"})
	}
	for _, args := range builds {
		build := exec.Command("go", args...)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
	}
	return m.Run()
}

// moduleRoot is the directory of the module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	return filepath.Dir(mod), nil
}

// result is what one CLI invocation printed and how it exited.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("ssanet %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs the ssanet binary in dir (the test's working directory if empty) with env added to
// a minimal environment, bounded by cliTimeout.
func run(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	r := runCLI(dir, env, args)
	if r.code < 0 {
		t.Fatalf("%s", r)
	}
	return r
}

// runCLI is run for any goroutine: a command that cannot run, or runs too long, reports exit
// code -1 and says why on stderr.
func runCLI(dir string, env, args []string) result {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		r.code, r.stderr = -1, fmt.Sprintf("still running after %s\n%s", cliTimeout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// baseEnv is the environment of every process the tests start: no SSANET_HOME or
// SSANET_STORAGE_KEY from the caller's, so every command names its home.
func baseEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
}

// agent is one ssanet home and its daemon, as seen from one test: the helpers fail t. A
// subtest uses the agent through in(t).
type agent struct {
	t *testing.T
	*node
}

// in returns the same agent for use by the (sub)test t.
func (a *agent) in(t *testing.T) *agent { return &agent{t: t, node: a.node} }

// node is one ssanet home and, while it runs, its daemon process.
type node struct {
	name string
	home string
	log  string // the daemon's stderr (JSON logs), appended to across restarts
	// runArgs are added to `ssanet run` (withRunArgs).
	runArgs []string
	// netns, when set, is the network namespace the daemon runs in (nat_test.go).
	netns string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when cmd has exited
	err   error         // cmd.Wait's result, once done
	ended bool          // the test stopped or killed cmd
}

// option changes an agent's config.yaml before its first start.
type option func(t *testing.T, a *agent)

// withConfig sets a top-level scalar key of config.yaml (accept, retry-interval, …).
func withConfig(key, value string) option {
	return func(t *testing.T, a *agent) {
		t.Helper()
		if !setConfig(t, a.home, key, value) {
			t.Fatalf("%s: config.yaml has no %q key to set", a.name, key)
		}
	}
}

// setConfig sets a top-level scalar key of the home's config.yaml and reports whether the key
// was there.
func setConfig(t *testing.T, home, key, value string) bool {
	t.Helper()
	path := filepath.Join(home, "config.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:.*$`)
	if !re.Match(data) {
		return false
	}
	data = re.ReplaceAll(data, []byte(key+": "+value))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return true
}

// newAgent initialises a home listening on listen (loopback TCP, a free port when empty),
// applies opts, and starts its daemon. Cleanup stops the daemon with SIGTERM and checks that
// it exits 0.
func newAgent(t *testing.T, name, listen string, opts ...option) *agent {
	t.Helper()
	dir := t.TempDir()
	a := &agent{t: t, node: &node{name: name, home: filepath.Join(dir, name), log: filepath.Join(dir, name+".log")}}
	if listen == "" {
		listen = "/ip4/127.0.0.1/tcp/0"
	}
	a.must("init", "--name", name, "--affiliation", name+" org", "--listen", listen)
	// Loopback only: no multicast discovery on the local network, where other agents may run.
	setConfig(t, a.home, "mdns", "false")
	for _, o := range opts {
		o(t, a)
	}
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			a.dumpLog()
		}
	})
	a.start()
	return a
}

// start runs the daemon and waits until its control API answers.
func (a *agent) start() {
	a.t.Helper()
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(daemon, append([]string{"--home", a.home, "run"}, a.runArgs...)...)
	if a.netns != "" { // nat_test.go: the daemon runs in a network namespace of the testbed
		cmd = exec.Command("ip", append([]string{"netns", "exec", a.netns}, cmd.Args...)...)
	}
	cmd.Env = baseEnv()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start %s: %v", a.name, err)
	}
	done := make(chan struct{})
	a.mu.Lock()
	a.cmd, a.done, a.err, a.ended = cmd, done, nil, false
	a.mu.Unlock()
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		r := run(a.t, "", nil, "--home", a.home, "id", "--json")
		if r.code == 0 {
			return
		}
		select {
		case <-done:
			a.t.Fatalf("daemon %s exited before it was ready: %v", a.name, a.exitErr())
		default:
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("daemon %s not ready after %s: %s", a.name, readyTimeout, r)
		}
		time.Sleep(pollInterval)
	}
}

func (n *node) exitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// running returns the daemon's process and exit channel, or nil if it is not running.
func (n *node) running() (*exec.Cmd, chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil, nil
	}
	select {
	case <-n.done:
		return nil, nil
	default:
	}
	return n.cmd, n.done
}

// stop sends SIGTERM and checks that the daemon exits 0 within stopTimeout. A daemon that
// exited on its own before is an error too.
func (a *agent) stop() {
	a.t.Helper()
	cmd, done := a.running()
	a.mu.Lock()
	if cmd == nil && a.cmd != nil && !a.ended {
		a.t.Errorf("daemon %s exited on its own (%v)", a.name, a.err)
	}
	a.ended = true
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Errorf("SIGTERM %s: %v", a.name, err)
	}
	select {
	case <-done:
		if err := a.exitErr(); err != nil {
			a.t.Errorf("daemon %s did not exit cleanly on SIGTERM: %v", a.name, err)
		}
	case <-time.After(stopTimeout):
		a.t.Errorf("daemon %s still running %s after SIGTERM; killing it", a.name, stopTimeout)
		cmd.Process.Kill()
		<-done
	}
}

// kill kills the daemon with SIGKILL, as a crash would, and waits until it is gone.
func (a *agent) kill() {
	a.t.Helper()
	cmd, done := a.running()
	if cmd == nil {
		a.t.Fatalf("kill %s: not running", a.name)
	}
	a.mu.Lock()
	a.ended = true
	a.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil {
		a.t.Fatalf("kill %s: %v", a.name, err)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		a.t.Fatalf("daemon %s still running %s after SIGKILL", a.name, stopTimeout)
	}
}

func (a *agent) dumpLog() {
	data, err := os.ReadFile(a.log)
	if err != nil {
		a.t.Logf("log of %s: %v", a.name, err)
		return
	}
	const max = 8000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	a.t.Logf("last lines of %s's log:\n%s", a.name, data)
}

// logLines counts the lines of the daemon's log that contain s (for reports, not assertions:
// log messages are not an interface).
func (a *agent) logLines(s string) int {
	data, err := os.ReadFile(a.log)
	if err != nil {
		a.t.Logf("log of %s: %v", a.name, err)
		return 0
	}
	return bytes.Count(data, []byte(s))
}

// cli runs an ssanet command against this agent's home.
func (a *agent) cli(args ...string) result {
	a.t.Helper()
	return run(a.t, "", nil, append([]string{"--home", a.home}, args...)...)
}

// must runs a command that must exit 0 and returns its standard output.
func (a *agent) must(args ...string) string {
	a.t.Helper()
	r := a.cli(args...)
	if r.code != 0 {
		checkReasonsDecoded(a.t, r)
		a.t.Fatalf("%s: %s", a.name, r)
	}
	return r.stdout
}

// query runs a command with --json that must exit 0 and decodes its output into out.
func (a *agent) query(out any, args ...string) {
	a.t.Helper()
	stdout := a.must(append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		a.t.Fatalf("%s: ssanet --json %s: %v\n%s", a.name, strings.Join(args, " "), err, stdout)
	}
}

// checkReasonsDecoded fails the test when the CLI could not decode an answer with reasons,
// which would hide everything after a rejection.
func checkReasonsDecoded(t testing.TB, r result) {
	t.Helper()
	if strings.Contains(r.stderr, reasonDecodeBug) {
		t.Fatalf("the CLI cannot read a daemon answer that carries reasons: %s", r)
	}
}

// idView is the output of `ssanet id --json`.
type idView struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
}

// addr is the agent's full loopback multiaddr (…/tcp/N/p2p/ID).
func (a *agent) addr() string {
	a.t.Helper()
	var v idView
	a.query(&v, "id")
	for _, s := range v.Addrs {
		if strings.HasPrefix(s, "/ip4/127.0.0.1/tcp/") {
			return s
		}
	}
	a.t.Fatalf("%s: no loopback TCP address in %v", a.name, v.Addrs)
	return ""
}

func (a *agent) peerID() string {
	a.t.Helper()
	var v idView
	a.query(&v, "id")
	return v.PeerID
}

// reason is one conflict or refusal as the CLI prints it in JSON.
type reason struct {
	Code      string `json:"code"`
	Component string `json:"component"`
	Text      string `json:"text"`
}

// participant, ssaView and negView are the parts of `ssanet ssa … --json` the tests read.
type participant struct {
	Name   string `json:"name"`
	PeerID string `json:"peer_id"`
}

type ssaView struct {
	ID           string `json:"id"`
	Version      int    `json:"version"`
	Supersedes   string `json:"supersedes"`
	Status       string `json:"status"`
	Participants struct {
		Requester participant `json:"requester"`
		Provider  participant `json:"provider"`
	} `json:"participants"`
	Information []struct {
		Type   string `json:"type"`
		Format string `json:"format"`
	} `json:"information"`
}

type negView struct {
	SSAID    string   `json:"ssa_id"`
	Role     string   `json:"role"`
	State    string   `json:"state"`
	Peer     string   `json:"peer"`
	Note     string   `json:"note"`
	Reasons  []reason `json:"reasons"`
	Versions []string `json:"versions"`
	SSA      *ssaView `json:"ssa"`
}

// messageView is one message of `ssanet ssa transcript --json`.
type messageView struct {
	Type   string `json:"type"`
	Sender string `json:"sender"`
	Time   string `json:"time"`
	ID     string `json:"id"`
	Prev   string `json:"prev"`
	Hash   string `json:"hash"`
	SSAID  string `json:"ssa_id"`
	Status string `json:"status"`
}

func (a *agent) show(id string) negView {
	a.t.Helper()
	var v negView
	a.query(&v, "ssa", "show", id)
	return v
}

func (a *agent) list() []negView {
	a.t.Helper()
	var vs []negView
	a.query(&vs, "ssa", "list")
	return vs
}

func (a *agent) transcript(id string) []messageView {
	a.t.Helper()
	var ms []messageView
	a.query(&ms, "ssa", "transcript", id)
	return ms
}

// export writes the agent's copy of an agreed SSA to a file and returns its bytes.
func (a *agent) export(id string) []byte {
	a.t.Helper()
	path := filepath.Join(a.t.TempDir(), a.name+"-"+id+".ssa")
	a.must("ssa", "export", id, "--out", path)
	data, err := os.ReadFile(path)
	if err != nil {
		a.t.Fatal(err)
	}
	return data
}

// waitState polls `ssa show` until the SSA reaches want, or fails after timeout.
func (a *agent) waitState(id, want string, timeout time.Duration) negView {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := a.show(id)
		if v.State == want {
			return v
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: SSA %s is %s after %s, want %s", a.name, id, v.State, timeout, want)
		}
		time.Sleep(pollInterval)
	}
}

// offer adds an offer from a testdata file.
func (a *agent) offer(file string) {
	a.t.Helper()
	a.must("offer", "add", testdata(a.t, file))
}

// testdata is the absolute path of a file in testdata/.
func testdata(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// request runs `ssanet request` to the provider and decodes the negotiation it prints.
func (a *agent) request(provider *agent, template string, wait time.Duration) (negView, result) {
	a.t.Helper()
	r := a.cli("--json", "request", "--provider", provider.addr(), "--template", template, "--wait", wait.String())
	var v negView
	if r.stdout != "" {
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			a.t.Fatalf("%s: %v\n%s", a.name, err, r)
		}
	}
	return v, r
}

// agree runs a request that must be approved and returns the SSA's ID.
func agree(t *testing.T, req, prov *agent, template string) string {
	t.Helper()
	v, r := req.request(prov, template, 20*time.Second)
	if r.code != 0 || v.State != "approved" {
		checkReasonsDecoded(t, r)
		t.Fatalf("request not approved: %s", r)
	}
	return v.SSAID
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// verifyOffline runs `ssanet ssa verify` on data in a fresh directory that is no agent's
// home (HOME and the working directory both point at it, SSANET_HOME is unset) and returns
// the verifier's JSON verdict and its text output.
func verifyOffline(t *testing.T, data []byte) (verdict, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "agreement.ssa"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir}
	text := run(t, dir, env, "ssa", "verify", "agreement.ssa")
	js := run(t, dir, env, "--json", "ssa", "verify", "agreement.ssa")
	var v verdict
	if err := json.Unmarshal([]byte(js.stdout), &v); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if (text.code == 0) != v.Valid || (js.code == 0) != v.Valid {
		t.Errorf("verify exit codes %d (text) and %d (json) disagree with valid=%v", text.code, js.code, v.Valid)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("ssa verify wrote into a directory that is not an agent home: %v", entries)
	}
	return v, text.stdout
}

// verdict is the output of `ssanet ssa verify --json`.
type verdict struct {
	Valid   bool    `json:"valid"`
	Error   string  `json:"error"`
	SSA     ssaView `json:"ssa"`
	Signers []struct {
		Role    string `json:"role"`
		PeerID  string `json:"peer_id"`
		Message string `json:"message"`
	} `json:"signers"`
}

// spawn starts an ssanet command against this agent's home in the background and delivers
// its result on the returned channel. It never fails the test itself, so it may be used
// outside the test's goroutine.
func (a *agent) spawn(args ...string) <-chan result {
	args = append([]string{"--home", a.home}, args...)
	out := make(chan result, 1)
	go func() { out <- runCLI("", nil, args) }()
	return out
}

func decode(s string, out any) error { return json.Unmarshal([]byte(s), out) }
