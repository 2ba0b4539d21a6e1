package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

// recordFormatter returns how `ssanet records --format FORMAT` prints a record: nil for raw
// (the record as it came, or its envelope with --json), else a function that makes the
// record's STIX 2.1 bundle (stix) or ECS document (ecs) under the SSA, which it reads from the
// agent and compiles as the agent does.
func recordFormatter(c *cli, ssaID, format string) (func(agent.ForwardedRecord) (json.RawMessage, error), error) {
	if format == cti.FormatRaw {
		return nil, nil
	}
	var v agent.NegotiationView
	if err := c.api("GET", "/v1/ssa/"+url.PathEscape(ssaID), nil, &v); err != nil {
		return nil, err
	}
	return formatterOf(v.SSA, format)
}

// formatterOf is recordFormatter for an SSA in hand.
func formatterOf(ssa *protocol.SSA, format string) (func(agent.ForwardedRecord) (json.RawMessage, error), error) {
	if ssa == nil {
		return nil, fmt.Errorf("no SSA to map the records under")
	}
	p, err := policy.Compile(ssa, nil)
	if err != nil {
		return nil, fmt.Errorf("compile SSA %s: %w", ssa.ID, err)
	}
	a := cti.NewAgreement(ssa, p)
	return func(r agent.ForwardedRecord) (json.RawMessage, error) {
		return cti.Marshal(format, a, cti.Record{Seq: r.Seq, Received: r.Received, Format: r.Format, Data: r.Data()})
	}, nil
}

// maxUnmappedShown bounds the records that could not be mapped whose error records prints;
// further ones are counted only.
const maxUnmappedShown = 10

// leftOut counts the records `ssanet records --format stix|ecs` leaves out of its output, and
// says so on w (stderr): none is left out silently. A quarantined record is left out by
// design (its evidence is in `ssanet monitor`); one the mapping cannot take (its format has no
// mapping, or it does not parse) is an error, each shown with its sequence number up to
// maxUnmappedShown.
type leftOut struct {
	format                        string
	w                             io.Writer
	seen, quarantined, unmappable int
	reported                      int // left out at the last report
}

// mapRecord maps r with mapped, counting it; ok is false if r is left out.
func (l *leftOut) mapRecord(r agent.ForwardedRecord, mapped func(agent.ForwardedRecord) (json.RawMessage, error)) (json.RawMessage, bool) {
	l.seen++
	if r.Quarantined {
		l.quarantined++
		return nil, false
	}
	doc, err := mapped(r)
	if err != nil {
		l.unmappable++
		switch {
		case l.unmappable <= maxUnmappedShown:
			fmt.Fprintf(l.w, "ssanet: record #%d (%s) left out of the %s output: %v\n", r.Seq, r.Format, l.format, err)
		case l.unmappable == maxUnmappedShown+1:
			fmt.Fprintf(l.w, "ssanet: more records could not be mapped: they are counted only\n")
		}
		return nil, false
	}
	return doc, true
}

// report prints how many records were left out, if any were since the last report (so far:
// the command goes on, following), and returns the exit code: 1 if a record could not be
// mapped.
func (l *leftOut) report(soFar bool) int {
	if n := l.quarantined + l.unmappable; n > l.reported {
		when := ""
		if soFar {
			when = " so far"
		}
		fmt.Fprintf(l.w, "ssanet: %d of %d records left out of the %s output%s: %d quarantined (not compliant with the SSA: see ssanet monitor), %d could not be mapped\n",
			n, l.seen, l.format, when, l.quarantined, l.unmappable)
		l.reported = n
	}
	if l.unmappable > 0 {
		return exitError
	}
	return exitOK
}
