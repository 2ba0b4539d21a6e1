package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ssanet/ssanet/discovery"
)

func cmdDiscover(c *cli, args []string) int {
	fs := c.flags("discover", "discover --type TYPE [--format FORMAT] [--timeout D] | --peer PEERID")
	typ := fs.String("type", "", "information type to look for (attack-detection-log, incident, blacklist, …)")
	format := fs.String("format", "", "only providers of this format (eve, idmef, idmefv2, iodef, syslog)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to search")
	peerID := fs.String("peer", "", "validate a known peer: show its current signed offers")
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 || (*typ == "") == (*peerID == "") {
		return c.usageError("usage: ssanet discover --type TYPE [--format FORMAT] [--timeout D] | --peer PEERID")
	}
	var ps []discovery.Provider
	if *peerID != "" {
		var p discovery.Provider
		if err := c.api("GET", "/v1/discover/peer/"+url.PathEscape(*peerID), nil, &p); err != nil {
			return c.apiFail(err)
		}
		ps = append(ps, p)
	} else {
		q := url.Values{"type": {*typ}, "format": {*format}, "timeout": {timeout.String()}}
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
