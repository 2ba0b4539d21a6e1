package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

const offerSynopsis = "offer add FILE | list | remove ID"

func cmdOffer(c *cli, args []string) int {
	if code, done := c.subcommandUsage(args, "usage: ssanet "+offerSynopsis+"\n"); done {
		return code
	}
	fs := c.flags("offer "+args[0], offerSynopsis)
	pos, code := c.parse(fs, args[1:])
	if code >= 0 {
		return code
	}
	switch {
	case args[0] == "add" && len(pos) == 1:
		return offerAdd(c, pos[0])
	case args[0] == "list" && len(pos) == 0:
		return offerList(c)
	case args[0] == "remove" && len(pos) == 1:
		return offerRemove(c, pos[0])
	}
	return c.usageError("usage: ssanet %s", offerSynopsis)
}

func offerAdd(c *cli, file string) int {
	body, err := os.ReadFile(file)
	if err != nil {
		return c.fail(fmt.Errorf("read offer: %w", err))
	}
	var o protocol.Offer
	if err := c.api("POST", "/v1/offers", bytes.NewReader(body), &o); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(o)
	}
	fmt.Fprintf(c.stdout, "offer %s added: %s\n", o.ID, infoSummary(o.Terms.Information))
	return exitOK
}

func offerList(c *cli) int {
	return getAndPrint(c, "/v1/offers", func(offers []protocol.Offer) {
		for _, o := range offers {
			fmt.Fprintf(c.stdout, "%-20s %-7s %s\n", o.ID, orDefault(o.Approval, protocol.ApprovalAuto), infoSummary(o.Terms.Information))
		}
	})
}

// getAndPrint gets what path holds from the daemon and prints it: as JSON with --json, else
// with text.
func getAndPrint[T any](c *cli, path string, text func(T)) int {
	var v T
	if err := c.api("GET", path, nil, &v); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(v)
	}
	text(v)
	return exitOK
}

func offerRemove(c *cli, id string) int {
	var removed map[string]string
	err := c.api("DELETE", "/v1/offers/"+url.PathEscape(id), nil, &removed)
	var ae *apiStatusError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return c.fail(fmt.Errorf("this agent has no offer %q; see its offers with: %s", id, c.hint("offer", "list")))
	}
	if err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(removed)
	}
	fmt.Fprintf(c.stdout, "offer %s removed\n", id)
	return exitOK
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func infoSummary(in []protocol.Information) string {
	s := make([]string, len(in))
	for i, x := range in {
		s[i] = x.Type + "/" + x.Format
	}
	return strings.Join(s, " ")
}

const requestSynopsis = "request --provider PEERID|MULTIADDR --template FILE [--wait D]"

func cmdRequest(c *cli, args []string) int {
	fs := c.flags("request", requestSynopsis)
	provider := fs.String("provider", "", "the provider's peer ID or multiaddr (…/p2p/PEERID)")
	tmpl := fs.String("template", "", "the requester's SSA template (YAML)")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the outcome; 0 returns at once")
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if *provider == "" || *tmpl == "" || len(pos) > 0 {
		return c.usageError("usage: ssanet %s", requestSynopsis)
	}
	text, err := os.ReadFile(*tmpl)
	if err != nil {
		return c.fail(fmt.Errorf("read template: %w", err))
	}
	body, _ := json.Marshal(agent.RequestBody{Provider: *provider, Template: string(text)})
	var v agent.NegotiationView
	if err := c.api("POST", "/v1/requests", bytes.NewReader(body), &v); err != nil {
		return c.apiFail(err)
	}
	return c.awaitOutcome(&v, *wait, false)
}

