package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) initCommand() *cobra.Command {
	cfg := agent.DefaultConfig()
	var listen, bootstrap string
	cmd := c.command("init [--org ORG] [--name NAME] [--email EMAIL] [--phone PHONE] [--address ADDRESS] [--listen ADDRS] [--bootstrap ADDRS] [--mdns=false]",
		"create the agent's key and config.yaml", printsData, nargs(0, 0), func([]string) int {
			if listen != "" {
				cfg.Listen = splitList(listen)
			}
			cfg.Bootstrap = splitList(bootstrap)
			id, err := agent.Init(c.home, cfg)
			if errors.Is(err, agent.ErrInitialised) {
				return c.fail(fmt.Errorf("%w: keep it, or use another --home", err))
			}
			if err != nil {
				return c.fail(err)
			}
			if c.json {
				return c.printJSON(map[string]string{"peer_id": id.String(), "home": c.home})
			}
			fmt.Fprintf(c.stdout, "initialised %s\npeer ID: %s\nnext: %s\n", c.home, id, c.hint("run"))
			return exitOK
		})
	f := cmd.Flags()
	p := &cfg.Contact
	// This side's participant in every SSA the agent signs (config.yaml contact).
	f.StringVar(&p.Affiliation, "org", "", "this organisation (`ORG`), as it signs every SSA (the participant's affiliation)")
	f.StringVar(&p.Affiliation, "affiliation", "", "the same as --org (`ORG`)")
	f.StringVar(&p.Name, "name", "", "contact `NAME` (a person or a desk) in this agent's SSAs")
	f.StringVar(&p.Email, "email", "", "contact `EMAIL`")
	f.StringVar(&p.Phone, "phone", "", "contact telephone (`PHONE`)")
	f.StringVar(&p.Address, "address", "", "postal `ADDRESS`")
	f.StringVar(&listen, "listen", "", "comma-separated listen multiaddrs, `ADDRS` (default: TCP and QUIC on all interfaces, free ports)")
	f.StringVar(&bootstrap, "bootstrap", "", "comma-separated multiaddrs, `ADDRS` (.../p2p/PEERID), of agents to join the directory through")
	f.BoolVar(&cfg.MDNS, "mdns", true, "discover agents on the local network with mDNS")
	return cmd
}

func (c *cli) runCommand() *cobra.Command {
	var level string
	var check bool
	cmd := c.command("run [--check] [--log-level L]", "run the daemon (foreground; SIGINT/SIGTERM stop it cleanly, SIGHUP reloads config.yaml)",
		noData, nargs(0, 0), func([]string) int { // its logs are JSON already
			if check {
				return c.checkConfig()
			}
			return c.runDaemon(level)
		})
	cmd.Flags().StringVar(&level, "log-level", "info", "log level `L`: debug, info, warn or error")
	cmd.Flags().BoolVar(&check, "check", false, "check the home as config check does and exit: 0 when the agent would start")
	completeFlag(cmd, "log-level", complete("debug", "info", "warn", "error"))
	return cmd
}

func (c *cli) runDaemon(level string) int {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return c.usageError("run: --log-level: %v", err)
	}
	if err := c.checkNoDaemon(); err != nil {
		return c.fail(err)
	}
	// config.yaml's log-level overrides the flag's level, at start and at reloads. Warnings
	// that repeat are rate-limited: the first agent.LogBurst a minute, then a summary.
	levelVar := new(slog.LevelVar)
	levelVar.Set(lvl)
	limiter := agent.NewLogLimiter(slog.NewJSONHandler(c.stderr, &slog.HandlerOptions{Level: levelVar}), agent.LogBurst, agent.LogEvery)
	defer limiter.Close()
	log := slog.New(limiter)
	slog.SetDefault(log)
	// Caught from here on: a SIGHUP while the agent starts is a reload once it has started,
	// not the end of the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := agent.New(c.home, agent.Options{Logger: log, Level: levelVar})
	if err != nil {
		return c.fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reloaded := reloadOnHangup(ctx, hup, a, log)
	defer func() { stop(); <-reloaded }() // whatever ends ServeControl ends the reloads too
	for _, addr := range a.Addrs() {
		log.Info("listening", "addr", addr)
	}
	err = a.ServeControl(ctx, func() {
		if err := notifyServiceManager("READY=1\nSTATUS=serving"); err != nil {
			log.Error("readiness not told to the service manager", "err", err)
		}
	})
	if nerr := notifyServiceManager("STOPPING=1"); nerr != nil {
		log.Error("stopping not told to the service manager", "err", nerr)
	}
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return c.fail(err)
	}
	return exitOK
}

