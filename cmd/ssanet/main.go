// Command ssanet is the ssanet agent's command-line interface: flags, output formats and
// signal handling only; the work is done by the packages it calls.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ssanet/ssanet/agent"
)

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitRefused = 3
	exitExpired = 4 // the proposal's validity passed before it was accepted: nothing was agreed
	// monitor's verdict, for cron jobs and monitoring checks: fulfilled is exitOK.
	exitDegraded = 5
	exitViolated = 6
	// request: the peer speaks libp2p but not ssanet (no /ssanet/negotiate/1.0.0).
	exitNotSSAnet = 7
)

// cli is one invocation: global options, the streams, and the exit code of the command run.
type cli struct {
	home   string
	json   bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// apiTimeout bounds each call to the daemon; 0: none (a command waits as long as the daemon
	// takes). Shell completion sets it, so that a daemon that hangs cannot hang the shell.
	apiTimeout time.Duration
	code       int // -1 until a command ran: help and completion exit 0
	root       *cobra.Command
}

const exitCodes = `Exit codes: 0 ok, 1 error, 2 usage, 3 refused by the peer, 4 proposal expired;
monitor: 5 degraded, 6 violated; request: 7 the peer does not speak ssanet.`

// commands are the top-level commands, each defined (synopsis, flags, run) in one function.
// README.md "CLI reference" lists the same; TestREADMECLIReference checks it.
func (c *cli) commands() []*cobra.Command {
	return []*cobra.Command{
		c.versionCommand(), c.policyCommand(), c.templateCommand(), c.ssaCommand(), c.initCommand(),
		c.configCommand(), c.runCommand(), c.discoverCommand(), c.testnetCommand(), c.demoCommand(),
		c.ingestCommand(), c.recordsCommand(), c.monitorCommand(), c.sinksCommand(), c.idCommand(),
		c.offerCommand(), c.requestCommand(), c.peersCommand(), c.backupCommand(), c.restoreCommand(),
		c.statusCommand(), c.reloadCommand(), c.communityCommand(), c.manCommand(),
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, code: -1}
	root := c.rootCommand()
	if flag := singleDash(root, args); flag != "" {
		fmt.Fprintf(stderr, "ssanet: %s: long flags take two dashes: -%s\nRun 'ssanet --help' for usage.\n", flag, flag)
		return exitUsage
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err != nil {
		fmt.Fprintf(stderr, "ssanet: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
		return exitUsage
	}
	if c.code < 0 {
		return exitOK
	}
	return c.code
}

// rootCommand is ssanet with its global flags and every command.
func (c *cli) rootCommand() *cobra.Command {
	var version bool
	root := &cobra.Command{
		Use:   "ssanet [--home DIR] [--json] COMMAND [ARGS]",
		Short: "peer-to-peer agent for Security information Sharing Agreements (ITU-T X.1205 Supplement 20)",
		Long: `ssanet negotiates Security information Sharing Agreements (SSAs) with peers, refines
records under the agreed policy, exchanges them and assesses their fulfilment.

` + exitCodes,
		Args:                  nil, // cobra's own check: an unknown command is a usage error
		DisableFlagsInUseLine: true,
		SilenceErrors:         true,
		SilenceUsage:          true,
		// Man pages of the same release are the same bytes: no "Auto generated ... on DATE".
		DisableAutoGenTag: true,
	}
	c.root = root
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.home, "home", defaultHome(), "agent home `DIR` (default: $SSANET_HOME, else ~/.ssanet)")
	pf.Lookup("home").DefValue = "" // not this machine's home directory in the help and the man pages
	pf.BoolVar(&c.json, "json", false, "print data as JSON, given before or after the command (demo, run, template,\nssa export, policy apply, restore and man print no data and refuse it)")
	root.Flags().BoolVar(&version, "version", false, "print the version, commit, Go version and build date (as the version command)")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if version {
			c.code = c.printVersion()
			return nil
		}
		fmt.Fprint(c.stderr, cmd.UsageString())
		c.code = exitUsage
		return nil
	}
	root.AddCommand(c.commands()...)
	c.strictHelp(root)
	root.InitDefaultCompletionCmd() // cobra's generators: ssanet completion bash|zsh|fish|powershell
	if comp, _, err := root.Find([]string{"completion"}); err == nil {
		c.strictGroup(comp)
	}
	help := root.HelpFunc()
	root.SetHelpFunc(func(cmd *cobra.Command, args []string) {
		describe(cmd, func() { help(cmd, args) })
	})
	return root
}

// describe runs print, which prints cmd's help or man page, with --json shown only if cmd
// takes it.
func describe(cmd *cobra.Command, print func()) {
	j := cmd.Root().PersistentFlags().Lookup("json")
	j.Hidden = cmd.Annotations[noJSON] != ""
	defer func() { j.Hidden = false }()
	print()
}

