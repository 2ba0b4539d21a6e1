package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

const statusRows = 12

func (c *cli) statusCommand() *cobra.Command {
	return c.command("status", "one screen: peers, agreements (phase, verdict), flows (records/s in and out), sinks (lag, last error)", printsData, nargs(0, 0), func([]string) int {
		var st agent.Status
		if err := c.api("GET", "/v1/status", nil, &st); err != nil {
			return c.apiFail(err)
		}
		if err := printStatus(c.stdout, &st, c.json); err != nil {
			return c.fail(err)
		}
		return exitOK
	})
}

// printStatus writes a status snapshot to w: as indented JSON, or as one screen of aligned
// tables (agreements, flows, sinks, peers) with the reasons of each verdict that is not
// fulfilled and each sink's last error below them. Peer IDs are shortened in the tables.
func printStatus(w io.Writer, st *agent.Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	p := &statusPrinter{w: w}
	p.linef("agent %s  %s", st.Peer, st.Time.UTC().Format(time.RFC3339))
	if r := st.Roster; r != nil {
		state := "expires"
		if r.Expired {
			state = "EXPIRED (nobody new is admitted) at"
		}
		p.linef("community %s  roster version %d, %d members, %s %s", r.Community, r.Version, r.Members, state, r.Expires)
	}
	p.agreements(st)
	p.flows(st)
	p.sinks(st)
	p.peers(st)
	return p.err
}

// statusPrinter writes the tables of `ssanet status`, keeping the first write error.
type statusPrinter struct {
	w   io.Writer
	err error
}

func (p *statusPrinter) linef(format string, a ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", a...)
	}
}

// table writes a titled table of aligned columns: at most statusRows rows, then a line that
// says how many more there are; empty, when there are none.
func (p *statusPrinter) table(title, empty string, header []string, rows [][]string) {
	p.linef("\n%s", title)
	if len(rows) == 0 {
		p.linef("  %s", empty)
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 8, 2, ' ', 0)
	line := func(cells []string) {
		if p.err == nil {
			_, p.err = fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
		}
	}
	line(header)
	for _, r := range rows[:min(len(rows), statusRows)] {
		line(r)
	}
	if p.err == nil {
		p.err = tw.Flush()
	}
	if n := len(rows) - statusRows; n > 0 {
		p.linef("  … and %d more (ssanet status --json lists all)", n)
	}
}

func (p *statusPrinter) agreements(st *agent.Status) {
	var rows [][]string
	var why []string
	for _, a := range st.Agreements {
		verdict := string(a.Verdict)
		switch {
		case a.Role != "requester":
			verdict = "-" // the requester judges it
		case a.AssessError != "":
			verdict = "not assessed"
			why = append(why, fmt.Sprintf("%s not assessed: %s", a.SSAID, a.AssessError))
		case verdict == "":
			verdict = "-"
		case a.Verdict != agent.VerdictFulfilled:
			why = append(why, fmt.Sprintf("%s %s: %s", a.SSAID, a.Verdict, strings.Join(a.Reasons, "; ")))
		}
		rows = append(rows, []string{a.SSAID, shortPeer(a.Peer), a.Role, a.State, string(a.Phase), verdict})
	}
	title := "AGREEMENTS"
	if st.Ended > 0 {
		title += fmt.Sprintf("  (%d ended, not listed)", st.Ended)
	}
	p.table(title, "none under negotiation or in force",
		[]string{"SSA", "PEER", "ROLE", "STATE", "PHASE", "VERDICT"}, rows)
	for _, s := range why {
		p.linef("  %s", s)
	}
}

func (p *statusPrinter) flows(st *agent.Status) {
	var rows [][]string
	for _, f := range st.Flows {
		rows = append(rows, []string{f.SSAID, f.Role, strconv.FormatFloat(f.InRate, 'f', 1, 64),
			strconv.FormatFloat(f.OutRate, 'f', 1, 64), strconv.FormatUint(f.In, 10), strconv.FormatUint(f.Out, 10)})
	}
	p.table(fmt.Sprintf("FLOWS  (records/s over the last %.0fs; in, out: records in all)", st.WindowSeconds),
		"no SSA in force", []string{"SSA", "ROLE", "IN/S", "OUT/S", "IN", "OUT"}, rows)
}

func (p *statusPrinter) sinks(st *agent.Status) {
	var rows [][]string
	var errs []string
	for _, s := range st.Sinks {
		state := "ok"
		switch {
		case s.Stopped != "":
			state = "STOPPED"
			errs = append(errs, fmt.Sprintf("%s stopped: %s", s.Name, s.Stopped))
		case !s.FailingSince.IsZero():
			state = "FAILING"
		}
		if s.LastError != "" {
			errs = append(errs, fmt.Sprintf("%s last error %s: %s", s.Name, s.LastErrorTime.UTC().Format(time.RFC3339), s.LastError))
		}
		ids := slices.Sorted(maps.Keys(s.SSAs))
		if len(ids) == 0 {
			rows = append(rows, []string{s.Name, s.Type, state, "-", "", "", strconv.FormatUint(s.Errors, 10)})
		}
		for _, id := range ids {
			ssa := s.SSAs[id]
			rows = append(rows, []string{s.Name, s.Type, state, id, strconv.FormatUint(ssa.Position, 10),
				strconv.FormatUint(ssa.Lag, 10), strconv.FormatUint(s.Errors, 10)})
		}
	}
	p.table("SINKS", "none configured (config.yaml: sinks)",
		[]string{"SINK", "TYPE", "STATE", "SSA", "POSITION", "LAG", "ERRORS"}, rows)
	for _, e := range errs {
		p.linef("  %s", e)
	}
}

func (p *statusPrinter) peers(st *agent.Status) {
	var rows [][]string
	connected := 0
	for _, pv := range st.Peers {
		state := "known"
		if pv.Connected {
			state = "connected"
			connected++
		}
		if !pv.Allowed {
			state += " (not allowed)"
		}
		addr := "-"
		if len(pv.Addrs) > 0 {
			addr = pv.Addrs[0]
			if len(pv.Addrs) > 1 {
				addr += fmt.Sprintf(" (+%d)", len(pv.Addrs)-1)
			}
		}
		last := "-"
		if pv.LastErrorKind != "" {
			last = pv.LastErrorKind + " at " + pv.LastErrorAt.UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{shortPeer(pv.Peer), state, strconv.Itoa(pv.Negotiations), addr, last})
	}
	p.table(fmt.Sprintf("PEERS  (%d known, %d connected; ssanet peers shows all addresses and errors)", len(st.Peers), connected),
		"none known", []string{"PEER", "STATE", "NEGOTIATIONS", "ADDRESS", "LAST ERROR"}, rows)
}

// shortPeer shortens a peer ID for a table: its first 8 and last 6 characters.
func shortPeer(id string) string {
	if len(id) <= 20 {
		return id
	}
	return id[:8] + "…" + id[len(id)-6:]
}
