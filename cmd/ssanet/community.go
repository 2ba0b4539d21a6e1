package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/protocol"
)

// The community commands (issue 18): admins write a roster proposal (init, propose), sign it
// offline each with their agent's key (sign), and any member publishes it once it carries k
// signatures (publish); the agents pass it on.

func (c *cli) communityCommand() *cobra.Command {
	return c.group("community", "the community's signed k-of-n membership roster", "",
		c.communityInitCommand(), c.communityProposeCommand(),
		c.command("sign FILE", "sign the proposal in FILE with this agent's key (offline; an admin's signature counts)", printsData, nargs(1, 1),
			func(a []string) int { return c.communitySign(a[0]) }),
		c.command("publish FILE", "give a roster signed by k admins to the running agent, which checks, applies and passes it on", printsData, nargs(1, 1),
			func(a []string) int { return c.communityPublish(a[0]) }),
		c.command("show [FILE]", "print the roster the agent holds, or the one in FILE", printsData, nargs(0, 1),
			func(a []string) int { return c.communityShow(a) }))
}

// rosterEdit is what community init and propose change in a roster.
type rosterEdit struct {
	add, remove, orgs, roles []string
	admins                   string // comma-separated; empty: unchanged
	threshold                uint64 // 0: unchanged
	expires                  string // a duration from now (90d, 720h) or an RFC 3339 time
	annul                    bool
}

func (e *rosterEdit) flags(fs *pflag.FlagSet) {
	fs.Func("add", "add members: peer IDs, comma-separated (`ID,...`; repeatable)", appendList(&e.add))
	fs.Func("remove", "remove members: peer IDs, comma-separated (`ID,...`; repeatable)", appendList(&e.remove))
	fs.Func("org", "a member's organisation, `ID=ORG` (repeatable)", func(s string) error { e.orgs = append(e.orgs, s); return nil })
	fs.Func("roles", "a member's roles, `ID=ROLE,...` of member, provider, relay, admin (repeatable)", func(s string) error { e.roles = append(e.roles, s); return nil })
	fs.StringVar(&e.admins, "admins", "", "the admin keys (peer IDs), comma-separated (`ID,...`): replaces the list")
	fs.Uint64Var(&e.threshold, "threshold", 0, "`K`: how many admins must sign the next roster")
	fs.StringVar(&e.expires, "expires", "90d", "expiry `D`: a duration from now (90d, 720h) or an RFC 3339 time")
	fs.BoolVar(&e.annul, "annul-removed", false, "ask the agents to cancel their agreements with the members removed")
}

// appendList is a repeatable flag's setter that appends the comma-separated values given.
func appendList(to *[]string) func(string) error {
	return func(s string) error {
		*to = append(*to, splitList(s)...)
		return nil
	}
}

// parseExpiry reads an expiry: a duration from now (Go's, or a number of days with d) or an
// RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %q: want a duration from now such as 90d or 720h, or an RFC 3339 time", s)
	}
	return now.Add(d), nil
}

// applyRosterEdit changes r as e says, and sorts it. It refuses to add a member already
// there or remove one that is not, so that a typo is not a silent no-op.
func applyRosterEdit(r *protocol.Roster, e *rosterEdit, now time.Time) error {
	exp, err := parseExpiry(e.expires, now)
	if err != nil {
		return err
	}
	r.Expires = protocol.FromTime(exp)
	r.AnnulRemoved = e.annul
	if e.admins != "" {
		r.Admins = nil
		for _, s := range splitList(e.admins) {
			p, err := peer.Decode(s)
			if err != nil {
				return fmt.Errorf("--admins: %q is not a peer ID: %w", s, err)
			}
			r.Admins = append(r.Admins, p)
		}
	}
	if e.threshold != 0 {
		r.Threshold = e.threshold
	}
	index := func(p peer.ID) int {
		for i, m := range r.Members {
			if m.Peer == p {
				return i
			}
		}
		return -1
	}
	for _, s := range e.add {
		p, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("--add: %q is not a peer ID: %w", s, err)
		}
		if index(p) >= 0 {
			return fmt.Errorf("--add: %s is a member already", p)
		}
		r.Members = append(r.Members, protocol.Member{Peer: p, Roles: []protocol.MemberRole{protocol.RoleMember}})
	}
	for _, s := range e.remove {
		p, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("--remove: %q is not a peer ID: %w", s, err)
		}
		i := index(p)
		if i < 0 {
			return fmt.Errorf("--remove: %s is no member", p)
		}
		r.Members = append(r.Members[:i], r.Members[i+1:]...)
	}
	for _, s := range e.orgs {
		id, org, ok := strings.Cut(s, "=")
		p, err := peer.Decode(id)
		if !ok || err != nil || index(p) < 0 {
			return fmt.Errorf("--org %q: want MEMBERID=ORGANISATION", s)
		}
		r.Members[index(p)].Organisation = org
	}
	for _, s := range e.roles {
		id, list, ok := strings.Cut(s, "=")
		p, err := peer.Decode(id)
		if !ok || err != nil || index(p) < 0 {
			return fmt.Errorf("--roles %q: want MEMBERID=ROLE,... with a member's ID", s)
		}
		var roles []protocol.MemberRole
		for _, name := range strings.Split(list, ",") {
			role, err := protocol.ParseMemberRole(strings.TrimSpace(name))
			if err != nil {
				return err
			}
			roles = append(roles, role)
		}
		r.Members[index(p)].Roles = roles
	}
	r.Sort()
	return r.Validate()
}

