package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNotifyReadiness runs the daemon as systemd runs a Type=notify unit: with NOTIFY_SOCKET
// naming a unixgram socket (a path, or an abstract name), the daemon sends READY=1 once it
// answers on its control socket, RELOADING=1 and READY=1 around the reload SIGHUP asks for,
// and STOPPING=1 when SIGTERM stops it.
func TestNotifyReadiness(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"path", ""}, // a socket file in a temporary directory
		{"abstract", "@ssanet-notify-test-" + strconv.Itoa(os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr
			if addr == "" {
				dir, err := os.MkdirTemp("", "sdnotify") // short: a socket path has at most 107 bytes
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				addr = filepath.Join(dir, "notify")
			}
			sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			home := initHome(t)
			cmd := exec.Command(binary, "--home", home, "run")
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+addr)
			var logs bytes.Buffer
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			stopped := false
			defer func() {
				if !stopped {
					cmd.Process.Kill()
					<-exited
				}
			}()

			msg := readNotify(t, sock, 30*time.Second, &logs)
			if !strings.Contains("\n"+msg+"\n", "\nREADY=1\n") {
				t.Fatalf("first notification %q, want READY=1", msg)
			}
			// Ready means answering: the control API serves at once, without a retry.
			if out, errs, code := ssanet(t, "--home", home, "id"); code != 0 || !strings.HasPrefix(out, "12D3KooW") {
				t.Fatalf("id right after READY=1: exit %d, %q, %s", code, out, errs)
			}
			// SIGHUP reloads the config between RELOADING=1 and READY=1.
			if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"RELOADING=1", "READY=1"} {
				if msg := readNotify(t, sock, 10*time.Second, &logs); !strings.HasPrefix(msg, want+"\n") {
					t.Fatalf("notification after SIGHUP %q, want %s first", msg, want)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if msg := readNotify(t, sock, 10*time.Second, &logs); msg != "STOPPING=1" {
				t.Fatalf("notification after SIGTERM %q, want STOPPING=1", msg)
			}
			select {
			case err := <-exited:
				stopped = true
				if err != nil {
					t.Fatalf("daemon: %v\n%s", err, logs.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("daemon still runs 10s after SIGTERM\n%s", logs.String())
			}
		})
	}
}

// readNotify returns the next datagram on sock, failing the test after wait.
func readNotify(t *testing.T, sock *net.UnixConn, wait time.Duration, logs *bytes.Buffer) string {
	t.Helper()
	if err := sock.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := sock.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no notification within %s; daemon's log:\n%s", wait, logs.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}
