package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) reloadCommand() *cobra.Command {
	return c.command("reload", "make the daemon read config.yaml again (as SIGHUP): sinks, ingest, allow, log-level, offers", printsData, nargs(0, 0),
		func([]string) int { return c.reload() })
}

// reload asks the daemon to read config.yaml again, as SIGHUP does, and prints what it
// applied and which changed keys need a restart; exit 1 when the config was not applied.
func (c *cli) reload() int {
	var rep agent.ReloadReport
	if err := c.api("POST", "/v1/reload", nil, &rep); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(rep)
	}
	printReload(c, rep)
	return exitOK
}

// printReload prints what a reload applied, and the keys that need a restart.
func printReload(c *cli, rep agent.ReloadReport) {
	if len(rep.Applied) == 0 {
		fmt.Fprintln(c.stdout, "reloaded: nothing changed")
	}
	for _, a := range rep.Applied {
		fmt.Fprintln(c.stdout, "reloaded:", a)
	}
	if len(rep.Restart) > 0 {
		fmt.Fprintf(c.stderr, "ssanet: changed in config.yaml, applied only at the next start: %s (restart the agent)\n", strings.Join(rep.Restart, ", "))
	}
}