// newRosterProposal is community init's roster: version 1 of community name, with admins
// (threshold k), each a member with the roles admin and member, and members.
func newRosterProposal(name string, e *rosterEdit, members []string, now time.Time) (*protocol.SignedRoster, error) {
	if e.admins == "" || e.threshold == 0 {
		return nil, errors.New("community init needs --admins and --threshold")
	}
	r := &protocol.Roster{Community: name, Version: 1}
	if err := applyRosterEdit(r, e, now); err != nil {
		return nil, err
	}
	for _, a := range r.Admins {
		r.Members = append(r.Members, protocol.Member{Peer: a, Roles: []protocol.MemberRole{protocol.RoleMember, protocol.RoleAdmin}})
	}
	edit := &rosterEdit{add: members, expires: e.expires}
	if err := applyRosterEdit(r, edit, now); err != nil {
		return nil, err
	}
	return protocol.NewSignedRoster(r)
}

// nextRosterProposal is community propose's roster: the successor of held, changed as e says,
// with no signature.
func nextRosterProposal(held *protocol.Roster, e *rosterEdit, now time.Time) (*protocol.SignedRoster, error) {
	r := held.Next(now)
	if err := applyRosterEdit(r, e, now); err != nil {
		return nil, err
	}
	return protocol.NewSignedRoster(r)
}

