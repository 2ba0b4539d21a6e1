package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/ssanet/ssanet/agent"
)

func cmdSinks(c *cli, args []string) int {
	if code := c.parseFlags(c.flags("sinks", "sinks"), args); code >= 0 {
		return code
	}
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

// printSink prints a sink's state: whether it works, its errors and last success, then its
// position and lag per SSA.
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
	if s.LastError != "" {
		fmt.Fprintf(w, "  last error %s: %s\n", s.LastErrorTime.Format(time.RFC3339), s.LastError)
	}
	for _, id := range slices.Sorted(maps.Keys(s.SSAs)) {
		p := s.SSAs[id]
		fmt.Fprintf(w, "  %s: forwarded up to record %d, lag %d\n", id, p.Position, p.Lag)
	}
	for _, id := range s.Forbidden {
		fmt.Fprintf(w, "  %s: not forwarded (the SSA's redistribution rule forbids this sink)\n", id)
	}
}
