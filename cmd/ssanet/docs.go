package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// completionTimeout bounds a completion's call to the daemon: a shell waits for it.
const completionTimeout = 2 * time.Second

// completeFromDaemon completes the first positional argument, or a flag's value, with the
// words (each "WORD\tdescription") that words makes of what path of the home's daemon holds;
// without a daemon it offers nothing (completion never starts an agent).
func completeFromDaemon[T any](c *cli, path string, words func(T) []cobra.Completion) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var v T
		c.apiTimeout = completionTimeout
		if len(args) > 0 || c.api("GET", path, nil, &v) != nil { // the commands take one ID at most
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, w := range words(v) {
			if strings.HasPrefix(w, prefix) {
				out = append(out, w)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSSAIDs completes the ID of one of the daemon's SSAs.
func (c *cli) completeSSAIDs() cobra.CompletionFunc {
	return completeFromDaemon(c, "/v1/ssa", func(vs []agent.NegotiationView) (out []cobra.Completion) {
		for _, v := range vs {
			if v.SSAID != "" {
				out = append(out, cobra.CompletionWithDesc(v.SSAID, v.State+", peer "+v.Peer))
			}
		}
		return out
	})
}

// completeOfferIDs completes the ID of one of the daemon's offers.
func (c *cli) completeOfferIDs() cobra.CompletionFunc {
	return completeFromDaemon(c, "/v1/offers", func(offers []protocol.Offer) (out []cobra.Completion) {
		for _, o := range offers {
			out = append(out, cobra.CompletionWithDesc(o.ID, infoSummary(o.Terms.Information)))
		}
		return out
	})
}

// completePeers completes the peer ID of a peer the daemon knows.
func (c *cli) completePeers() cobra.CompletionFunc {
	return completeFromDaemon(c, "/v1/peers", func(ps []agent.PeerView) (out []cobra.Completion) {
		for _, p := range ps {
			out = append(out, cobra.CompletionWithDesc(p.Peer, fmt.Sprintf("%d negotiations", p.Negotiations)))
		}
		return out
	})
}

// manCommand writes the man pages of every command, made from the same definitions as the
// help: ssanet.1 and ssanet-COMMAND[-SUBCOMMAND].1. The date is $SOURCE_DATE_EPOCH's when set
// (dist/release.sh sets it to the commit's time), else today's.
func (c *cli) manCommand() *cobra.Command {
	cmd := c.command("man DIR", "write the man pages (ssanet.1, ssanet-COMMAND.1) into DIR", noData, nargs(1, 1), func(a []string) int {
		if err := os.MkdirAll(a[0], 0o755); err != nil {
			return c.fail(fmt.Errorf("man: %w", err))
		}
		if err := writeMan(c.root, a[0]); err != nil {
			return c.fail(fmt.Errorf("man: %w", err))
		}
		return exitOK
	})
	cmd.ValidArgsFunction = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
	return cmd
}

// writeMan writes the man page of cmd and of each of its commands into dir (as cobra's
// doc.GenManTree, with --json only where the command takes it).
func writeMan(cmd *cobra.Command, dir string) error {
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
			if err := writeMan(sub, dir); err != nil {
				return err
			}
		}
	}
	f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(cmd.CommandPath(), " ", "-")+".1"))
	if err != nil {
		return err
	}
	describe(cmd, func() {
		err = doc.GenMan(cmd, &doc.GenManHeader{Section: "1", Source: "ssanet " + agent.Version, Manual: "ssanet manual"}, f)
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