// awaitOutcome polls a negotiation until it is at rest (over, in force, or held for a
// decision) or wait passes, prints it, and returns the exit code of its outcome:
// 3 when the peer refused (local: this agent declined, which is no refusal by the peer) or
// its allow-list does not include this agent, 4 when the proposal expired, 7 when the peer
// does not speak ssanet.
func (c *cli) awaitOutcome(v *agent.NegotiationView, wait time.Duration, local bool) int {
	if err := c.poll(v, wait, func(v *agent.NegotiationView) bool { return !v.AtRest }); err != nil {
		return c.apiFail(err)
	}
	c.show(v)
	failed := v.State == protocol.StateFailed.String()
	switch {
	case failed && hasCode(v.Reasons, protocol.CodeNotSSAnetPeer):
		fmt.Fprintf(c.stderr, "ssanet: %s speaks libp2p but not ssanet (%s): the request ended unsent; check the peer ID\n", v.Peer, agent.ProtocolNegotiate)
		return exitNotSSAnet
	case failed && hasCode(v.Reasons, protocol.CodeNotAuthorized):
		fmt.Fprintf(c.stderr, "ssanet: %s refused this agent: it closed the connection right after the handshake, as an agent does to a peer outside its allow-list; ask its operator to allow this agent's peer ID (%s)\n",
			v.Peer, c.hint("id"))
		return exitRefused
	case v.State == protocol.StateRejected.String() && !local:
		return exitRefused
	case v.State == protocol.StateExpired.String():
		what := "proposal of %s expired before it was accepted"
		if hasCode(v.Reasons, protocol.CodeRequestExpired) {
			what = "request %s expired unanswered"
		}
		fmt.Fprintf(c.stderr, "ssanet: the "+what+": nothing was agreed; request again\n", v.SSAID)
		return exitExpired
	case !v.AtRest && wait > 0:
		fmt.Fprintf(c.stderr, "ssanet: still %s after %s: %s; follow it with: %s\n",
			v.State, wait, c.whyWaiting(v.Peer), c.hint("ssa", "show", v.SSAID))
		return exitError
	}
	return exitOK
}

// whyWaiting says why a negotiation with peer p still waits: the last failure to reach p, if
// the agent has one, else that p has the message and has not answered.
func (c *cli) whyWaiting(p string) string {
	var peers []agent.PeerView
	if err := c.api("GET", "/v1/peers", nil, &peers); err == nil {
		for _, v := range peers {
			switch {
			case v.Peer != p || v.LastError == "":
			case v.LastErrorKind == "no-answer":
				return "the peer did not answer in time (" + v.LastError + "); it is tried again"
			default:
				return "the peer could not be reached (" + v.LastErrorKind + ": " + v.LastError + "); it is tried again"
			}
		}
	}
	return "the peer has not answered (it may hold the SSA for its operator)"
}

// poll refreshes v from the daemon while pending(v), until wait passes.
func (c *cli) poll(v *agent.NegotiationView, wait time.Duration, pending func(*agent.NegotiationView) bool) error {
	for deadline := time.Now().Add(wait); pending(v) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if err := c.api("GET", "/v1/ssa/"+url.PathEscape(v.SSAID), nil, v); err != nil {
			return err
		}
	}
	return nil
}

// show prints a negotiation: JSON with --json, else a summary and the SSA as YAML.
func (c *cli) show(v *agent.NegotiationView) {
	if c.json {
		c.printJSON(v)
		return
	}
	fmt.Fprintf(c.stdout, "SSA %s: %s (%s, peer %s)\n", v.SSAID, v.State, v.Role, v.Peer)
	fmt.Fprintf(c.stdout, "phase: %s\n", v.Phase)
	if a := v.Attempt; a != nil {
		next := "at the next round"
		if !a.Next.IsZero() {
			next = a.Next.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(c.stdout, "waiting for the peer: next attempt %s", next)
		if a.LastError != "" {
			fmt.Fprintf(c.stdout, "; last error: %s", a.LastError)
		}
		fmt.Fprintln(c.stdout)
	}
	if v.Note != "" {
		fmt.Fprintf(c.stdout, "note: %s\n", v.Note)
	}
	for _, r := range v.Reasons {
		fmt.Fprintf(c.stdout, "conflict: %s\n", r)
	}
	if len(v.Versions) > 0 {
		fmt.Fprintf(c.stdout, "versions: %s\n", strings.Join(v.Versions, " -> "))
	}
	if v.SSA != nil {
		if y, err := v.SSA.YAML(); err == nil {
			fmt.Fprintf(c.stdout, "---\n%s", y)
		}
	}
}

func cmdSSAList(c *cli, synopsis string, args []string) int {
	if code := c.parseFlags(c.flags("ssa list", synopsis), args); code >= 0 {
		return code
	}
	return getAndPrint(c, "/v1/ssa", func(vs []agent.NegotiationView) {
		for _, v := range vs {
			id := v.SSAID
			if id == "" {
				id = "-" // a request refused because its SSA ID names another negotiation's SSA
			}
			fmt.Fprintf(c.stdout, "%-28s %-9s %-19s %-14s %s\n", id, v.Role, v.State, v.Phase, v.Peer)
		}
	})
}

// ssaArg parses the flags of an ssa subcommand that takes one SSA ID, and returns the API
// path of its negotiation, or the exit code when there is nothing more to do.
func (c *cli) ssaArg(fs *flag.FlagSet, synopsis string, args []string) (path string, code int) {
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return "", code
	}
	if len(pos) != 1 {
		return "", c.usageError("usage: ssanet %s", synopsis)
	}
	return "/v1/ssa/" + url.PathEscape(pos[0]), -1
}

