package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) configCommand() *cobra.Command {
	return c.group("config", "check config.yaml, the key, sinks, followed paths, stored offers and template or offer files", "",
		c.command("check [FILE...]", "check the home's config.yaml, key, sinks, followed paths and stored offers, and each template or offer FILE", printsData, nargs(0, -1),
			func(files []string) int { return c.checkConfig(files...) }))
}

// checkConfig prints every problem of the home's config, of the offers in its store (asked of
// the daemon when one runs) and of the template or offer files (exit 1), or that all is fine
// (exit 0).
func (c *cli) checkConfig(files ...string) int {
	problems := agent.CheckConfig(c.home)
	if len(problems) == 0 { // else the store's key and the offers' checks are unknown
		problems = append(problems, c.checkOffers()...)
	}
	problems = append(problems, agent.CheckFiles(c.home, files)...)
	path := filepath.Join(c.home, agent.ConfigFile)
	if c.json {
		if problems == nil {
			problems = []agent.Problem{}
		}
		if code := c.printJSON(problems); code != exitOK {
			return code
		}
	} else {
		for _, p := range problems {
			src := p.Source
			if src == "" {
				src = path
			}
			fmt.Fprintf(c.stdout, "%s: %s\n", src, p)
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

// checkOffers checks the offers in the home's store: the running daemon's, else the store's
// own (the daemon holds the store's lock while it runs). Not being able to is a problem.
func (c *cli) checkOffers() []agent.Problem {
	var problems []agent.Problem
	err := c.api("GET", "/v1/offers/check", nil, &problems)
	if errors.Is(err, errNoDaemon) {
		problems, err = agent.CheckStoredOffers(c.home)
	}
	if err != nil {
		return []agent.Problem{{Source: "offers", Msg: "not checked: " + err.Error()}}
	}
	return problems
}
