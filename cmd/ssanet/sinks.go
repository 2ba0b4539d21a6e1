package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) sinksCommand() *cobra.Command {
	return c.command("sinks", "each sink's position and lag per SSA, errors and last success", printsData, nargs(0, 0), func([]string) int { return c.sinks() })
}

func (c *cli) sinks() int {
	var states []agent.SinkState
	if err := c.api("GET", "/v1/sinks", nil, &states); err != nil {
		return c.apiFail(err)
	}
	if c.json {
		return c.printJSON(states)
	}
	if len(states) == 0 {
		fmt.Fprintln(c.stdout, "no sinks configured (config.yaml: sinks)")
	}
	for i := range states {
		printSink(c.stdout, &states[i])
	}
	return exitOK
}

// printSink prints a sink's state: whether it works, its errors and last success, its records
// by outcome, then its position, lag and records by outcome per SSA.
func printSink(w io.Writer, s *agent.SinkState) {
	status := "ok"
	switch {
	case s.Stopped != "":
		status = "STOPPED: " + s.Stopped
	case !s.FailingSince.IsZero():
		status = "FAILING since " + s.FailingSince.Format(time.RFC3339)
	}
	last := "never since the agent started"
	if !s.LastSuccess.IsZero() {
		last = s.LastSuccess.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "sink %s (%s): %s; errors %d; last success %s\n", s.Name, s.Type, status, s.Errors, last)
	fmt.Fprintf(w, "  records since the agent started: %s\n", sinkRecords(s.Records, s.Confirms))
	if s.LastError != "" {
		fmt.Fprintf(w, "  last error %s: %s\n", s.LastErrorTime.Format(time.RFC3339), s.LastError)
	}
	for _, id := range slices.Sorted(maps.Keys(s.SSAs)) {
		p := s.SSAs[id]
		fmt.Fprintf(w, "  %s: forwarded up to record %d, lag %d; %s\n", id, p.Position, p.Lag, sinkRecords(p.Records, s.Confirms))
	}
	for _, id := range s.Forbidden {
		fmt.Fprintf(w, "  %s: not forwarded (the SSA's redistribution rule forbids this sink)\n", id)
	}
}

// sinkRecords prints a sink's records by outcome; confirmed says "none confirmed" for a sink
// whose receiver confirms nothing (syslog over udp, tcp or tls; jsonl to a pipe).
func sinkRecords(r agent.SinkRecords, confirms bool) string {
	confirmed := fmt.Sprintf("confirmed %d", r.Confirmed)
	if !confirms {
		confirmed = "confirmed n/a (the receiver confirms nothing)"
	}
	out := fmt.Sprintf("forwarded %d, %s, failed %d (at each attempt)", r.Forwarded, confirmed, r.Failed)
	if r.SetAside > 0 {
		out += fmt.Sprintf(", SET ASIDE %d (refused by the receiver, kept in HOME/sinks/NAME.poison)", r.SetAside)
	} else {
		out += ", set aside 0"
	}
	if sk := r.Skipped; sk.Total() > 0 {
		out += fmt.Sprintf(", skipped %d (no form in the sink's format: unmappable %d, unmapped %d)", sk.Total(), sk.Unmappable, sk.Unmapped)
	}
	return out
}
