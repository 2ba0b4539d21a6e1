package main

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// setFlags is the repeated --set flag: PATH=VALUE, in the order given.
type setFlags []string

func (s *setFlags) String() string { return strings.Join(*s, " ") }

func (s *setFlags) Type() string { return "PATH=VALUE" }

func (s *setFlags) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: write PATH=VALUE, for example handling.tlp=AMBER or schedule.end=now+30d", v)
	}
	*s = append(*s, v)
	return nil
}

// ssaReviseCommand sends a revision of an SSA in force: a template, full or partial, merged
// over it, and values set by path; the agent meets it against the provider's current offer.
func (c *cli) ssaReviseCommand() *cobra.Command {
	var tmpl string
	var sets setFlags
	var wait time.Duration
	cmd := c.withSSA("revise ID [--template FILE] [--set PATH=VALUE]... [--wait D]", "propose a new version of an SSA in force", printsData, func(id string) int {
		if tmpl == "" && len(sets) == 0 {
			return c.usageError("ssa revise: give the new terms with --template FILE, --set PATH=VALUE or both")
		}
		var body []byte
		if tmpl != "" {
			var err error
			if body, err = os.ReadFile(tmpl); err != nil {
				return c.fail(fmt.Errorf("read the revision's template: %w", err))
			}
		}
		q := url.Values{"set": sets}
		return c.postSSA(ssaPath(id)+"/revise?"+q.Encode(), bytes.NewReader(body), func(v *agent.NegotiationView) int {
			return c.awaitRevision(v, wait)
		})
	})
	f := cmd.Flags()
	f.StringVar(&tmpl, "template", "", "the new terms: a YAML template `FILE`, full or partial (the components it gives replace those in force)")
	f.Var(&sets, "set", "set one value, `PATH=VALUE` (repeatable): "+strings.Join(protocol.RevisionPaths(), ", ")+
		", other.NAME; policy. may be left out (handling.tlp=amber)")
	waitFlag(f, &wait)
	return cmd
}

// awaitRevision waits until the peer confirms or refuses a revision, prints the SSA in
// force, and returns 0 (confirmed), 3 (refused: the version in force stays), 4 (expired
// unanswered: the version in force stays) or 1 (no answer within wait).
func (c *cli) awaitRevision(v *agent.NegotiationView, wait time.Duration) int {
	pending := func(v *agent.NegotiationView) bool { return !v.AtRest }
	if err := c.poll(v, wait, pending); err != nil {
		return c.apiFail(err)
	}
	c.show(v)
	switch {
	case pending(v) && wait > 0:
		fmt.Fprintf(c.stderr, "ssanet: the revision is not answered yet after %s; it will be sent again; follow it with: %s\n", wait, c.hint("ssa", "show", v.SSAID))
		return exitError
	case hasCode(v.Reasons, protocol.CodeRevisionExpired):
		fmt.Fprintf(c.stderr, "ssanet: the revision expired unanswered; %s stays in force\n", v.SSAID)
		return exitExpired
	case len(v.Reasons) > 0:
		fmt.Fprintf(c.stderr, "ssanet: the peer refused the revision (see the conflict lines); %s stays in force\n", v.SSAID)
		return exitRefused
	case pending(v):
		return exitOK
	}
	if !c.json {
		fmt.Fprintf(c.stderr, "revision confirmed: %s is in force\n", v.SSAID)
	}
	return exitOK
}
