package main

import (
	"encoding/json"
	"errors"
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
// applied and which changed keys need a restart; when the config, or a part of it, was not
// applied, also what was not and why (the report's error), and exits 1.
func (c *cli) reload() int {
	var rep agent.ReloadReport
	err := c.api("POST", "/v1/reload", nil, &rep)
	var ae *apiStatusError
	switch {
	case err == nil:
	case errors.As(err, &ae):
		// A part that failed comes with the report of what did apply; a config that does
		// not load, with the error alone: nothing applied.
		if json.Unmarshal(ae.body, &rep) != nil || rep.Applied == nil {
			rep = agent.ReloadReport{Applied: []string{}}
		}
		rep.Error = ae.msg
	default:
		return c.apiFail(err)
	}
	if c.json {
		if code := c.printJSON(rep); code != exitOK {
			return code
		}
	} else {
		printReload(c, rep)
	}
	if rep.Error == "" {
		return exitOK
	}
	fmt.Fprintf(c.stderr, "ssanet: %s\n", rep.Error)
	if len(rep.Applied) > 0 {
		fmt.Fprintf(c.stderr, "ssanet: only what is listed as reloaded (%s) was applied; the rest keeps its running setting: fix config.yaml and reload again\n",
			strings.Join(rep.Applied, ", "))
	}
	return exitError
}

// printReload prints what a reload applied, and the keys that need a restart.
func printReload(c *cli, rep agent.ReloadReport) {
	if len(rep.Applied) == 0 {
		what := "nothing changed"
		if rep.Error != "" {
			what = "nothing"
		}
		fmt.Fprintln(c.stdout, "reloaded:", what)
	}
	for _, a := range rep.Applied {
		fmt.Fprintln(c.stdout, "reloaded:", a)
	}
	if len(rep.Restart) > 0 {
		fmt.Fprintf(c.stderr, "ssanet: changed in config.yaml, applied only at the next start: %s (restart the agent)\n", strings.Join(rep.Restart, ", "))
	}
}