// daemonCheckTimeout bounds how long run waits for an answer on the home's control socket
// when it checks that no daemon runs there: a daemon answers at once.
const daemonCheckTimeout = 5 * time.Second

// checkNoDaemon returns an error if a daemon already runs in the home, or if something
// accepts connections on its control socket and does not answer within daemonCheckTimeout.
func (c *cli) checkNoDaemon() error {
	saved := c.apiTimeout
	c.apiTimeout = daemonCheckTimeout
	defer func() { c.apiTimeout = saved }()
	var id agent.IDView
	err := c.api("GET", "/v1/id", nil, &id)
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Errorf("a daemon already runs in %s (peer %s): stop it first, or give this one another --home", c.home, id.PeerID)
	case errors.As(err, &ne) && ne.Timeout():
		sock := filepath.Join(c.home, agent.SocketFile)
		return fmt.Errorf("%w: %s accepts connections but did not answer within %s: a daemon of this home may hang; "+
			"look at its log (journalctl -u ssanet, or the stderr of its ssanet run) and at the process holding the socket (ss -xlp | grep %s), stop it, then start again",
			errDaemonHangs, sock, daemonCheckTimeout, sock)
	}
	return nil // no daemon answers: this one may start
}

// errDaemonHangs means the home's control socket accepts connections but nothing answers.
var errDaemonHangs = errors.New("no daemon answers, but its control socket is held")

func (c *cli) idCommand() *cobra.Command {
	return c.command("id", "print the peer ID and listen addresses", printsData, nargs(0, 0), func([]string) int { return c.id() })
}

func (c *cli) id() int {
	var v agent.IDView
	if err := c.api("GET", "/v1/id", nil, &v); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(v)
	}
	fmt.Fprintln(c.stdout, v.PeerID)
	for _, a := range v.Addrs {
		fmt.Fprintln(c.stdout, a)
	}
	return exitOK
}

// reloadOnHangup reloads a's config at each signal on hup (SIGHUP) until ctx ends, telling the
// service manager RELOADING=1 before and READY=1 after (sd_notify(3)); the channel is closed
// when it is done.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, a *agent.Agent, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if err := notifyServiceManager("RELOADING=1\nSTATUS=reloading config.yaml"); err != nil {
				log.Error("reload not told to the service manager", "err", err)
			}
			status := "READY=1\nSTATUS=serving"
			if _, err := a.Reload(); err != nil { // logged by Reload
				status += " (last reload failed: see the log)"
			}
			if err := notifyServiceManager(status); err != nil {
				log.Error("end of reload not told to the service manager", "err", err)
			}
		}
	}()
	return done
}

// errNotifySocket means $NOTIFY_SOCKET names no socket ssanet can write to.
var errNotifySocket = errors.New("NOTIFY_SOCKET is neither a path nor an abstract socket (@NAME)")

// notifyServiceManager sends state (sd_notify(3): READY=1, STOPPING=1, STATUS=...) in one
// datagram to the Unix socket $NOTIFY_SOCKET, which systemd sets for a Type=notify unit
// (dist/ssanet.service); without the variable it does nothing.
func notifyServiceManager(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] != '/' && addr[0] != '@' { // vsock:... is for virtual machines' managers
		return fmt.Errorf("%w: %q", errNotifySocket, addr)
	}
	// A leading @ is the abstract namespace; package net maps it to the NUL byte.
	conn, err := net.Dial("unixgram", addr)
	if err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	return nil
}
