package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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

func (c *cli) offerCommand() *cobra.Command {
	remove := c.command("remove ID", "withdraw one of this agent's offers", printsData, nargs(1, 1),
		func(a []string) int { return offerRemove(c, a[0]) })
	remove.ValidArgsFunction = c.completeOfferIDs()
	return c.group("offer", "what this agent provides and on what terms", "",
		c.command("add FILE", "publish an offer (YAML: see ssanet template example provider)", printsData, nargs(1, 1),
			func(a []string) int { return offerAdd(c, a[0]) }),
		c.command("list", "list this agent's offers", printsData, nargs(0, 0), func([]string) int { return offerList(c) }),
		remove)
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

func (c *cli) requestCommand() *cobra.Command {
	var provider, tmpl string
	var wait time.Duration
	cmd := c.command("request --provider PEERID|MULTIADDR --template FILE [--wait D]",
		"negotiate an SSA (exit 3 when refused, 7 when the peer is no ssanet agent)", printsData, nargs(0, 0), func([]string) int {
			if provider == "" || tmpl == "" {
				return c.usageError("request: give --provider and --template")
			}
			text, err := os.ReadFile(tmpl)
			if err != nil {
				return c.fail(fmt.Errorf("read template: %w", err))
			}
			body, _ := json.Marshal(agent.RequestBody{Provider: provider, Template: string(text)})
			var v agent.NegotiationView
			if err := c.api("POST", "/v1/requests", bytes.NewReader(body), &v); err != nil {
				return c.apiFail(err)
			}
			return c.awaitOutcome(&v, wait, false)
		})
	f := cmd.Flags()
	f.StringVar(&provider, "provider", "", "the provider's peer ID or multiaddr (.../p2p/PEERID): `PEERID|MULTIADDR`")
	f.StringVar(&tmpl, "template", "", "the requester's SSA template, YAML `FILE`")
	waitFlag(f, &wait)
	completeFlag(cmd, "provider", c.completePeers())
	return cmd
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
		fmt.Fprintf(c.stderr, "ssanet: %s refused this agent: its allow-list or community roster does not include it (it closed the connection right after the handshake, or refused the negotiation stream); ask its operator to allow this agent's peer ID (%s)\n",
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

func (c *cli) ssaList() int {
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

// ssaPath is the API path of the negotiation of SSA id.
func ssaPath(id string) string { return "/v1/ssa/" + url.PathEscape(id) }

// withSSA defines a command that takes one SSA ID (completed from the daemon's negotiations):
// run gets the ID.
func (c *cli) withSSA(use, short string, data bool, run func(id string) int) *cobra.Command {
	cmd := c.command(use, short, data, nargs(1, 1), func(a []string) int { return run(a[0]) })
	cmd.ValidArgsFunction = c.completeSSAIDs()
	return cmd
}

// waitFlag is the --wait flag of the commands that change a negotiation.
func waitFlag(f *pflag.FlagSet, wait *time.Duration) {
	f.DurationVar(wait, "wait", 30*time.Second, "how long to wait for the outcome (`D`: 30s, 2m); 0 returns at once")
}

// postSSA posts an operation on a negotiation and waits for its outcome with await.
func (c *cli) postSSA(path string, body io.Reader, await func(*agent.NegotiationView) int) int {
	var v agent.NegotiationView
	if err := c.api("POST", path, body, &v); err != nil {
		return c.apiFail(err)
	}
	return await(&v)
}

func (c *cli) ssaShow(id string) int {
	var v agent.NegotiationView
	if err := c.api("GET", ssaPath(id), nil, &v); err != nil {
		return c.apiFail(err)
	}
	c.show(&v)
	return exitOK
}

func (c *cli) ssaApproveCommand() *cobra.Command {
	var wait time.Duration
	cmd := c.withSSA("approve ID [--wait D]", "approve a request, proposal or revision held for this agent's operator", printsData, func(id string) int {
		return c.postSSA(ssaPath(id)+"/approve", nil, func(v *agent.NegotiationView) int { return c.awaitOutcome(v, wait, false) })
	})
	waitFlag(cmd.Flags(), &wait)
	return cmd
}

func (c *cli) ssaDeclineCommand() *cobra.Command {
	var wait time.Duration
	var reason string
	cmd := c.withSSA("decline ID [--reason R] [--wait D]", "decline a request, proposal or revision held for this agent's operator", printsData, func(id string) int {
		return c.postSSA(ssaPath(id)+"/decline?reason="+url.QueryEscape(reason), nil,
			func(v *agent.NegotiationView) int { return c.awaitOutcome(v, wait, true) })
	})
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the peer (`R`)")
	waitFlag(cmd.Flags(), &wait)
	return cmd
}

func (c *cli) ssaCancelCommand() *cobra.Command {
	var wait time.Duration
	cmd := c.withSSA("cancel ID [--wait D]", "annul an SSA in force, or withdraw a request or proposal", printsData, func(id string) int {
		return c.postSSA(ssaPath(id)+"/cancel", nil, func(v *agent.NegotiationView) int { return c.awaitChange(v, wait) })
	})
	waitFlag(cmd.Flags(), &wait)
	return cmd
}

func (c *cli) ssaExportCommand() *cobra.Command {
	var out string
	cmd := c.withSSA("export ID [--out FILE]", "write the agreed SSA (CBOR, both signatures)", noData, func(id string) int { // CBOR bytes, or a file
		var b []byte
		if err := c.api("GET", ssaPath(id)+"/export", nil, &b); err != nil {
			return c.apiFail(err)
		}
		if out == "" {
			if _, err := c.stdout.Write(b); err != nil {
				return c.fail(fmt.Errorf("write the SSA: %w", err))
			}
			return exitOK
		}
		if err := os.WriteFile(out, b, 0o600); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(c.stderr, "wrote %s (verify it with: ssanet ssa verify %s)\n", out, out)
		return exitOK
	})
	cmd.Flags().StringVar(&out, "out", "", "write the SSA to `FILE` instead of standard output")
	return cmd
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
