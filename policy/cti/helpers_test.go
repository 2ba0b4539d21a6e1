package cti

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// samples are the shared public samples of every format (policy's copies).
var samples = []struct{ format, file string }{
	{protocol.FormatEVE, "eve/test-eve-small.jsonl"},
	{protocol.FormatEVE, "eve/test-eve-6-0.jsonl"},
	{protocol.FormatEVE, "eve/test-eve-metadata.jsonl"},
	{protocol.FormatIDMEFv2, "idmefv2/minimal-idmefv2.json"},
	{protocol.FormatIDMEFv2, "idmefv2/suricata-idmefv2.json"},
	{protocol.FormatIDMEFv2, "idmefv2/idmefv2.valid.json"},
	{protocol.FormatIDMEFv2, "idmefv2/ssh-bruteforce-idmefv2.json"},
	{protocol.FormatIDMEFv2, "idmefv2/attachment-idmefv2.json"},
	{protocol.FormatIDMEF, "idmef/rfc4765-portscan.xml"},
	{protocol.FormatIDMEF, "idmef/secef-gateway-test-alert.xml"},
	{protocol.FormatIODEF, "iodef/rfc7970-scan.xml"},
	{protocol.FormatSyslog, "syslog/rfc5424-examples.log"},
	{protocol.FormatSyslog, "syslog/rfc3164-examples.log"},
}

var received = time.Date(2026, 12, 6, 10, 30, 0, 123e6, time.UTC)

// readSample returns the records of one sample file, numbered from seq.
func readSample(t testing.TB, format, file string, seq uint64) []Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	rr, err := policy.NewRecordReader(bytes.NewReader(b), format)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for i := 0; i < 1000; i++ {
		rec, err := rr.Next()
		if err != nil {
			break
		}
		seq++
		out = append(out, Record{Seq: seq, Received: received, Format: format, Data: bytes.Clone(rec)})
	}
	if len(out) == 0 {
		t.Fatalf("%s: no records", file)
	}
	return out
}

// agreement compiles an SSA for every format with TLP label tlp (none if "") and the given
// masking rules, and returns its Agreement and SSP.
func agreement(t testing.TB, tlp string, masks ...protocol.MaskRule) (*Agreement, *policy.SSP) {
	t.Helper()
	s := &protocol.SSA{ID: "ssa-cti-0001", Version: 1, Date: protocol.Time(received.Add(-24 * time.Hour).Unix()),
		Policy: &protocol.Policy{Masking: masks}}
	if tlp != "" {
		s.Policy.Handling = &protocol.Handling{TLP: tlp}
	}
	s.Participants.Provider = protocol.Participant{Affiliation: "Example CERT", Name: "Alice Analyst", Email: "alice@cert.example.org"}
	for _, f := range policy.Formats() {
		s.Information = append(s.Information, protocol.Information{Name: f, Type: protocol.TypeAttackDetectionLog, Format: f})
	}
	p, err := policy.Compile(s, func(string, string) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil })
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return NewAgreement(s, p), p
}

// refine runs recs through p's enforcer: what a provider sends.
func refine(t testing.TB, p *policy.SSP, recs []Record) []Record {
	t.Helper()
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		e, err := policy.NewEnforcer(p, r.Format, policy.Config{Year: 2024})
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.Refine(nil, r.Data)
		if err != nil {
			t.Fatalf("refine seq %d: %v", r.Seq, err)
		}
		b, err = e.Flush(b)
		if err != nil {
			t.Fatal(err)
		}
		r.Data = bytes.TrimRight(b, "\n")
		if len(r.Data) > 0 {
			out = append(out, r)
		}
	}
	return out
}
