package main

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/agent"
)

// TestCLIReloadPartial: a reload that applies a part of the config (the log level) and fails
// on another (a syslog listener whose port is taken) prints both what was applied and what
// failed, in text and with --json, and exits 1; a config that does not load applies nothing.
func TestCLIReloadPartial(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	home := startDaemon(t, nil)
	for _, tc := range []struct {
		name, level string
		json        bool
	}{
		{name: "text", level: "debug"},
		{name: "json", level: "warn", json: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			editConfig(t, home, func(c string) string {
				c, _, _ = strings.Cut(c, "\nlog-level:")
				return c + "\nlog-level: " + tc.level + "\ningest:\n  syslog-tcp: " + taken.Addr().String() + "\n"
			})
			args := []string{"--home", home, "reload"}
			if tc.json {
				args = append(args, "--json")
			}
			out, errs, code := ssanet(t, args...)
			if code != exitError || !strings.Contains(errs, taken.Addr().String()) || !strings.Contains(errs, "config not reloaded") {
				t.Fatalf("reload with a taken port: exit %d\nstdout: %s\nstderr: %s\nwant exit 1 naming the address", code, out, errs)
			}
			if !tc.json {
				if !strings.Contains(out, "reloaded: log-level\n") || !strings.Contains(errs, "only what is listed as reloaded (") {
					t.Errorf("reload with a taken port: stdout %q, stderr %q; want the log level reloaded, and that the rest was not", out, errs)
				}
				return
			}
			var rep agent.ReloadReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil || !slices.Contains(rep.Applied, "log-level") ||
				!strings.Contains(rep.Error, taken.Addr().String()) {
				t.Errorf("reload --json with a taken port: %+v (%v) from %q; want log-level applied and the error", rep, err, out)
			}
		})
	}
	editConfig(t, home, func(c string) string { return c + "bogus-key: 1\n" })
	out, errs, code := ssanet(t, "--home", home, "--json", "reload")
	var rep agent.ReloadReport
	if err := json.Unmarshal([]byte(out), &rep); code != exitError || err != nil || rep.Applied == nil || len(rep.Applied) != 0 ||
		!strings.Contains(rep.Error, "bogus-key") || !strings.Contains(errs, "bogus-key") {
		t.Errorf("reload --json of a config that does not load: exit %d\nstdout: %s\nstderr: %s\nwant exit 1, nothing applied and the error", code, out, errs)
	}
}