// singleDash returns the first of args (before "--") that is one of the tree's long flags given
// with one dash, as Go's flag package took them (-home DIR): pflag would read it as the
// shorthand letters -h -o -m -e. The value of a flag given as a separate argument
// (--name -json) is a value, as pflag reads it, not a flag.
func singleDash(root *cobra.Command, args []string) string {
	long := map[string]bool{}
	takesValue := map[string]bool{} // "--name" and "-n" of the flags that take a value
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			long[f.Name] = true
			if f.NoOptDefVal == "" {
				takesValue["--"+f.Name] = true
				if f.Shorthand != "" {
					takesValue["-"+f.Shorthand] = true
				}
			}
		})
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
	long["help"] = true
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if takesValue[a] {
			i++ // its value, whatever it looks like
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if len(a) > 2 && a[0] == '-' && a[1] != '-' && long[name] {
			return a
		}
	}
	return ""
}

// strictHelp makes "ssanet help NOSUCH" a usage error (cobra prints its topics and exits 0).
func (c *cli) strictHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, h := range root.Commands() {
		if h.Name() != "help" || h.Run == nil {
			continue
		}
		show := h.Run
		h.Run = nil
		h.RunE = func(cmd *cobra.Command, args []string) error {
			if found, _, err := root.Find(args); err != nil || found == nil {
				return fmt.Errorf("no help for %q: %v", strings.Join(args, " "), err)
			}
			show(cmd, args)
			return nil
		}
	}
}

// noJSON is the annotation of a command whose output JSON cannot carry (narration, YAML,
// CBOR, records, logs): it refuses --json.
const noJSON = "ssanet-no-json"

// Whether a command prints data, which --json prints as JSON.
const (
	printsData = true
	noData     = false
)

// command defines a command: use is its synopsis, flags included (TestCommandSynopses checks
// that it names every flag the command has); short is its line in the list; args checks its
// positional arguments (cobra's usage errors, exit 2); run does it and returns the exit code.
func (c *cli) command(use, short string, data bool, args cobra.PositionalArgs, run func(args []string) int) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: args, DisableFlagsInUseLine: true}
	if !data {
		cmd.Annotations = map[string]string{noJSON: "yes"}
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if c.json && !data {
			return fmt.Errorf("%s prints no data as JSON; run it without --json", commandName(cmd))
		}
		c.code = run(args)
		return nil
	}
	return cmd
}

// group defines a command that holds subcommands (see strictGroup).
func (c *cli) group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Long: long, DisableFlagsInUseLine: true}
	cmd.AddCommand(subs...)
	c.strictGroup(cmd)
	return cmd
}

// strictGroup makes a command that holds subcommands a usage error without one (its usage on
// stderr, exit 2) and with an unknown one (cobra prints the help and exits 0).
func (c *cli) strictGroup(cmd *cobra.Command) {
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s", msg)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		fmt.Fprint(c.stderr, cmd.UsageString())
		c.code = exitUsage
		return nil
	}
}

// commandName is a command's path without "ssanet ": "ssa show".
func commandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// nargs accepts between min and max positional arguments (max < 0: any number).
func nargs(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case max == 0 && len(args) > 0:
			return fmt.Errorf("%s takes no arguments, only flags; unexpected %q", commandName(cmd), args[0])
		case len(args) < min || (max >= 0 && len(args) > max):
			return fmt.Errorf("%s: %d arguments; usage: %s", commandName(cmd), len(args), cmd.UseLine())
		}
		return nil
	}
}

// completeFlag completes the value of cmd's flag name with f.
func completeFlag(cmd *cobra.Command, name string, f cobra.CompletionFunc) {
	if err := cmd.RegisterFlagCompletionFunc(name, f); err != nil {
		panic(err) // cmd has no such flag, or it has a completion already: TestCompletion finds it
	}
}

// complete completes a positional argument or a flag's value with a fixed list of words.
func complete(words ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(words, cobra.ShellCompDirectiveNoFileComp)
}

func defaultHome() string {
	if h := os.Getenv("SSANET_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".ssanet")
	}
	return ".ssanet"
}

func (c *cli) usageError(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "ssanet: "+format+"\n", a...)
	return exitUsage
}

func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "ssanet: %v\n", err)
	return exitError
}

func (c *cli) printJSON(v any) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func (c *cli) versionCommand() *cobra.Command {
	return c.command("version", "print the version, commit, Go version and build date (also --version)", printsData, nargs(0, 0),
		func([]string) int { return c.printVersion() })
}

func (c *cli) printVersion() int {
	b := agent.Build()
	if c.json {
		return c.printJSON(b)
	}
	fmt.Fprintf(c.stdout, "ssanet %s\ncommit:     %s\ngo:         %s\nbuild date: %s\n", b.Version, b.Commit, b.GoVersion, b.BuildDate)
	return exitOK
}
