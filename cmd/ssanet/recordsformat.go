package main

import (
	"encoding/json"
	"fmt"
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
