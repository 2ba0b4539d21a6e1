package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

func (c *cli) discoverCommand() *cobra.Command {
	var typ, format, peerID string
	var timeout time.Duration
	cmd := c.command("discover --type TYPE [--format F] [--timeout D] | --peer PEERID", "find providers in the directory",
		printsData, nargs(0, 0), func([]string) int {
			if (typ == "") == (peerID == "") {
				return c.usageError("discover: give --type TYPE (with --format, --timeout) or --peer PEERID")
			}
			return c.discover(typ, format, peerID, timeout)
		})
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "information `TYPE` to look for (attack-detection-log, incident, blacklist, ...)")
	f.StringVar(&format, "format", "", "only providers of this format, `F` ("+strings.Join(policy.Formats(), ", ")+")")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to search (`D`: 10s, 1m)")
	f.StringVar(&peerID, "peer", "", "validate a known peer (`PEERID`): show its current signed offers")
	completeFlag(cmd, "format", complete(policy.Formats()...))
	completeFlag(cmd, "peer", c.completePeers())
	completeFlag(cmd, "type", complete(protocol.TypeAttackDetectionLog, protocol.TypeIncident, protocol.TypeBlacklist))
	return cmd
}

func (c *cli) discover(typ, format, peerID string, timeout time.Duration) int {
	var ps []discovery.Provider
	if peerID != "" {
		var p discovery.Provider
		if err := c.api("GET", "/v1/discover/peer/"+url.PathEscape(peerID), nil, &p); err != nil {
			return c.apiFail(err)
		}
		ps = append(ps, p)
	} else {
		q := url.Values{"type": {typ}, "format": {format}, "timeout": {timeout.String()}}
		err := c.api("GET", "/v1/discover?"+q.Encode(), nil, &ps)
		var ae *apiStatusError
		if errors.As(err, &ae) && ae.status == http.StatusServiceUnavailable {
			fmt.Fprintf(c.stderr, "ssanet: warning: %v\n", err)
			ps = []discovery.Provider{}
		} else if err != nil {
			return c.apiFail(err)
		}
	}
	if c.json {
		if ps == nil {
			ps = []discovery.Provider{}
		}
		return c.printJSON(ps)
	}
	if len(ps) == 0 {
		fmt.Fprintln(c.stdout, "no providers found")
	}
	for _, p := range ps {
		fmt.Fprintf(c.stdout, "%s\n", p.PeerID)
		for _, o := range p.Offers {
			fmt.Fprintf(c.stdout, "  offer %-16s %-6s %s\n", o.ID, orDefault(o.Approval, "auto"), infoSummary(o.Terms.Information))
		}
		fmt.Fprintf(c.stdout, "  addrs %s\n", strings.Join(p.Addrs, " "))
	}
	return exitOK
}
