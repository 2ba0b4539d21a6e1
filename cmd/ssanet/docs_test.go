package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ssanet/ssanet/agent"
)

// tree is the command tree as the binary builds it.
func tree() *cobra.Command {
	var out bytes.Buffer
	return (&cli{stdout: &out, stderr: &out, code: -1}).rootCommand()
}

// leaves are the commands that run something (neither root nor a group), as the README's CLI
// reference lists them; not cobra's help and completion commands.
func leaves(cmd *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range cmd.Commands() {
		switch {
		case !sub.IsAvailableCommand() || sub.Name() == "completion":
		case sub.HasSubCommands():
			out = append(out, leaves(sub)...)
		default:
			out = append(out, sub)
		}
	}
	return out
}

// TestHelpOnStdout: help goes to stdout with exit 0 and nothing on stderr, for the root, a
// command, a subcommand and the help command; a usage error goes to stderr with exit 2 and
// nothing on stdout.
func TestHelpOnStdout(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Available Commands:"},
		{[]string{"-h"}, "Available Commands:"},
		{[]string{"help"}, "Available Commands:"},
		{[]string{"init", "--help"}, "      --listen ADDRS "},
		{[]string{"ssa", "approve", "--help"}, "Usage:\n  ssanet ssa approve ID [--wait D]\n"},
		{[]string{"help", "ssa", "approve"}, "Usage:\n  ssanet ssa approve ID [--wait D]\n"},
		{[]string{"help", "policy"}, "  check       verify records offline"},
		{[]string{"completion", "--help"}, "bash"},
	} {
		out, errs, code := ssanet(t, tc.args...)
		if code != 0 || errs != "" || !strings.Contains(out, tc.want) {
			t.Errorf("ssanet %s: exit %d, stderr %q; want exit 0, nothing on stderr and %q on stdout:\n%s", strings.Join(tc.args, " "), code, errs, tc.want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `ssanet: unknown command "frobnicate" for "ssanet"`},
		{[]string{"ssa", "frobnicate"}, `ssanet: unknown command "frobnicate" for "ssanet ssa"`},
		{[]string{"--frobnicate"}, "ssanet: unknown flag: --frobnicate"},
		{[]string{"id", "--frobnicate"}, "ssanet: unknown flag: --frobnicate\nRun 'ssanet id --help' for usage.\n"},
		{[]string{"ssa", "show", "x", "--wait", "1s"}, "unknown flag: --wait"},
		{[]string{"-home", "/nonexistent", "id"}, "ssanet: -home: long flags take two dashes: --home"},
		{[]string{"help", "frobnicate"}, `no help for "frobnicate"`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "ssanet completion"`},
	} {
		out, errs, code := ssanet(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("ssanet %s: exit %d, stdout %q; want exit 2, nothing on stdout and %q on stderr:\n%s", strings.Join(tc.args, " "), code, out, tc.want, errs)
		}
	}
}

// TestCommandSynopses: a command's synopsis (its Use, which help, the man page and the README
// show) names each of its flags as the flag's help does (--name VALUE, or --name for a
// switch), and names no flag the command does not have.
func TestCommandSynopses(t *testing.T) {
	flagRef := regexp.MustCompile(`--([a-z][a-z-]*)`)
	for _, cmd := range leaves(tree()) {
		use := cmd.UseLine()
		t.Run(commandName(cmd), func(t *testing.T) {
			if cmd.Short == "" {
				t.Error("no short description")
			}
			{
				cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
					if f.Name == "help" || strings.HasPrefix(f.Usage, "the same as --") {
						return
					}
					want := "--" + f.Name
					if name, _ := pflag.UnquoteUsage(f); name != "" {
						want += " " + name
					}
					if !regexp.MustCompile(regexp.QuoteMeta(want) + `([^A-Za-z0-9_-]|$)`).MatchString(use) {
						t.Errorf("synopsis %q lacks %q", use, want)
					}
				})
			}
			for _, m := range flagRef.FindAllStringSubmatch(use, -1) {
				if cmd.Flags().Lookup(m[1]) == nil && cmd.InheritedFlags().Lookup(m[1]) == nil {
					t.Errorf("synopsis %q names --%s, which %s does not have", use, m[1], commandName(cmd))
				}
			}
		})
	}
}

// TestREADMECLIReference: the README's CLI reference has one row per command, which starts
// with the command's synopsis as help prints it, and no row for a command that does not exist.
func TestREADMECLIReference(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, ref, ok := strings.Cut(string(b), "\n## CLI reference\n")
	if !ok {
		t.Fatal(`README.md has no "## CLI reference"`)
	}
	ref, _, _ = strings.Cut(ref, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `(ssanet [^`]*)` \\|")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(ref, -1) {
		documented = append(documented, strings.ReplaceAll(m[1], `\|`, "|"))
	}
	root := tree()
	completion, _, err := root.Find([]string{"completion"})
	if err != nil {
		t.Fatal(err)
	}
	var shells []string
	for _, sh := range completion.Commands() {
		shells = append(shells, sh.Name())
	}
	defined := []string{"ssanet completion " + strings.Join(shells, "|")}
	for _, cmd := range leaves(root) {
		defined = append(defined, cmd.UseLine())
	}
	for _, d := range defined {
		if !slices.Contains(documented, d) {
			t.Errorf("README.md's CLI reference has no row `%s`", strings.ReplaceAll(d, "|", `\|`))
		}
	}
	for _, d := range documented {
		if !slices.Contains(defined, d) {
			t.Errorf("README.md's CLI reference has a row `%s`, which is no command's synopsis; the commands are:\n%s", d, strings.Join(defined, "\n"))
		}
	}
}

// lookPath finds a shell or tool the test needs (CI installs it: see .ci/run).
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (Debian package %s; .ci/run installs it): %v", name, name, err)
	}
	return p
}

// TestCompletion: the completion scripts for bash, zsh and fish are valid for their shells,
// and bash, with bash-completion loaded as an interactive shell has it, completes a
// subcommand, a flag and a flag's value through the binary.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ shell, check string }{
		{"bash", "-n"},
		{"zsh", "-n"},
		{"fish", "--no-execute"},
	} {
		script, errs, code := ssanet(t, "completion", tc.shell)
		if code != 0 || !strings.Contains(script, "__complete") {
			t.Fatalf("completion %s: exit %d: %s", tc.shell, code, errs)
		}
		file := filepath.Join(dir, "ssanet."+tc.shell)
		if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(lookPath(t, tc.shell), tc.check, file).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("%s %s on the completion script: %v\n%s", tc.shell, tc.check, err, out)
		}
	}

	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("bash-completion is not installed (Debian package bash-completion; .ci/run installs it): %v", err)
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"ssanet ssa ap", []string{"approve"}},
		{"ssanet ssa ", []string{"approve", "cancel", "decline", "export", "list", "revise", "show", "transcript", "verify"}},
		{"ssanet --home /nonexistent conf", []string{"config"}},
		{"ssanet ingest --for", []string{"--format"}},
		{"ssanet ingest --format id", []string{"idmef", "idmefv2"}},
		{"ssanet template example p", []string{"provider"}},
		{"ssanet completion ", []string{"bash", "fish", "powershell", "zsh"}},
	} {
		// COMP_WORDS as bash splits the line; a trailing space starts an empty word.
		words := strings.Fields(tc.line)
		if strings.HasSuffix(tc.line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		drive := "source " + bashCompletion + "; source " + filepath.Join(dir, "ssanet.bash") +
			"; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) +
			"; COMP_LINE='" + tc.line + "'; COMP_POINT=${#COMP_LINE}; __start_ssanet 2>/dev/null; printf '%s\\n' \"${COMPREPLY[@]}\""
		cmd := exec.Command("bash", "-c", drive)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+":"+os.Getenv("PATH"), "SSANET_HOME="+filepath.Join(dir, "no-home"))
		out, err := cmd.Output()
		got := strings.Fields(string(out))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("bash completes %q to %q (%v), want %q", tc.line, got, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "no-home")); !os.IsNotExist(err) {
		t.Errorf("completion touched the home (%v): it must not start an agent or make a home", err)
	}
}

