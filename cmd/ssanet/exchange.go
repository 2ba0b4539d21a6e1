package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

func (c *cli) ingestCommand() *cobra.Command {
	var format string
	cmd := c.command("ingest --format F [FILE|-]", "hand raw records to the provider's enforcement point", printsData, nargs(0, 1), func(a []string) int {
		if format == "" {
			return c.usageError("ingest: --format is required (%s)", strings.Join(policy.Formats(), ", "))
		}
		return c.ingest(format, a)
	})
	cmd.Flags().StringVar(&format, "format", "", "format `F` of the raw records: "+strings.Join(policy.Formats(), ", "))
	completeFlag(cmd, "format", complete(policy.Formats()...))
	return cmd
}

func (c *cli) ingest(format string, pos []string) int {
	in := c.stdin
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return c.fail(fmt.Errorf("read records: %w", err))
		}
		defer f.Close()
		in = f
	}
	var st agent.IngestStats
	if err := c.api("POST", "/v1/ingest?format="+url.QueryEscape(format), in, &st); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(st)
	}
	printIngest(c.stdout, &st)
	return exitOK
}

// printIngest says what became of the records: per SSA that shares their format, how many
// were queued and what took the others; when none was queued, which outcome took them all.
func printIngest(w io.Writer, st *agent.IngestStats) {
	fmt.Fprintf(w, "%d records read, %d malformed\n", st.Records, st.Malformed)
	ids := map[string]bool{}
	for _, m := range []map[string]int64{st.Queued, st.NotQueued, st.OutsideSchedule, st.Filtered, st.Summarised, st.Untimed} {
		for id := range m {
			ids[id] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		var parts []string
		say := func(n int64, what string) {
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, what))
			}
		}
		say(st.Queued[id], "queued for delivery")
		say(st.NotQueued[id], "NOT queued: the requester's queue is full (max-queued-per-peer)")
		say(st.OutsideSchedule[id], "not shared: outside the SSA's schedule (it has not started, or has ended)")
		say(st.Filtered[id], "filtered out by the SSA's filters"+filteredBy(st.FilteredBy[id], st.FilterErrors[id]))
		say(st.Summarised[id], "counted in summaries")
		say(st.Untimed[id], "not summarised: no timestamp")
		fmt.Fprintf(w, "  %s: %s\n", id, strings.Join(parts, "; "))
	}
	switch {
	case st.Records == 0:
	case st.Malformed >= st.Records:
		fmt.Fprintln(w, "  nothing shared: every record was malformed")
	case st.SSAs == 0:
		fmt.Fprintln(w, "  nothing shared: no SSA in force shares this format")
	case len(st.Queued) == 0 && len(st.NotQueued) == 0 && len(st.Summarised) == 0:
		fmt.Fprintf(w, "  nothing shared by the %d SSA(s) in force that share this format: see the outcomes above\n", st.SSAs)
	}
}

