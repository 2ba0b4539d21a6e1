package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ssanet/ssanet/agent"
)

const initSynopsis = "init [--org ORG] [--name NAME] [--email EMAIL] [--phone PHONE] [--address ADDRESS] [--listen ADDRS] [--bootstrap ADDRS] [--mdns=false]"

func cmdInit(c *cli, args []string) int {
	fs := c.flags("init", initSynopsis)
	cfg := agent.DefaultConfig()
	p := &cfg.Contact
	// This side's participant in every SSA the agent signs (config.yaml contact).
	fs.StringVar(&p.Affiliation, "org", "", "this organisation, as it signs every SSA (the participant's affiliation)")
	fs.StringVar(&p.Affiliation, "affiliation", "", "the same as --org")
	fs.StringVar(&p.Name, "name", "", "contact name (a person or a desk) in this agent's SSAs")
	fs.StringVar(&p.Email, "email", "", "contact email")
	fs.StringVar(&p.Phone, "phone", "", "contact telephone")
	fs.StringVar(&p.Address, "address", "", "postal address")
	listen := fs.String("listen", "", "comma-separated listen multiaddrs (default: TCP and QUIC on all interfaces, free ports)")
	bootstrap := fs.String("bootstrap", "", "comma-separated multiaddrs (…/p2p/PEERID) of agents to join the directory through")
	fs.BoolVar(&cfg.MDNS, "mdns", true, "discover agents on the local network with mDNS")
	if code := c.parseFlags(fs, args); code >= 0 {
		return code
	}
	if *listen != "" {
		cfg.Listen = splitList(*listen)
	}
	cfg.Bootstrap = splitList(*bootstrap)
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
}

func cmdRun(c *cli, args []string) int {
	fs := c.plainFlags("run", "run [--check] [--log-level debug|info|warn|error]") // its logs are JSON already
	level := fs.String("log-level", "info", "log level")
	check := fs.Bool("check", false, "check the home as config check does and exit: 0 when the agent would start")
	if code := c.parseFlags(fs, args); code >= 0 {
		return code
	}
	if *check {
		return c.checkConfig()
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return c.usageError("run: --log-level: %v", err)
	}
	var id agent.IDView
	if c.api("GET", "/v1/id", nil, &id) == nil {
		return c.fail(fmt.Errorf("a daemon already runs in %s (peer %s): stop it first, or give this one another --home", c.home, id.PeerID))
	}
	levelVar := new(slog.LevelVar) // config.yaml's log-level overrides it, at start and at reloads
	levelVar.Set(lvl)
	log := slog.New(slog.NewJSONHandler(c.stderr, &slog.HandlerOptions{Level: levelVar}))
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

func cmdID(c *cli, args []string) int {
	if code := c.parseFlags(c.flags("id", "id"), args); code >= 0 {
		return code
	}
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
