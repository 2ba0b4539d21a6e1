package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// freePort is a loopback port free for both TCP and UDP when it returns.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP in 20 tries")
	return 0
}

// TestCLIListenInUse: a second agent told to listen where another agent listens exits 1
// naming the address, over TCP and over QUIC, instead of sharing the port with it
// (SO_REUSEPORT) or starting on its other addresses.
func TestCLIListenInUse(t *testing.T) {
	port := freePort(t)
	tcp := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	quic := fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", port)
	listen := func(addrs ...string) func(string) string {
		return func(c string) string {
			return strings.Replace(c, "    - /ip4/127.0.0.1/tcp/0\n", "    - "+strings.Join(addrs, "\n    - ")+"\n", 1)
		}
	}
	startDaemon(t, listen(tcp, quic))
	free := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))
	for _, tc := range []struct {
		name  string
		addrs []string
		inUse string
	}{
		{name: "tcp", addrs: []string{tcp}, inUse: tcp},
		{name: "quic after a free tcp", addrs: []string{free, quic}, inUse: quic},
	} {
		home := initHome(t)
		editConfig(t, home, listen(tc.addrs...))
		t.Run(tc.name, func(t *testing.T) {
			// Before the fix the second daemon ran, sharing the port: it is stopped here.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "--home", home, "run")
			var errs bytes.Buffer
			cmd.Stderr = &errs
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("a second daemon on %s still ran after 20s\n%s", tc.inUse, errs.String())
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1\n%s", err, errs.String())
			}
			if want := "cannot listen on " + tc.inUse + " (is another agent"; !strings.Contains(errs.String(), want) {
				t.Fatalf("stderr does not say %q:\n%s", want, errs.String())
			}
		})
	}
}
