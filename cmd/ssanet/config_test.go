package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/policy"
)

// TestConfigCheck runs `ssanet config check` on broken configs: each problem is listed with its
// line, all of them rather than the first, and the exit code is 1.
func TestConfigCheck(t *testing.T) {
	const base = "listen: [/ip4/127.0.0.1/tcp/0]\nmdns: false\ndht-mode: server\naccept: auto\n" // lines 1-4
	tests := []struct {
		name, config string
		want         []string // the lines printed, without the config's path
	}{
		{"unknown key", base + "metric: 127.0.0.1:9464\n",
			[]string{"line 5: unknown key metric (did you mean metrics?)"}},
		{"unknown key in a sink", base + "sinks:\n  - type: jsonl\n    path: /tmp/x.jsonl\n    relaton: any\n",
			[]string{"line 8: unknown key relaton (did you mean relation?)"}},
		{"webhook url", base + "sinks:\n  - type: jsonl\n    path: /tmp/x.jsonl\n  - type: webhook\n    url: ftp//x\n",
			[]string{`line 8: sink webhook: sink: webhook config: url "ftp//x": want http:// or https://`}},
		{"followed directory missing", base + "ingest:\n  follow:\n    - path: /nonexistent/ssanet/eve.json\n      format: eve\n",
			[]string{"line 7: ingest.follow /nonexistent/ssanet/eve.json: directory /nonexistent/ssanet does not exist: create it, or fix the path"}},
		{"dht-mode", strings.Replace(base, "dht-mode: server", "dht-mode: sever", 1),
			[]string{`line 3: dht-mode must be server or client, not "sever"`}},
		{"duration", base + "message-timeout: 30x\n",
			[]string{`line 5: "30x" is not a duration such as 30s`}},
		{"listen address", strings.Replace(base, "listen: [/ip4/127.0.0.1/tcp/0]", "listen:\n  - /ip4/127.0.0.1/tcp/0\n  - /ip4/x/tcp/1", 1),
			[]string{`line 3: listen: "/ip4/x/tcp/1" is not a multiaddr: failed to parse multiaddr "/ip4/x/tcp/1": invalid value "x" for protocol ip4: failed to parse ip4 addr: x`}},
		{"metrics not loopback", base + "metrics: 10.1.2.3:9464\n",
			[]string{`line 5: metrics "10.1.2.3:9464" is not a loopback address: set metrics-remote: true to serve metrics to other hosts, or use 127.0.0.1:PORT`}},
		{"two sinks named alike", base + "sinks:\n  - type: jsonl\n    path: /tmp/a.jsonl\n  - type: jsonl\n    path: /tmp/b.jsonl\n",
			[]string{`line 8: two sinks are named "jsonl" (a sink without a name is named after its type): give each a name of its own`}},
		{"log level", base + "log-level: loud\n",
			[]string{`line 5: log-level must be debug, info, warn or error, not "loud"`}},
		{"sink read-from", base + "sinks:\n  - type: jsonl\n    path: /tmp/x.jsonl\n    read-from: middle\n",
			[]string{`line 6: sink jsonl: read-from must be beginning or end, not "middle"`}},
		{"key twice", base + "mdns: true\n",
			[]string{`line 5: mapping key "mdns" already defined at line 2`}},
		{"cut short", "listen: [/ip4/127.0.0.1/tcp/0]\nmdns: false\n",
			[]string{"agent: config incomplete: it has no dht-mode: key (it may have been cut short); every config states listen, mdns, dht-mode, accept"}},
		{"every problem listed", strings.Replace(base, "accept: auto", "accept: sometimes", 1) +
			"metric: 127.0.0.1:9464\nsinks:\n  - type: webhook\n    url: ftp//x\ningest:\n  follow:\n    - path: /nonexistent/ssanet/eve.json\n      format: eve\nretry-interval: soon\n",
			[]string{
				`line 4: accept must be auto or manual, not "sometimes"`,
				"line 5: unknown key metric (did you mean metrics?)",
				`line 7: sink webhook: sink: webhook config: url "ftp//x": want http:// or https://`,
				"line 11: ingest.follow /nonexistent/ssanet/eve.json: directory /nonexistent/ssanet does not exist: create it, or fix the path",
				`line 13: "soon" is not a duration such as 30s`,
			}},
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if out, _, code := ssanet(t, "--home", missing, "config", "check"); code != 1 || out != filepath.Join(missing, "config.yaml")+": home "+missing+" does not exist: create it with ssanet --home "+missing+" init\n" {
		t.Errorf("a home that does not exist: exit %d, printed %q", code, out)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "home")
			if _, errs, code := ssanet(t, "--home", home, "init"); code != 0 {
				t.Fatalf("init: exit %d: %s", code, errs)
			}
			path := filepath.Join(home, "config.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			for _, w := range tc.want {
				want.WriteString(path + ": " + w + "\n")
			}
			for _, cmd := range [][]string{{"config", "check"}, {"run", "--check"}} {
				out, errs, code := ssanet(t, append([]string{"--home", home}, cmd...)...)
				if code != 1 || out != want.String() {
					t.Errorf("%s: exit %d, printed\n%s\nwant exit 1 and\n%s(stderr %s)", cmd, code, out, want.String(), errs)
				}
			}
		})
	}
}

