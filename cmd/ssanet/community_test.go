package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/agent"
)

// homeID is the peer ID of an initialised home.
func homeID(t *testing.T, home string) string {
	t.Helper()
	k, err := agent.LoadKey(home)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// runDaemonIn runs the daemon of an initialised home until the test ends.
func runDaemonIn(t *testing.T, home string) {
	t.Helper()
	cmd := exec.Command(binary, "--home", home, "run")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("daemon of %s: %v\n%s", home, err, logs.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("daemon of %s still ran 10s after SIGTERM", home)
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, _, code := ssanet(t, "--home", home, "id"); code == 0 {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("daemon of %s exited: %v\n%s", home, err, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon of %s did not answer within 20s\n%s", home, logs.String())
		}
	}
}

// TestCLICommunity walks the roster's life through the CLI: init a 2-of-3 community, sign
// offline, start an agent from it, propose a change, publish it unsigned (refused), signed by
// one admin (refused), by two (applied), and replay the older roster (refused, nothing changes).
func TestCLICommunity(t *testing.T) {
	ha, hb, hc, hd := initHome(t), initHome(t), initHome(t), initHome(t)
	a, b, c, d := homeID(t, ha), homeID(t, hb), homeID(t, hc), homeID(t, hd)
	e := homeID(t, initHome(t))
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "v1.cbor"), filepath.Join(dir, "v2.cbor")
	must := func(home string, wantCode int, args ...string) string {
		t.Helper()
		out, errs, code := ssanet(t, append([]string{"--home", home}, args...)...)
		if code != wantCode {
			t.Fatalf("%v: exit %d, want %d\n%s%s", args, code, wantCode, out, errs)
		}
		return out + errs
	}
	must(ha, 0, "community", "init", "--name", "cert-test", "--admins", a+","+b+","+c, "--threshold", "2", "--members", d, "--out", v1)
	must(ha, 0, "community", "sign", v1)
	must(hb, 0, "community", "sign", v1)
	if out := must(hd, 0, "community", "sign", v1); !strings.Contains(out, "not among this roster's admins") {
		t.Errorf("a non-admin's signature is not pointed out: %s", out)
	}
	var view agent.CommunityView
	if err := json.Unmarshal([]byte(must(ha, 0, "community", "show", v1, "--json")), &view); err != nil {
		t.Fatal(err)
	}
	if view.Version != 1 || view.Threshold != 2 || len(view.Admins) != 3 || len(view.Members) != 4 || len(view.Signers) != 3 {
		t.Fatalf("proposal: %+v", view)
	}
	editConfig(t, hd, func(s string) string { return s + "community: " + v1 + "\n" })
	runDaemonIn(t, hd)
	if out := must(hd, 0, "community", "show"); !strings.Contains(out, "community cert-test version 1") {
		t.Fatalf("show: %s", out)
	}

	must(hd, 0, "community", "propose", "--add", e, "--org", e+"=CERT-E", "--roles", e+"=member,provider", "--out", v2)
	if out := must(hd, 2, "community", "publish", v2); !strings.Contains(out, "not signed by enough admins") {
		t.Errorf("unsigned: %s", out)
	}
	must(hc, 0, "community", "sign", v2)
	must(hd, 2, "community", "publish", v2)
	must(ha, 0, "community", "sign", v2)
	if out := must(hd, 0, "community", "publish", v2); !strings.Contains(out, "version 2 of community cert-test applied") {
		t.Errorf("publish: %s", out)
	}
	if out := must(hd, 0, "community", "show"); !strings.Contains(out, e+" CERT-E [member,provider]") {
		t.Errorf("show after publish: %s", out)
	}
	if out := must(hd, 2, "community", "publish", v1); !strings.Contains(out, "not newer") {
		t.Errorf("replay: %s", out)
	}
	if out := must(hd, 0, "community", "show"); !strings.Contains(out, "version 2") {
		t.Errorf("after the replay: %s", out)
	}
	must(hd, 2, "community", "propose", "--remove", a+"x", "--out", v2)
	if _, err := os.Stat(v2 + ".partial"); !os.IsNotExist(err) {
		t.Errorf("a .partial file is left: %v", err)
	}
}