// readRosterFile reads a signed roster (or a proposal) from path.
func readRosterFile(path string) (*protocol.SignedRoster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := protocol.DecodeSignedRoster(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// writeRosterFile writes s to path, replacing it whole (sink.WriteFileAtomic: synced, the
// temporary file removed when a step fails).
func writeRosterFile(path string, s *protocol.SignedRoster) error {
	b, err := s.Encode()
	if err != nil {
		return err
	}
	return sink.WriteFileAtomic(path, b, 0o644)
}

func (c *cli) communityInitCommand() *cobra.Command {
	var e rosterEdit
	var name, out string
	var members []string
	cmd := c.command("init --name N --admins ID,... --threshold K [--members ID,...] [--expires D] --out FILE",
		"write the proposal of a community's first roster (version 1)", printsData, nargs(0, 0), func([]string) int {
			if name == "" || out == "" {
				return c.usageError("community init needs --name and --out")
			}
			s, err := newRosterProposal(name, &e, members, time.Now())
			if err != nil {
				c.fail(err)
				return exitUsage
			}
			return c.wroteProposal(out, s)
		})
	fs := cmd.Flags()
	fs.StringVar(&name, "name", "", "the community's name `N`: letters, digits, '.', '_', '-'")
	fs.StringVar(&e.admins, "admins", "", "the admin keys (peer IDs), comma-separated (`ID,...`); each is also a member")
	fs.Uint64Var(&e.threshold, "threshold", 0, "`K`: how many admins must sign a roster")
	fs.Func("members", "other members: peer IDs, comma-separated (`ID,...`; repeatable)", appendList(&members))
	fs.StringVar(&e.expires, "expires", "90d", "expiry `D`: a duration from now (90d, 720h) or an RFC 3339 time")
	fs.StringVar(&out, "out", "", "the `FILE` to write the proposal to")
	return cmd
}

func (c *cli) communityProposeCommand() *cobra.Command {
	var e rosterEdit
	var from, out string
	cmd := c.command("propose [--from FILE] [--add ID,...] [--remove ID,...] [--org ID=ORG] [--roles ID=ROLE,...] [--admins ID,...] [--threshold K] [--expires D] [--annul-removed] --out FILE",
		"write the proposal of the next roster: from FILE, or the roster the running agent holds", printsData, nargs(0, 0), func([]string) int {
			if out == "" {
				return c.usageError("community propose needs --out FILE")
			}
			return c.communityPropose(&e, from, out)
		})
	fs := cmd.Flags()
	e.flags(fs)
	fs.StringVar(&from, "from", "", "the roster `FILE` to start from; default: the roster the running agent holds")
	fs.StringVar(&out, "out", "", "the `FILE` to write the proposal to")
	return cmd
}

func (c *cli) communityPropose(e *rosterEdit, from, out string) int {
	var held *protocol.SignedRoster
	var err error
	if from != "" {
		held, err = readRosterFile(from)
	} else {
		var b []byte
		if err = c.api("GET", "/v1/community?format=cbor", nil, &b); err != nil {
			return c.apiFail(err)
		}
		held, err = protocol.DecodeSignedRoster(b)
	}
	if err != nil {
		return c.fail(err)
	}
	s, err := nextRosterProposal(held.Roster(), e, time.Now())
	if err != nil {
		c.fail(err)
		return exitUsage
	}
	return c.wroteProposal(out, s)
}

// wroteProposal writes a proposal and says what to do next.
func (c *cli) wroteProposal(out string, s *protocol.SignedRoster) int {
	if err := writeRosterFile(out, s); err != nil {
		return c.fail(err)
	}
	if c.json {
		return c.printJSON(agent.ViewRoster(s, time.Now()))
	}
	r := s.Roster()
	fmt.Fprintf(c.stdout, "proposal of version %d of community %s written to %s: %d members, %d admins, threshold %d, expires %s\n",
		r.Version, r.Community, out, len(r.Members), len(r.Admins), r.Threshold, r.Expires)
	fmt.Fprintf(c.stdout, "next: the admins sign it (ssanet community sign %s), then any member publishes it (ssanet community publish %s)\n", out, out)
	return exitOK
}

// signRosterFile adds the signature of the agent whose home is home to the roster in path.
func signRosterFile(home, path string) (*protocol.SignedRoster, *protocol.Identity, error) {
	key, err := agent.LoadKey(home)
	if err != nil {
		return nil, nil, err
	}
	id, err := protocol.NewIdentity(key)
	if err != nil {
		return nil, nil, err
	}
	s, err := readRosterFile(path)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Sign(id); err != nil {
		return nil, nil, err
	}
	return s, id, writeRosterFile(path, s)
}

func (c *cli) communitySign(file string) int {
	s, id, err := signRosterFile(c.home, file)
	if err != nil {
		return c.fail(err)
	}
	if c.json {
		return c.printJSON(agent.ViewRoster(s, time.Now()))
	}
	r := s.Roster()
	note := ""
	if !r.IsAdmin(id.PeerID()) {
		note = " (this agent's key is not among this roster's admins: its signature counts only if it is an admin of the roster this one replaces)"
	}
	fmt.Fprintf(c.stdout, "signed version %d of community %s as %s%s; %d signatures\n", r.Version, r.Community, id.PeerID(), note, len(s.Signers()))
	return exitOK
}

func (c *cli) communityPublish(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return c.fail(err)
	}
	var v agent.CommunityView
	if err := c.api("POST", "/v1/community", bytes.NewReader(b), &v); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(v)
	}
	fmt.Fprintf(c.stdout, "version %d of community %s applied; it is passed to the connected members\n", v.Version, v.Community)
	return exitOK
}

func (c *cli) communityShow(pos []string) int {
	var v *agent.CommunityView
	switch len(pos) {
	case 0:
		v = new(agent.CommunityView)
		if err := c.api("GET", "/v1/community", nil, v); err != nil {
			return c.apiFail(err)
		}
	case 1:
		s, err := readRosterFile(pos[0])
		if err != nil {
			return c.fail(err)
		}
		v = agent.ViewRoster(s, time.Now())
	}
	if c.json {
		return c.printJSON(v)
	}
	state := "expires"
	if v.Expired {
		state = "EXPIRED (nobody new is admitted until the admins publish a newer roster) at"
	}
	fmt.Fprintf(c.stdout, "community %s version %d, %s %s\nadmins (%d of them must sign the next version):\n", v.Community, v.Version, state, v.Expires, v.Threshold)
	for _, a := range v.Admins {
		fmt.Fprintf(c.stdout, "  %s\n", a)
	}
	fmt.Fprintf(c.stdout, "members (%d):\n", len(v.Members))
	for _, m := range v.Members {
		org := ""
		if m.Organisation != "" {
			org = " " + m.Organisation
		}
		fmt.Fprintf(c.stdout, "  %s%s [%s]\n", m.Peer, org, strings.Join(m.Roles, ","))
	}
	fmt.Fprintf(c.stdout, "signed by (%d):\n", len(v.Signers))
	for _, s := range v.Signers {
		fmt.Fprintf(c.stdout, "  %s\n", s)
	}
	if v.AnnulRemoved {
		fmt.Fprintln(c.stdout, "agreements with the members this version removed are to be cancelled")
	}
	return exitOK
}
