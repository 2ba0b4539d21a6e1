package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/ssanet/ssanet/protocol"
)

var binary string

// TestMain builds the ssanet binary once; the CLI is tested by running it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssanet-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ssanet")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ssanet runs the binary and returns stdout, stderr and the exit code.
func ssanet(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return ssanetStdin(t, nil, args...)
}

// ssanetStdin is ssanet with stdin as the command's standard input.
func ssanetStdin(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func identity(t *testing.T) *protocol.Identity {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := protocol.NewIdentity(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// agreedSSA negotiates the example templates in memory and returns the agreed SSA.
func agreedSSA(t *testing.T, req []byte, off []byte) *protocol.SSA {
	t.Helper()
	now := time.Now()
	request, err := protocol.ParseSSAYAML(req, now)
	if err != nil {
		t.Fatal(err)
	}
	request.ID = "ssa-cli-test"
	offer, err := protocol.ParseOfferYAML(off, now)
	if err != nil {
		t.Fatal(err)
	}
	rid, pid := identity(t), identity(t)
	r, err := protocol.NewRequester(rid, pid.PeerID(), bytes.Repeat([]byte{9}, 16))
	if err != nil {
		t.Fatal(err)
	}
	p := protocol.NewProvider(pid)
	step := func(n *protocol.Negotiation, ev protocol.Event) *protocol.Output {
		out, err := n.Step(now, ev)
		if err != nil {
			t.Fatal(err)
		}
		return &out
	}
	recv := func(n *protocol.Negotiation, e *protocol.Envelope) *protocol.Output {
		env, err := protocol.Open(e.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return step(n, protocol.Receive{Env: env})
	}
	recv(p, step(r, protocol.Start{SSA: request}).Send)
	prop, conflicts := protocol.Meet(p.Pending(), offer, protocol.FromTime(now))
	if conflicts != nil {
		t.Fatalf("the example templates do not fit: %v", conflicts)
	}
	recv(r, step(p, protocol.Propose{SSA: prop}).Send)
	conf := recv(p, step(r, protocol.Accept{}).Send)
	return recv(r, conf.Send).Agreement
}

func TestTemplateExamplesFit(t *testing.T) {
	req, _, code := ssanet(t, "template", "example", "requester")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	off, _, code := ssanet(t, "template", "example", "provider")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	s := agreedSSA(t, []byte(req), []byte(off))
	if s.Status != protocol.StatusApproval || s.Policy.Masking[0].Bits != 8 || s.Policy.Masking[0].Scope != protocol.ScopePublicIP {
		t.Fatalf("agreement %+v", s.Policy)
	}
}

func TestSSAVerify(t *testing.T) {
	s := agreedSSA(t, protocol.ExampleRequester, protocol.ExampleProvider)
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.ssa")
	os.WriteFile(good, b, 0o600)
	tampered := filepath.Join(dir, "tampered.ssa")
	s.Participants.Requester.Name = "Someone else"
	tb, _ := s.Encode()
	os.WriteFile(tampered, tb, 0o600)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"valid", []string{"ssa", "verify", good}, 0, "provider"},
		{"valid json", []string{"--json", "ssa", "verify", good}, 0, `"valid": true`},
		{"tampered", []string{"ssa", "verify", tampered}, 1, "bad signature"},
		{"missing file", []string{"ssa", "verify", filepath.Join(dir, "none")}, 1, ""},
		{"no file", []string{"ssa", "verify"}, 2, ""},
		{"unknown command", []string{"frobnicate"}, 2, ""},
		{"bad template kind", []string{"template", "example", "other"}, 2, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := ssanet(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errs)
			}
			if !strings.Contains(out+errs, tc.want) {
				t.Fatalf("output %q lacks %q", out+errs, tc.want)
			}
		})
	}
}

func TestDemo(t *testing.T) {
	out, errs, code := ssanet(t, "demo", "--records", "120", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"①", "⑦", "⑭ verdict for the security management server: FULFILLED", "120 received and verified, 0 violations"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
