package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// sampleOffers are the (type, format) pairs handed out round-robin by testnet --offers.
var sampleOffers = [][]protocol.Information{
	{{Name: "Suricata alerts", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatEVE}},
	{{Name: "IDS alerts (IDMEFv2)", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatIDMEFv2},
		{Name: "Incident reports", Type: protocol.TypeIncident, Format: protocol.FormatIODEF}},
	{{Name: "Blocked addresses", Type: protocol.TypeBlacklist, Format: protocol.FormatSyslog}},
}

type testnetNode struct {
	name, home, addr string
	id               string
	cmd              *exec.Cmd
}

func (c *cli) testnetCommand() *cobra.Command {
	var nodes int
	var dir string
	var offers bool
	cmd := c.command("testnet --nodes N --dir DIR [--offers]", "run N local agents wired into one directory", printsData, nargs(0, 0), func([]string) int {
		if dir == "" || nodes < 1 || nodes > 200 {
			return c.usageError("testnet: give --dir DIR and --nodes N (1-200)")
		}
		return c.testnet(dir, nodes, offers)
	})
	f := cmd.Flags()
	f.IntVar(&nodes, "nodes", 3, "number of agents, `N` (1-200)")
	f.StringVar(&dir, "dir", "", "`DIR` for the agents' homes (DIR/node1, DIR/node2, ...)")
	f.BoolVar(&offers, "offers", false, "give every node but the first a sample offer")
	return cmd
}

func (c *cli) testnet(dir string, nodes int, offers bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tn, err := startTestnet(ctx, c, dir, nodes, offers)
	defer tn.stop(c)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		var rows []map[string]string
		for _, n := range tn {
			rows = append(rows, map[string]string{"name": n.name, "peer_id": n.id, "addr": n.addr, "home": n.home})
		}
		c.printJSON(rows)
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPEER ID\tADDRESS\tHOME")
		for _, n := range tn {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.name, n.id, n.addr, n.home)
		}
		tw.Flush()
		fmt.Fprintf(c.stdout, "\n%d agents running; drive one with: ssanet --home %s ...\nCtrl-C stops them all.\n", len(tn), tn[0].home)
	}
	<-ctx.Done()
	return exitOK
}

type testnet []*testnetNode

// startTestnet initialises (once) and starts the nodes: node1 first, as everyone's bootstrap
// peer, then the others.
func startTestnet(ctx context.Context, c *cli, dir string, n int, offers bool) (testnet, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var tn testnet
	for i := 1; i <= n; i++ {
		node := &testnetNode{name: fmt.Sprintf("node%d", i), home: filepath.Join(dir, fmt.Sprintf("node%d", i))}
		var boot []string
		if i > 1 {
			boot = []string{tn[0].addr}
		}
		if err := initTestnetNode(node, boot); err != nil {
			return tn, err
		}
		node.cmd = exec.Command(self, "--home", node.home, "run")
		logf, err := os.OpenFile(filepath.Join(node.home, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return tn, err
		}
		node.cmd.Stderr = logf
		node.cmd.SysProcAttr = childProcAttr()
		if err := node.cmd.Start(); err != nil {
			logf.Close()
			return tn, fmt.Errorf("start %s: %w", node.name, err)
		}
		logf.Close()
		tn = append(tn, node)
		if i == 1 {
			if err := node.waitReady(ctx, c); err != nil {
				return tn, err
			}
		}
	}
	for i, node := range tn[1:] {
		if err := node.waitReady(ctx, c); err != nil {
			return tn, err
		}
		if offers {
			if err := node.addSampleOffer(c, i); err != nil {
				return tn, err
			}
		}
	}
	return tn, nil
}

// initTestnetNode creates a node's home on a fixed free loopback port, so that it keeps its
// address across restarts of the testnet.
func initTestnetNode(n *testnetNode, boot []string) error {
	cfg, err := agent.LoadConfig(filepath.Join(n.home, agent.ConfigFile))
	if err == nil {
		n.addr = cfg.Listen[0]
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg = agent.DefaultConfig()
	cfg.Contact = protocol.Participant{Name: n.name, Affiliation: "ssanet testnet"}
	cfg.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
	cfg.Bootstrap, cfg.MDNS = boot, false
	id, err := agent.Init(n.home, cfg)
	if err != nil {
		return fmt.Errorf("init %s: %w", n.name, err)
	}
	n.addr = cfg.Listen[0] + "/p2p/" + id.String()
	return nil
}

// waitReady polls the node's control API until it answers, the node dies, or 30 s pass.
func (n *testnetNode) waitReady(ctx context.Context, c *cli) error {
	nc := *c
	nc.home = n.home
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v agent.IDView
		err := nc.api("GET", "/v1/id", nil, &v)
		if err == nil {
			n.id = v.PeerID
			n.addr = v.Addrs[0]
			return nil
		}
		if n.cmd.ProcessState != nil || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not start (see %s): %w", n.name, filepath.Join(n.home, "agent.log"), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *testnetNode) addSampleOffer(c *cli, i int) error {
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, time.Now())
	if err != nil {
		return err
	}
	o.ID = "sample-" + n.name
	o.Terms.Information = sampleOffers[i%len(sampleOffers)]
	body, err := yaml.Marshal(o)
	if err != nil {
		return err
	}
	nc := *c
	nc.home = n.home
	return nc.api("POST", "/v1/offers", bytes.NewReader(body), nil)
}

// stop ends every node with SIGTERM and waits for it; a node still running after 10 s is
// killed.
func (t testnet) stop(c *cli) {
	for _, n := range t {
		_ = n.cmd.Process.Signal(syscall.SIGTERM) // one that has exited already is waited for below
	}
	for _, n := range t {
		done := make(chan error, 1)
		go func() { done <- n.cmd.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				fmt.Fprintf(c.stderr, "ssanet: %s: %v\n", n.name, err)
			}
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill() // it may exit on its own meanwhile: done says how it ended
			fmt.Fprintf(c.stderr, "ssanet: %s did not stop in 10s and was killed (%v)\n", n.name, <-done)
		}
	}
}
