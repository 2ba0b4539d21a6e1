package main

import (
	"strings"
	"testing"
)

// TestForeignFlags: every command refuses, as a usage error (exit 2, nothing run), a flag
// another command has and it does not: `offer add --check` is not `config check`'s or run's
// --check, and `ssa show --wait` no approve's --wait.
func TestForeignFlags(t *testing.T) {
	home := t.TempDir()
	// Flags of other commands, tried in this order: the first one a command lacks is given.
	foreign := []string{"check", "log-level", "template", "wait", "out", "format", "provider"}
	for _, cmd := range leaves(tree()) {
		var flag string
		for _, f := range foreign {
			if cmd.Flags().Lookup(f) == nil && cmd.InheritedFlags().Lookup(f) == nil {
				flag = f
				break
			}
		}
		name := commandName(cmd)
		t.Run(name+" --"+flag, func(t *testing.T) {
			args := append([]string{"--home", home}, strings.Fields(name)...)
			args = append(args, "--"+flag+"=1")
			out, errs, code := ssanet(t, args...)
			if code != exitUsage || out != "" || !strings.Contains(errs, "unknown flag: --"+flag) {
				t.Errorf("ssanet %s: exit %d\nstdout: %s\nstderr: %s\nwant exit 2, unknown flag --%s", strings.Join(args, " "), code, out, errs, flag)
			}
		})
	}
}