// waitFlag is the --wait flag of the subcommands that change a negotiation.
func waitFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("wait", 30*time.Second, "how long to wait for the outcome; 0 returns at once")
}

// postSSA posts an operation on a negotiation and waits for its outcome with await.
func (c *cli) postSSA(path string, body io.Reader, await func(*agent.NegotiationView) int) int {
	var v agent.NegotiationView
	if err := c.api("POST", path, body, &v); err != nil {
		return c.apiFail(err)
	}
	return await(&v)
}

func cmdSSAShow(c *cli, synopsis string, args []string) int {
	path, code := c.ssaArg(c.flags("ssa show", synopsis), synopsis, args)
	if code >= 0 {
		return code
	}
	var v agent.NegotiationView
	if err := c.api("GET", path, nil, &v); err != nil {
		return c.apiFail(err)
	}
	c.show(&v)
	return exitOK
}

func cmdSSAApprove(c *cli, synopsis string, args []string) int {
	fs := c.flags("ssa approve", synopsis)
	wait := waitFlag(fs)
	path, code := c.ssaArg(fs, synopsis, args)
	if code >= 0 {
		return code
	}
	return c.postSSA(path+"/approve", nil, func(v *agent.NegotiationView) int { return c.awaitOutcome(v, *wait, false) })
}

func cmdSSADecline(c *cli, synopsis string, args []string) int {
	fs := c.flags("ssa decline", synopsis)
	reason := fs.String("reason", "", "why, for the peer")
	wait := waitFlag(fs)
	path, code := c.ssaArg(fs, synopsis, args)
	if code >= 0 {
		return code
	}
	return c.postSSA(path+"/decline?reason="+url.QueryEscape(*reason), nil,
		func(v *agent.NegotiationView) int { return c.awaitOutcome(v, *wait, true) })
}

func cmdSSACancel(c *cli, synopsis string, args []string) int {
	fs := c.flags("ssa cancel", synopsis)
	wait := waitFlag(fs)
	path, code := c.ssaArg(fs, synopsis, args)
	if code >= 0 {
		return code
	}
	return c.postSSA(path+"/cancel", nil, func(v *agent.NegotiationView) int { return c.awaitChange(v, *wait) })
}

func cmdSSAExport(c *cli, synopsis string, args []string) int {
	fs := c.plainFlags("ssa export", synopsis) // CBOR bytes, or a file
	out := fs.String("out", "", "write the SSA to `FILE` instead of standard output")
	path, code := c.ssaArg(fs, synopsis, args)
	if code >= 0 {
		return code
	}
	var b []byte
	if err := c.api("GET", path+"/export", nil, &b); err != nil {
		return c.apiFail(err)
	}
	if *out == "" {
		if _, err := c.stdout.Write(b); err != nil {
			return c.fail(fmt.Errorf("write the SSA: %w", err))
		}
		return exitOK
	}
	if err := os.WriteFile(*out, b, 0o600); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stderr, "wrote %s (verify it with: ssanet ssa verify %s)\n", *out, *out)
	return exitOK
}

// awaitChange waits until a cancellation or a withdrawal is confirmed.
func (c *cli) awaitChange(v *agent.NegotiationView, wait time.Duration) int {
	unconfirmed := func(v *agent.NegotiationView) bool { return !v.AtRest }
	if err := c.poll(v, wait, unconfirmed); err != nil {
		return c.apiFail(err)
	}
	c.show(v)
	switch {
	case unconfirmed(v) && wait > 0:
		fmt.Fprintf(c.stderr, "ssanet: not confirmed yet after %s; it will be sent again; follow it with: %s\n", wait, c.hint("ssa", "show", v.SSAID))
		return exitError
	case hasCode(v.Reasons, protocol.CodeWithdrawn):
		return exitOK // this side withdrew its request by rejecting the proposal
	case len(v.Reasons) > 0:
		return exitRefused // the peer refused what was cancelled
	}
	return exitOK
}

// hasCode reports whether one of reasons has code c.
func hasCode(reasons []protocol.Reason, c protocol.Code) bool {
	for _, r := range reasons {
		if r.Code == c {
			return true
		}
	}
	return false
}
