package main

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

// setFlags is the repeated --set flag: PATH=VALUE, in the order given.
type setFlags []string

func (s *setFlags) String() string { return strings.Join(*s, " ") }

func (s *setFlags) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q: write PATH=VALUE, for example handling.tlp=AMBER or schedule.end=now+30d", v)
	}
	*s = append(*s, v)
	return nil
}

// cmdSSARevise sends a revision of an SSA in force: a template, full or partial, merged over
// it, and values set by path; the agent meets it against the provider's current offer.
func cmdSSARevise(c *cli, synopsis string, args []string) int {
	fs := c.flags("ssa revise", synopsis)
	tmpl := fs.String("template", "", "the new terms: a YAML template `FILE`, full or partial (the components it gives replace those in force)")
	var sets setFlags
	fs.Var(&sets, "set", "set one value, `PATH=VALUE` (repeatable): "+strings.Join(protocol.RevisionPaths(), ", ")+
		", other.NAME; policy. may be left out (handling.tlp=amber)")
	wait := waitFlag(fs)
	path, code := c.ssaArg(fs, synopsis, args)
	if code >= 0 {
		return code
	}
	if *tmpl == "" && len(sets) == 0 {
		return c.usageError("ssa revise: give the new terms with --template FILE, --set PATH=VALUE or both\nusage: ssanet %s", synopsis)
	}
	var body []byte
	if *tmpl != "" {
		var err error
		if body, err = os.ReadFile(*tmpl); err != nil {
			return c.fail(fmt.Errorf("read the revision's template: %w", err))
		}
	}
	q := url.Values{"set": sets}
	return c.postSSA(path+"/revise?"+q.Encode(), bytes.NewReader(body), func(v *agent.NegotiationView) int {
		return c.awaitRevision(v, *wait)
	})
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
