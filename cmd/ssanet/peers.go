package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) peersCommand() *cobra.Command {
	return c.command("peers", "each known peer's addresses, connections and last error", printsData, nargs(0, 0), func([]string) int { return c.peers() })
}

// peers prints each peer the agent knows: its addresses, its connections and the last
// failure to reach it.
func (c *cli) peers() int {
	return getAndPrint(c, "/v1/peers", func(ps []agent.PeerView) {
		if len(ps) == 0 {
			fmt.Fprintln(c.stdout, "no known peers")
		}
		for _, p := range ps {
			state := "not connected"
			if p.Connected {
				dirs := make([]string, len(p.Connections))
				for i, cv := range p.Connections {
					dirs[i] = cv.Direction + " " + cv.Remote
					if cv.Relay != "" {
						dirs[i] += " via relay " + cv.Relay
					}
					if cv.Limited {
						dirs[i] += " limited"
					}
				}
				state = "connected " + p.Path + " (" + strings.Join(dirs, ", ") + ")"
			}
			if !p.Allowed {
				state += ", not in the allow-list"
			}
			fmt.Fprintf(c.stdout, "%s %s, %d negotiations\n", p.Peer, state, p.Negotiations)
			for _, a := range p.Addrs {
				fmt.Fprintf(c.stdout, "  addr %s\n", a)
			}
			if p.LastError != "" {
				fmt.Fprintf(c.stdout, "  last error %s %s: %s\n", p.LastErrorAt.Format(time.RFC3339), p.LastErrorKind, p.LastError)
			}
		}
	})
}
