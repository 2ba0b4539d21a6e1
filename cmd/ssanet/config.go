package main

import (
	"fmt"
	"path/filepath"

	"github.com/ssanet/ssanet/agent"
)

const configUsage = "usage: ssanet config check: check the home's config.yaml, key, sinks and followed paths\n"

func cmdConfig(c *cli, args []string) int {
	if code, done := c.subcommandUsage(args, configUsage); done {
		return code
	}
	if args[0] != "check" {
		return c.usageError("config: unknown subcommand %q\n%s", args[0], configUsage)
	}
	if code := c.parseFlags(c.flags("config check", "config check"), args[1:]); code >= 0 {
		return code
	}
	return c.checkConfig()
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
