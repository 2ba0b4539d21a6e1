package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliCase is one invocation of the binary and what it must do.
type cliCase struct {
	name string
	args []string
	code int
	// out and errs must be in stdout and stderr; notOut must not be in stdout+stderr.
	out, errs, notOut string
}

func runCases(t *testing.T, tests []cliCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := ssanet(t, tc.args...)
			if code != tc.code {
				t.Fatalf("ssanet %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, tc.code, out, errs)
			}
			if !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) {
				t.Errorf("ssanet %s: want %q in stdout and %q in stderr\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), tc.out, tc.errs, out, errs)
			}
			if tc.notOut != "" && strings.Contains(out+errs, tc.notOut) {
				t.Errorf("ssanet %s: output has %q\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), tc.notOut, out, errs)
			}
		})
	}
}

// TestCLIUsage covers what needs no daemon: help, stray arguments, --json where it applies.
func TestCLIUsage(t *testing.T) {
	home := filepath.Join(t.TempDir(), "agent")
	runCases(t, []cliCase{
		{name: "top help lists every command", args: []string{"--help"}, out: "  request     negotiate an SSA"},
		{name: "top help exit codes", args: []string{"--help"}, out: "7 the peer does not speak ssanet"},
		{name: "top help -h", args: []string{"-h"}, out: "  ssanet [command]"},
		{name: "help command", args: []string{"help", "ssa", "decline"}, out: "ssanet ssa decline ID [--reason R] [--wait D]"},
		{name: "help unknown command", args: []string{"help", "frob"}, code: 2, errs: `no help for "frob"`},
		{name: "no command", args: nil, code: 2, errs: "Available Commands:"},
		{name: "init help GNU flags", args: []string{"init", "--help"}, out: "      --bootstrap ADDRS ", notOut: " -bootstrap"},
		{name: "decline help", args: []string{"ssa", "decline", "--help"}, out: "ssanet ssa decline ID [--reason R] [--wait D]"},
		{name: "policy help", args: []string{"policy", "--help"}, out: "Exit codes: 0 ok (check: no violation)"},
		{name: "policy apply help", args: []string{"policy", "apply", "--help"}, out: "      --key-file FILE ", notOut: "  --json"},
		{name: "offer help", args: []string{"offer", "--help"}, out: "  remove      withdraw one of this agent's offers"},
		{name: "offer without subcommand", args: []string{"offer"}, code: 2, errs: "Available Commands:"},
		{name: "ssa help", args: []string{"ssa", "--help"}, out: "  revise      propose a new version"},
		{name: "ssa -h", args: []string{"ssa", "-h"}, out: "  export      write the agreed SSA"},
		{name: "ssa without subcommand", args: []string{"ssa"}, code: 2, errs: "Usage:"},
		{name: "ssa unknown subcommand", args: []string{"ssa", "frob"}, code: 2, errs: `unknown command "frob" for "ssanet ssa"`},
		{name: "ssa misspelt subcommand", args: []string{"ssa", "shwo"}, code: 2, errs: "did you mean show?"},
		{name: "unknown flag", args: []string{"ssa", "list", "--frob"}, code: 2, errs: "unknown flag: --frob\nRun 'ssanet ssa list --help' for usage."},
		{name: "single-dash long flag", args: []string{"-home", home, "ssa", "list"}, code: 2, errs: "-home: long flags take two dashes: --home"},
		{name: "single-dash long flag with value", args: []string{"ssa", "list", "-json=true"}, code: 2, errs: "-json=true: long flags take two dashes: --json=true"},
		{name: "single-dash word as a flag's value", args: []string{"policy", "check", "--template", "-home", "--format", "eve"}, code: 1, errs: "-home"},
		{name: "single-dash after --", args: []string{"policy", "check", "--template", "none.yaml", "--format", "eve", "--", "-json"}, code: 1, errs: "none.yaml"},
		{name: "flag without value", args: []string{"ssa", "approve", "x", "--wait"}, code: 2, errs: "flag needs an argument: --wait"},
		{name: "revise help", args: []string{"ssa", "revise", "--help"}, out: "ssanet ssa revise ID [--template FILE] [--set PATH=VALUE]... [--wait D]"},
		{name: "revise without terms", args: []string{"--home", home, "ssa", "revise", "ssa-x"}, code: 2, errs: "give the new terms with --template FILE, --set PATH=VALUE or both"},
		{name: "revise set without value", args: []string{"--home", home, "ssa", "revise", "ssa-x", "--set", "handling.tlp"}, code: 2, errs: "write PATH=VALUE"},
		{name: "export help", args: []string{"ssa", "export", "--help"}, out: "ssanet ssa export ID [--out FILE]", notOut: "--wait"},
		{name: "export help has no json", args: []string{"ssa", "export", "--help"}, notOut: "--json"},
		{name: "show help has no wait", args: []string{"ssa", "show", "--help"}, out: "ssanet ssa show ID", notOut: "--wait"},
		{name: "show without ID", args: []string{"ssa", "show"}, code: 2, errs: "usage: ssanet ssa show ID"},
		{name: "transcript help has no wait", args: []string{"ssa", "transcript", "--help"}, out: "--json", notOut: "--wait"},
		{name: "version", args: []string{"version"}, out: "ssanet "},
		{name: "version json after", args: []string{"version", "--json"}, out: `"version": `},
		{name: "version json before", args: []string{"--json", "version"}, out: `"version": `},
		{name: "version extra argument", args: []string{"version", "bogus"}, code: 2, errs: `unexpected "bogus"`},
		{name: "init positional", args: []string{"--home", home, "init", "provider"}, code: 2, errs: `init takes no arguments, only flags; unexpected "provider"`},
		{name: "id extra argument", args: []string{"--home", home, "id", "extra"}, code: 2, errs: `id takes no arguments, only flags; unexpected "extra"`},
		{name: "ssa list extra argument", args: []string{"--home", home, "ssa", "list", "extra"}, code: 2, errs: `unexpected "extra"`},
		{name: "run extra argument", args: []string{"--home", home, "run", "now"}, code: 2, errs: `unexpected "now"`},
		{name: "demo extra argument", args: []string{"demo", "now"}, code: 2, errs: `unexpected "now"`},
		{name: "template refuses json", args: []string{"--json", "template", "example"}, code: 2, errs: "template example prints no data as JSON"},
		{name: "template json after", args: []string{"template", "example", "--json"}, code: 2, errs: "template example prints no data as JSON"},
		{name: "demo refuses json", args: []string{"--json", "demo"}, code: 2, errs: "demo prints no data as JSON"},
		{name: "export refuses json", args: []string{"--json", "--home", home, "ssa", "export", "x"}, code: 2, errs: "ssa export prints no data as JSON"},
		{name: "home never initialised", args: []string{"--home", home, "ssa", "list"}, code: 1, errs: "create one with: ssanet --home " + home + " init"},
	})
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("a refused init created %s (%v)", home, err)
	}
}