// TestManPages: ssanet man writes a page per command, made from the same definitions as the
// help, and each renders without a warning.
func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man")
	if _, errs, code := ssanet(t, "man", dir); code != 0 {
		t.Fatalf("man: exit %d: %s", code, errs)
	}
	want := []string{"ssanet.1"}
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				want = append(want, strings.ReplaceAll(sub.CommandPath(), " ", "-")+".1")
				walk(sub)
			}
		}
	}
	walk(tree())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("man wrote %v, want %v", got, want)
	}
	groff, man := lookPath(t, "groff"), lookPath(t, "man")
	for _, name := range got {
		page := filepath.Join(dir, name)
		if out, err := exec.Command(groff, "-man", "-ww", "-z", page).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff -man -ww -z %s: %v\n%s", name, err, out)
		}
		cmd := exec.Command(man, "--warnings", "-l", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings -l %s: %v\n%s", name, err, stderr.String())
		}
		text := strings.Join(strings.Fields(stdout.String()), " ") // as justified
		if name == "ssanet-ssa-revise.1" && !strings.Contains(text, "ssanet ssa revise ID [--template FILE] [--set PATH=VALUE]... [--wait D]") {
			t.Errorf("%s lacks the synopsis:\n%s", name, stdout.String())
		}
		if name == "ssanet-demo.1" && strings.Contains(text, "--json") {
			t.Errorf("%s has --json, which demo refuses:\n%s", name, stdout.String())
		}
		if name == "ssanet-ssa-list.1" && !strings.Contains(text, "--json") {
			t.Errorf("%s lacks --json:\n%s", name, stdout.String())
		}
		if name == "ssanet.1" && !strings.Contains(text, "7 the peer does not speak ssanet") {
			t.Errorf("%s lacks the exit codes:\n%s", name, stdout.String())
		}
	}
}

// TestCompletionDaemonHangs: a daemon that accepts and never answers does not hang the shell:
// completing an SSA ID gives up after completionTimeout and offers nothing.
func TestCompletionDaemonHangs(t *testing.T) {
	home := t.TempDir()
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(home, agent.SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(filepath.Join(home, agent.SocketFile), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		var held []net.Conn // accepted, never answered, closed at the end
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	start := time.Now()
	out, errs, code := ssanet(t, "__complete", "--home", home, "ssa", "show", "")
	if took := time.Since(start); took > completionTimeout+5*time.Second {
		t.Errorf("completion took %v with a daemon that does not answer, want about %v", took, completionTimeout)
	}
	if code != 0 || strings.Contains(out, "ssa-") || !strings.Contains(out, ":4") {
		t.Errorf("completion with a daemon that does not answer: exit %d, out %q, err %q; want no words and directive 4", code, out, errs)
	}
}