// TestConfigCheckExamples: the configs ssanet init writes pass, with and without its flags.
func TestConfigCheckExamples(t *testing.T) {
	for _, flags := range [][]string{
		nil,
		{"--org", "Example CERT", "--name", "SOC", "--email", "soc@example.org", "--listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "--mdns=false"},
	} {
		home := filepath.Join(t.TempDir(), "home")
		if _, errs, code := ssanet(t, append([]string{"--home", home, "init"}, flags...)...); code != 0 {
			t.Fatalf("init %v: exit %d: %s", flags, code, errs)
		}
		want := filepath.Join(home, "config.yaml") + ": ok\n"
		for _, cmd := range [][]string{{"config", "check"}, {"run", "--check"}} {
			if out, errs, code := ssanet(t, append([]string{"--home", home}, cmd...)...); code != 0 || out != want {
				t.Errorf("init %v, %s: exit %d, printed %q (stderr %s), want exit 0 and %q", flags, cmd, code, out, errs, want)
			}
		}
		if out, _, code := ssanet(t, "--home", home, "--json", "config", "check"); code != 0 || strings.TrimSpace(out) != "[]" {
			t.Errorf("init %v, --json config check: exit %d, printed %q, want []", flags, code, out)
		}
	}
}

// TestConfigCheckFiles: `config check FILE...` checks template and offer files too, each
// problem after its file's path (and line); the example templates pass.
func TestConfigCheckFiles(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if _, errs, code := ssanet(t, "--home", home, "init", "--mdns=false"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errs)
	}
	dir := t.TempDir()
	tmpl, offer := filepath.Join(dir, "request.yaml"), filepath.Join(dir, "offer.yaml")
	files := map[string]string{
		tmpl:  "information:\n  - type: attack-detection-log\n    format: eve\npolicy:\n  handlin: {}\n",
		offer: "id: alerts\nterms:\n  information:\n    - type: attack-detection-log\n      format: evee\n",
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := tmpl + ": line 5: protocol: bad template: yaml: unmarshal errors: field handlin not found in type protocol.Policy\n" +
		offer + `: information[0]: format "evee" is not one this agent can parse (` + strings.Join(policy.Formats(), ", ") + `): no request for it can be enforced` + "\n"
	if out, errs, code := ssanet(t, "--home", home, "config", "check", tmpl, offer); code != 1 || out != want {
		t.Errorf("config check FILES: exit %d, printed\n%s\nwant exit 1 and\n%s(stderr %s)", code, out, want, errs)
	}
	examples, err := filepath.Glob("../../protocol/examples/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example templates (%v)", err)
	}
	okLine := filepath.Join(home, "config.yaml") + ": ok\n"
	if out, errs, code := ssanet(t, append([]string{"--home", home, "config", "check"}, examples...)...); code != 0 || out != okLine {
		t.Errorf("config check on the example templates: exit %d, printed %q (stderr %s)", code, out, errs)
	}
}