// filteredBy says which filter left the records out, by its index in the SSA's
// policy.filtering list, and how many a filter could not be evaluated on: "" if neither is
// known.
func filteredBy[N int64 | uint64](by []N, errs int64) string {
	var parts []string
	for i, n := range by {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("filter %d: %d", i, n))
		}
	}
	if errs > 0 {
		parts = append(parts, fmt.Sprintf("not evaluable: %d", errs))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func (c *cli) recordsCommand() *cobra.Command {
	var ssa, format string
	var after uint64
	var follow bool
	cmd := c.command("records --ssa ID [--after N] [--follow] [--format F]", "print the records received under an SSA", printsData, nargs(0, 0), func([]string) int {
		if ssa == "" {
			return c.usageError("records: --ssa ID is required")
		}
		if !slices.Contains(cti.OutputFormats(), format) {
			return c.usageError("records: --format must be one of " + strings.Join(cti.OutputFormats(), ", "))
		}
		return c.records(ssa, after, follow, format)
	})
	f := cmd.Flags()
	f.StringVar(&ssa, "ssa", "", "the SSA (`ID`) whose received records to print")
	f.Uint64Var(&after, "after", 0, "print records after sequence number `N`")
	f.BoolVar(&follow, "follow", false, "keep printing records as they arrive (Ctrl-C stops)")
	f.StringVar(&format, "format", cti.FormatRaw, "`F`: raw (as received), stix (a STIX 2.1 bundle per record) or ecs (an ECS document per record);\nstix and ecs leave out quarantined records and those they cannot map, counting them on stderr\n(exit 1 if one could not be mapped)")
	completeFlag(cmd, "ssa", c.completeSSAIDs())
	completeFlag(cmd, "format", complete(cti.OutputFormats()...))
	return cmd
}

func (c *cli) records(ssa string, after uint64, follow bool, format string) int {
	mapped, err := recordFormatter(c, ssa, format)
	if err != nil {
		return c.apiFail(err)
	}
	enc := json.NewEncoder(c.stdout)
	left := leftOut{format: format, w: c.stderr}
	for {
		var recs []agent.ForwardedRecord
		q := "/v1/records?ssa=" + url.QueryEscape(ssa) + "&after=" + strconv.FormatUint(after, 10)
		if err := c.api("GET", q, nil, &recs); err != nil {
			left.report(false)
			return c.apiFail(err)
		}
		for _, r := range recs {
			mark := ""
			if r.Quarantined {
				mark = "[quarantined] "
			}
			switch {
			case mapped != nil:
				if doc, ok := left.mapRecord(r, mapped); ok {
					fmt.Fprintf(c.stdout, "%s\n", doc)
				}
			case c.json:
				enc.Encode(r)
			case len(r.Record) > 0:
				fmt.Fprintf(c.stdout, "%s%s\n", mark, r.Record)
			default:
				fmt.Fprintf(c.stdout, "%s%s\n", mark, r.Text)
			}
			after = r.Seq
		}
		if len(recs) == 0 {
			if !follow {
				return left.report(false)
			}
			time.Sleep(200 * time.Millisecond)
		} else if follow {
			left.report(true)
		}
	}
}

func (c *cli) monitorCommand() *cobra.Command {
	cmd := c.command("monitor ID", "fulfilment of an SSA, both sides' figures and the verdict (exit 5 degraded, 6 violated)", printsData, nargs(1, 1),
		func(a []string) int { return c.monitor(a[0]) })
	cmd.ValidArgsFunction = c.completeSSAIDs()
	return cmd
}

func (c *cli) monitor(id string) int {
	var as agent.Assessment
	if err := c.api("GET", "/v1/monitor/"+url.PathEscape(id), nil, &as); err != nil {
		return c.apiFail(err)
	}
	code := verdictCode(as.Verdict)
	if c.json {
		if c.printJSON(as) != exitOK {
			return exitError
		}
		return code
	}
	printAssessment(c.stdout, &as)
	return code
}

// verdictCode is monitor's exit code for verdict v.
func verdictCode(v agent.Verdict) int {
	switch v {
	case agent.VerdictFulfilled:
		return exitOK
	case agent.VerdictDegraded:
		return exitDegraded
	case agent.VerdictViolated:
		return exitViolated
	}
	return exitError // a verdict this CLI does not know: newer than it
}

// outcomeOrder is the order, and the words, in which monitor shows the provider's ledger.
var outcomeOrder = []struct{ key, say string }{
	{"shared", "shared"},
	{"not_queued", "NOT queued (requester's queue full)"},
	{"filtered", "filtered out"},
	{"filter_error", "filter not evaluable"},
	{"summarised", "summarised"},
	{"untimed", "no timestamp to summarise"},
	{"malformed", "malformed"},
	{"outside_schedule", "outside the schedule"},
}

// printOutcomes shows the provider's ledger of outcomes from its signed report, if it keeps one.
func printOutcomes(w io.Writer, p *protocol.Report) {
	if p.OutcomesIngested == 0 && len(p.Outcomes) == 0 {
		return
	}
	var parts []string
	var sum uint64
	for _, o := range outcomeOrder {
		if n := p.Outcomes[o.key]; n > 0 {
			by := ""
			if o.key == "filtered" {
				by = filteredBy(p.OutcomesFilteredBy, 0)
			}
			parts = append(parts, fmt.Sprintf("%s %d%s", o.say, n, by))
			sum += n
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.Outcomes)) { // outcomes of a newer provider
		if !slices.ContainsFunc(outcomeOrder, func(o struct{ key, say string }) bool { return o.key == k }) {
			parts = append(parts, fmt.Sprintf("%s %d", k, p.Outcomes[k]))
			sum += p.Outcomes[k]
		}
	}
	since := time.UnixMilli(p.OutcomesSince).UTC().Format(time.RFC3339)
	fmt.Fprintf(w, "provider outcomes since %s: %d records ingested: %s\n", since, p.OutcomesIngested, strings.Join(parts, ", "))
	if sum != p.OutcomesIngested {
		fmt.Fprintf(w, "  the provider's outcomes sum to %d, not %d: its ledger does not account for every record\n", sum, p.OutcomesIngested)
	}
	var by uint64
	for _, n := range p.OutcomesFilteredBy {
		by += n
	}
	if len(p.OutcomesFilteredBy) > 0 && by != p.Outcomes["filtered"] {
		fmt.Fprintf(w, "  the provider's records filtered out by each filter sum to %d, not %d\n", by, p.Outcomes["filtered"])
	}
}

func printAssessment(w io.Writer, as *agent.Assessment) {
	fmt.Fprintf(w, "SSA %s: %s (phase: %s)\n", as.SSAID, strings.ToUpper(string(as.Verdict)), as.Phase)
	for _, r := range as.Reasons {
		fmt.Fprintf(w, "  - %s\n", r)
	}
	if p := as.Provider; p != nil && p.Error == "" {
		fmt.Fprintf(w, "provider (signed report): ingested %d, refined %d, dropped %d, sent %d, acknowledged %d; latency p50 %d ms, p95 %d ms, p99 %d ms; in schedule: %v\n",
			p.Ingested, p.Refined, p.Dropped, p.Sent, p.Acked, p.LatencyP50, p.LatencyP95, p.LatencyP99, p.InSchedule)
		printOutcomes(w, p)
	}
	l := as.Local
	fmt.Fprintf(w, "requester: received %d, held %d, deleted by retention %d, with violations %d\n", l.Last, l.Stored, l.Deleted, l.Violations)
	for _, e := range as.Evidence {
		fmt.Fprintf(w, "evidence: signed batch from record %d received %s: %s\n", e.First, e.ReceivedAt.Format(time.RFC3339), e.Findings)
	}
	for i := range as.Sinks {
		printSink(w, &as.Sinks[i])
	}
}
