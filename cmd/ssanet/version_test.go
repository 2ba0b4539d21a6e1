package main

import (
	"debug/buildinfo"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/agent"
)

// TestVersion runs the built binary: version and --version print the version, the commit and
// build date that go build recorded in the binary (or "unknown", as outside a git checkout,
// in a git worktree or with -buildvcs=false), and the Go version.
func TestVersion(t *testing.T) {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	want := agent.BuildInfo{Version: agent.Version, Commit: agent.Unknown, GoVersion: runtime.Version(), BuildDate: agent.Unknown}
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			want.Commit = s.Value
		case "vcs.time":
			want.BuildDate = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		want.Commit += "-dirty"
	}
	t.Logf("the test binary's build: %+v", want)
	text := "ssanet " + want.Version + "\ncommit:     " + want.Commit + "\ngo:         " + want.GoVersion + "\nbuild date: " + want.BuildDate + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, errs, code := ssanet(t, args...)
		if code != 0 || out != text {
			t.Errorf("ssanet %s: exit %d, stdout\n%s\nwant exit 0, stdout\n%s\nstderr: %s", strings.Join(args, " "), code, out, text, errs)
		}
	}
	for _, args := range [][]string{{"version", "--json"}, {"--json", "--version"}} {
		out, errs, code := ssanet(t, args...)
		var got agent.BuildInfo
		if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got != want {
			t.Errorf("ssanet %s: exit %d, %+v (%v), want %+v; stderr: %s", strings.Join(args, " "), code, got, err, want, errs)
		}
	}
	if _, errs, code := ssanet(t, "--version", "run"); code != exitUsage || !strings.Contains(errs, "unknown flag: --version") {
		t.Errorf("ssanet --version run: exit %d, stderr %q; want exit 2 and the reason", code, errs)
	}
}