// initHome initialises a home that listens on loopback only.
func initHome(t *testing.T) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "agent")
	if _, errs, code := ssanet(t, "--home", home, "init", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs)
	}
	return home
}

// editConfig rewrites the home's config.yaml with edit.
func editConfig(t *testing.T, home string, edit func(string) string) {
	t.Helper()
	path := filepath.Join(home, "config.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(edit(string(b))), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startDaemon initialises a home (config.yaml changed by edit, if not nil) and runs its daemon
// until the test ends, when SIGTERM must stop it with exit 0.
func startDaemon(t *testing.T, edit func(string) string) string {
	t.Helper()
	home := initHome(t)
	if edit != nil {
		editConfig(t, home, edit)
	}
	cmd := exec.Command(binary, "--home", home, "run")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var werr error
	exited := make(chan struct{})
	go func() { werr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if werr != nil {
				t.Errorf("daemon of %s: %v\n%s", home, werr, logs.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("daemon of %s still ran 10s after SIGTERM", home)
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, _, code := ssanet(t, "--home", home, "id"); code == 0 {
			return home
		}
		select {
		case <-exited:
			t.Fatalf("daemon of %s exited: %v\n%s", home, werr, logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon of %s did not answer within 20s\n%s", home, logs.String())
		}
	}
}

// TestCLIDaemon covers the commands that talk to a running daemon, and its home.
func TestCLIDaemon(t *testing.T) {
	home := startDaemon(t, nil)
	runCases(t, []cliCase{
		{name: "offer list json empty", args: []string{"--home", home, "offer", "list", "--json"}, out: "[]\n"},
		{name: "offer remove unknown", args: []string{"--home", home, "offer", "remove", "nosuch"}, code: 1,
			errs: `this agent has no offer "nosuch"; see its offers with: ssanet --home ` + home + " offer list"},
		{name: "ssa list json empty", args: []string{"--home", home, "--json", "ssa", "list"}, out: "[]\n"},
		{name: "peers none", args: []string{"--home", home, "peers"}, out: "no known peers\n"},
		{name: "peers json none", args: []string{"--home", home, "peers", "--json"}, out: "[]\n"},
		{name: "peers extra argument", args: []string{"--home", home, "peers", "x"}, code: 2, errs: `unexpected "x"`},
		{name: "second daemon", args: []string{"--home", home, "run"}, code: 1, errs: "a daemon already runs in " + home},
		{name: "init again", args: []string{"--home", home, "init"}, code: 1, errs: "use another --home"},
	})
	out, errs, code := ssanet(t, "--home", home, "id", "--json")
	var id struct {
		PeerID string `json:"peer_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || id.PeerID == "" {
		t.Fatalf("id --json: exit %d: %s%s", code, out, errs)
	}
}

// TestCLIConfigSinks: two sinks of one name would share their progress; the daemon refuses them.
func TestCLIConfigSinks(t *testing.T) {
	home := initHome(t)
	editConfig(t, home, func(c string) string {
		return c + "sinks:\n  - {type: jsonl, path: a.jsonl}\n  - {type: jsonl, path: b.jsonl}\n"
	})
	runCases(t, []cliCase{
		{name: "same name", args: []string{"--home", home, "run"}, code: 1, errs: `two sinks are named "jsonl"`},
	})
}

func TestCLIDemoDirInUse(t *testing.T) {
	dir := t.TempDir()
	if _, errs, code := ssanet(t, "--home", filepath.Join(dir, "directory"), "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs)
	}
	runCases(t, []cliCase{
		{name: "earlier demo", args: []string{"demo", "--dir", dir}, code: 1, errs: "remove it, or give another --dir", notOut: "--home"},
	})
}

// TestCLIRequestOutcomes: what request prints and how it exits when the provider's offer holds
// requests for its operator, and when the requester's config holds proposals for its own.
func TestCLIRequestOutcomes(t *testing.T) {
	prov := startDaemon(t, nil)
	req := startDaemon(t, func(c string) string { return strings.Replace(c, "accept: auto", "accept: manual", 1) })
	out, errs, code := ssanet(t, "--home", prov, "id", "--json")
	var id struct{ Addrs []string }
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || len(id.Addrs) == 0 {
		t.Fatalf("id --json: exit %d: %s%s", code, out, errs)
	}
	dir := t.TempDir()
	offer, request := filepath.Join(dir, "offer.yaml"), filepath.Join(dir, "request.yaml")
	example := func(which string) string {
		out, errs, code := ssanet(t, "template", "example", which)
		if code != 0 {
			t.Fatalf("template example %s: exit %d: %s", which, code, errs)
		}
		return out
	}
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(request, example("requester"))
	addOffer := func(approval string) {
		write(offer, strings.Replace(example("provider"), "approval: auto", "approval: "+approval, 1))
		if _, errs, code := ssanet(t, "--home", prov, "offer", "add", offer); code != 0 {
			t.Fatalf("offer add: exit %d: %s", code, errs)
		}
	}
	requestArgs := []string{"--home", req, "request", "--provider", id.Addrs[0], "--template", request}

	addOffer("manual")
	runCases(t, []cliCase{
		{name: "held by the provider", args: slices.Concat(requestArgs, []string{"--wait", "1s"}), code: 1,
			out: ": request-sent (requester", errs: "still request-sent after 1s: the peer has not answered (it may hold the SSA for its operator); follow it with: ssanet --home " + req + " ssa show ssa-"},
		{name: "held by the provider, no wait", args: slices.Concat(requestArgs, []string{"--wait", "0"}), out: ": request-sent (requester"},
		{name: "remove the manual offer", args: []string{"--home", prov, "--json", "offer", "remove", "ids-alerts"}, out: `"removed": "ids-alerts"`},
	})
	addOffer("auto")
	runCases(t, []cliCase{
		{name: "held by the requester", args: requestArgs, out: ": proposal-received (requester", notOut: "still"},
	})

	// Shell completion asks the daemon for the IDs of its SSAs and offers.
	out, errs, code = ssanet(t, "__complete", "--home", req, "ssa", "show", "")
	if code != 0 || !strings.Contains(out, "ssa-") || !strings.Contains(out, "\tproposal-received, peer ") {
		t.Errorf("completion of ssa show: exit %d, %q (%s); want the SSA IDs with their state", code, out, errs)
	}
	out, errs, code = ssanet(t, "__complete", "--home", req, "records", "--ssa", "ssa-")
	if code != 0 || !strings.HasPrefix(out, "ssa-") {
		t.Errorf("completion of records --ssa: exit %d, %q (%s); want the SSA IDs", code, out, errs)
	}
	out, errs, code = ssanet(t, "__complete", "--home", req, "request", "--provider", "")
	if code != 0 || !strings.Contains(out, strings.TrimPrefix(id.Addrs[0][strings.LastIndex(id.Addrs[0], "/"):], "/")+"\t") {
		t.Errorf("completion of request --provider: exit %d, %q (%s); want the provider's peer ID", code, out, errs)
	}
	out, errs, code = ssanet(t, "__complete", "--home", prov, "offer", "remove", "ids")
	if code != 0 || !strings.HasPrefix(out, "ids-alerts\tattack-detection-log/") {
		t.Errorf("completion of offer remove: exit %d, %q (%s); want the offer's ID", code, out, errs)
	}
}

// TestCLIUntrustedSocket: the CLI believes only a control socket made by the home's owner in a
// home that others cannot write; a user who replaced control.sock could answer for the agent.
func TestCLIUntrustedSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("changing a socket's owner needs root (CI runs as root)")
	}
	home := startDaemon(t, nil)
	sock := filepath.Join(home, "control.sock")
	if err := os.Lchown(sock, 65534, 65534); err != nil { // nobody
		t.Fatal(err)
	}
	runCases(t, []cliCase{
		{name: "socket of another user", args: []string{"--home", home, "id"}, code: 1, errs: "belongs to user 65534"},
	})
	if err := os.Lchown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	runCases(t, []cliCase{
		{name: "home writable by others", args: []string{"--home", home, "id"}, code: 1, errs: "run chmod go-w " + home},
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	runCases(t, []cliCase{
		{name: "trusted again", args: []string{"--home", home, "id"}, out: "12D3KooW"},
	})
}
