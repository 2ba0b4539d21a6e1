package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) configCommand() *cobra.Command {
	return c.group("config", "check config.yaml, the key, sinks and followed paths; list every problem with its line", "",
		c.command("check", "check the home's config.yaml, key, sinks and followed paths", printsData, nargs(0, 0),
			func([]string) int { return c.checkConfig() }))
}

// checkConfig prints every problem of the home's config (exit 1), or that it is fine (exit 0).
func (c *cli) checkConfig() int {
	problems := agent.CheckConfig(c.home)
	if c.json {
		if problems == nil {
			problems = []agent.Problem{}
		}
		if code := c.printJSON(problems); code != exitOK {
			return code
		}
	} else {
		path := filepath.Join(c.home, agent.ConfigFile)
		for _, p := range problems {
			fmt.Fprintf(c.stdout, "%s: %s\n", path, p)
		}
		if len(problems) == 0 {
			fmt.Fprintf(c.stdout, "%s: ok\n", path)
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(c.stderr, "ssanet: %d problem(s) in %s: the agent would not start or work\n", len(problems), c.home)
		return exitError
	}
	return exitOK
}
