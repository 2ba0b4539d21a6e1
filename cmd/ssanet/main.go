// Command ssanet is the ssanet agent's command-line interface: flags, output formats and
// signal handling only; the work is done by the packages it calls.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

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

// cli is one invocation: global options and the streams.
type cli struct {
	home   string
	json   bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	usage string
	run   func(c *cli, args []string) int
}

// commands is the CLI reference; README.md lists the same.
func commands() map[string]command {
	return map[string]command{
		"version":  {"version: print the version, commit, Go version and build date (also --version)", cmdVersion},
		"policy":   {policyApplySynopsis + " | " + policyCheckSynopsis + ": refine or verify records offline", cmdPolicy},
		"template": {"template example [requester|provider]: print an annotated SSA template", cmdTemplate},
		"ssa":      {ssaSynopsis() + ": negotiations and agreements", cmdSSA},
		"init":     {initSynopsis + ": create the agent's key and config.yaml", cmdInit},
		"config":   {"config check: check config.yaml, the key, sinks and followed paths; list every problem with its line", cmdConfig},
		"run":      {"run [--check] [--log-level L]: run the daemon (foreground; SIGINT/SIGTERM stop it cleanly, SIGHUP reloads config.yaml)", cmdRun},
		"reload":   {"reload: make the daemon read config.yaml again (as SIGHUP): sinks, ingest, allow, log-level, offers", cmdReload},
		"discover": {"discover --type TYPE [--format F] [--timeout D] | --peer PEERID: find providers in the directory", cmdDiscover},
		"testnet":  {"testnet --nodes N --dir DIR [--offers]: run N local agents wired into one directory", cmdTestnet},
		"demo":     {"demo [--dir DIR] [--records N]: Appendix I end to end on 127.0.0.1 (directory, two domains)", cmdDemo},
		"ingest":   {"ingest --format F [FILE|-]: hand raw records to the provider's enforcement point", cmdIngest},
		"records":  {"records --ssa ID [--after N] [--follow]: print the records received under an SSA", cmdRecords},
		"monitor":  {"monitor ID: fulfilment of an SSA, both sides' figures and the verdict (exit 5 degraded, 6 violated)", cmdMonitor},
		"sinks":    {"sinks: each sink's position and lag per SSA, errors and last success", cmdSinks},
		"id":       {"id: print the peer ID and listen addresses", cmdID},
		"offer":    {offerSynopsis + ": what this agent provides and on what terms", cmdOffer},
		"request":  {requestSynopsis + ": negotiate an SSA (exit 3 when refused, 7 when the peer is no ssanet agent)", cmdRequest},
		"peers":    {"peers: each known peer's addresses, connections and last error", cmdPeers},
		"backup":   {backupSynopsis, cmdBackup}, "restore": {restoreSynopsis, cmdRestore},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("ssanet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.home, "home", defaultHome(), "agent home `DIR` (env SSANET_HOME)")
	fs.BoolVar(&c.json, "json", false, "print data as JSON, given before or after the command (demo, run, template,\nssa export and policy apply print no data and refuse it)")
	showVersion := fs.Bool("version", false, "print the version, commit, Go version and build date (as the version command)")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *showVersion {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "ssanet: --version takes no command; unexpected %q\n", fs.Arg(0))
			return exitUsage
		}
		return cmdVersion(c, nil)
	}
	if fs.NArg() == 0 {
		usage(stderr, fs)
		return exitUsage
	}
	name := fs.Arg(0)
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "ssanet: unknown command %q; run ssanet --help for the list\n", name)
		return exitUsage
	}
	return cmd.run(c, fs.Args()[1:])
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

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: ssanet [--home DIR] [--json] COMMAND [ARGS]")
	fmt.Fprintln(w, "\nGlobal options:")
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nCommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].usage)
	}
	fmt.Fprintln(w, "\nExit codes: 0 ok, 1 error, 2 usage, 3 refused by the peer, 4 proposal expired;\nmonitor: 5 degraded, 6 violated; request: 7 the peer does not speak ssanet.")
}

// flags returns a FlagSet for a subcommand that prints data, which --json prints as JSON.
func (c *cli) flags(name, synopsis string) *flag.FlagSet {
	fs := c.plainFlags(name, synopsis)
	fs.BoolVar(&c.json, "json", c.json, "print data as JSON")
	return fs
}

// plainFlags returns a FlagSet for a subcommand whose output JSON cannot carry (narration,
// YAML, CBOR, records, logs): it has no --json, and parse refuses a global one.
func (c *cli) plainFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: ssanet %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses a subcommand's flags, allowing flags after positional arguments. code is -1
// when the command is to go on, else the exit code to return.
func (c *cli) parse(fs *flag.FlagSet, args []string) (positional []string, code int) {
	if c.json && fs.Lookup("json") == nil {
		fmt.Fprintf(c.stderr, "ssanet: %s prints no data as JSON; run it without --json\n", fs.Name())
		return nil, exitUsage
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK
			}
			return nil, exitUsage
		}
		if fs.NArg() == 0 {
			return positional, -1
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseFlags is parse for a subcommand that takes flags only: a positional argument (such
// as "init provider" for "init --name provider") is a usage error.
func (c *cli) parseFlags(fs *flag.FlagSet, args []string) int {
	pos, code := c.parse(fs, args)
	if code < 0 && len(pos) > 0 {
		fmt.Fprintf(c.stderr, "ssanet: %s takes no arguments, only flags; unexpected %q\n", fs.Name(), pos[0])
		fs.Usage()
		return exitUsage
	}
	return code
}

// subcommandUsage handles a command with subcommands called without one (usage, exit 2) or
// with --help (usage, exit 0); done is false when args start with a subcommand to run.
func (c *cli) subcommandUsage(args []string, usage string) (code int, done bool) {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Fprint(c.stderr, usage)
			return exitOK, true
		}
		return 0, false
	}
	fmt.Fprint(c.stderr, usage)
	return exitUsage, true
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

func cmdVersion(c *cli, args []string) int {
	if code := c.parseFlags(c.flags("version", "version"), args); code >= 0 {
		return code
	}
	b := agent.Build()
	if c.json {
		return c.printJSON(b)
	}
	fmt.Fprintf(c.stdout, "ssanet %s\ncommit:     %s\ngo:         %s\nbuild date: %s\n", b.Version, b.Commit, b.GoVersion, b.BuildDate)
	return exitOK
}
