// Package rsyslogtest starts a real rsyslogd for tests and benchmarks: a config of its own,
// an input on a free loopback port, every message written to a file in RFC 5424 as rsyslog
// renders it. Tests of the syslog sink (agent/sink) and the forwarding benchmark (agent)
// share it; it is no part of the agent.
package rsyslogtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Rsyslog is a real rsyslogd started with a config of its own: an input on a loopback port,
// every message written to Out in RFC 5424 (RSYSLOG_SyslogProtocol23Format: rsyslog parses
// the message and writes its fields back).
type Rsyslog struct {
	t    testing.TB
	Dir  string // rsyslog.conf, its work directory, its logs and Out
	Port int
	Out  string // the file rsyslog writes every message to
	// Started counts the times rsyslogd was started.
	Started int
	cmd     *exec.Cmd
}

// Start starts rsyslogd with input module input (imrelp or imtcp), or skips the test when it
// is not installed. CI installs it (.ci/run: Debian packages rsyslog and rsyslog-relp).
func Start(t testing.TB, input string) *Rsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Skip("rsyslogd not found: install Debian's rsyslog and rsyslog-relp (apt-get install -y rsyslog rsyslog-relp) to run this test")
	}
	if m, _ := filepath.Glob("/usr/lib/*/rsyslog/imrelp.so"); len(m) == 0 {
		if m, _ = filepath.Glob("/usr/lib/rsyslog/imrelp.so"); len(m) == 0 {
			t.Skip("rsyslog's imrelp module not found: install Debian's rsyslog-relp to run this test")
		}
	}
	return Launch(t, "", func(port int) string {
		return fmt.Sprintf(`module(load="%[1]s")
input(type="%[1]s" address="127.0.0.1" port="%[2]d")
`, input, port)
	})
}

// Launch starts rsyslogd with a config of its own: global holds extra parameters of
// global(), input(port) the modules and the input on the free loopback port it is given.
// The test's cleanup stops it.
func Launch(t testing.TB, global string, input func(port int) string) *Rsyslog {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	r := &Rsyslog{t: t, Dir: dir, Port: port, Out: filepath.Join(dir, "out.log")}
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="64k"%[2]s)
main_queue(queue.type="Direct")
%[3]saction(type="omfile" file=%[4]q template="RSYSLOG_SyslogProtocol23Format")
`, filepath.Join(dir, "work"), global, input(port), r.Out)
	if err := os.WriteFile(filepath.Join(dir, "rsyslog.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

// Addr is the loopback address rsyslog's input listens on.
func (r *Rsyslog) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)) }

// Start starts rsyslogd and waits until it takes connections. It may run on a goroutine of
// its own, so it returns its error rather than fail the test.
func (r *Rsyslog) Start() error {
	r.Started++
	logf, err := os.Create(filepath.Join(r.Dir, fmt.Sprintf("rsyslogd-%d.log", r.Started)))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("rsyslogd", "-n", "-f", filepath.Join(r.Dir, "rsyslog.conf"), "-i", filepath.Join(r.Dir, "rsyslogd.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rsyslogd: %w", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("rsyslogd does not listen on %s: %w; its output:\n%s", r.Addr(), err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops rsyslogd with SIGTERM (it writes out what it took) and waits for it.
func (r *Rsyslog) Stop() {
	if r.cmd == nil {
		return
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		r.t.Errorf("stop rsyslogd: %v", err)
	}
	if err := r.cmd.Wait(); err != nil {
		r.t.Logf("rsyslogd exited: %v", err)
	}
	r.cmd = nil
}

// LineCounter counts the lines of a file that grows (rsyslog's Out), reading only what was
// appended since the last count.
type LineCounter struct {
	t     testing.TB
	path  string
	f     *os.File
	r     *bufio.Reader
	lines int
}

// NewLineCounter counts the lines of path, which need not exist yet.
func NewLineCounter(t testing.TB, path string) *LineCounter {
	return &LineCounter{t: t, path: path}
}

// Count is the number of lines the file holds now.
func (lc *LineCounter) Count() int {
	if lc.f == nil {
		f, err := os.Open(lc.path)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			lc.t.Fatal(err)
		}
		lc.f, lc.r = f, bufio.NewReaderSize(f, 1<<20)
		lc.t.Cleanup(func() { f.Close() })
	}
	var buf [64 << 10]byte
	for {
		k, err := lc.r.Read(buf[:])
		lc.lines += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF || k == 0 {
			return lc.lines
		}
		if err != nil {
			lc.t.Fatal(err)
		}
	}
}

// TimeIntake runs send and returns the time from its start until lc's file holds n lines
// more than before; it fails the test when they are not there within timeout.
func TimeIntake(t testing.TB, lc *LineCounter, n int, timeout time.Duration, send func()) time.Duration {
	t.Helper()
	want := lc.Count() + n
	start := time.Now()
	send()
	deadline := time.Now().Add(timeout)
	for lc.Count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog's file holds %d of %d lines after %s", lc.Count(), want, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}
