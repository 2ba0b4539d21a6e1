package policy

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// fuzzFormat checks that a parser never panics, and that what it accepts it writes back as
// a record it accepts again and that passes Verify.
func fuzzFormat(f *testing.F, format string, seeds ...string) {
	for _, s := range seeds {
		f.Add(readTestdata(f, s))
	}
	pol := &protocol.Policy{Masking: []protocol.MaskRule{
		{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8},
		{Scope: protocol.ScopeFields, Fields: []string{"process.name"}, Method: protocol.MaskHMAC},
	}}
	if format != "syslog" {
		pol.Masking[1].Fields = []string{"source.ip"}
	}
	p := mustCompile(f, ssaFor(pol, format))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := NewEnforcer(p, format, Config{Year: 2024})
		if err != nil {
			t.Fatal(err)
		}
		// The stream path: never an error other than the reader's.
		if _, err := e.Run(context.Background(), bytes.NewReader(raw), io.Discard); err != nil {
			t.Fatalf("Run: %v", err)
		}
		out, err := Enforce(p, format, raw)
		if err != nil || out == nil {
			return
		}
		if f := Verify(p, format, out); len(f) != 0 {
			t.Fatalf("Verify of the refined record: %v\nin:  %q\nout: %q", f, raw, out)
		}
	})
}

func FuzzEVE(f *testing.F) {
	fuzzFormat(f, "eve", "eve/test-eve-metadata.jsonl", "eve/test-eve-6-0.jsonl")
}

func FuzzIDMEFv2(f *testing.F) {
	fuzzFormat(f, "idmefv2", "idmefv2/suricata-idmefv2.json", "idmefv2/attachment-idmefv2.json", "idmefv2/idmefv2.invalid.json")
}

func FuzzIDMEF(f *testing.F) {
	fuzzFormat(f, "idmef", "idmef/secef-gateway-test-alert.xml", "idmef/rfc4765-portscan.xml")
}

func FuzzIODEF(f *testing.F) {
	fuzzFormat(f, "iodef", "iodef/rfc7970-scan.xml")
}

func FuzzSyslog(f *testing.F) {
	fuzzFormat(f, "syslog", "syslog/rfc5424-examples.log", "syslog/rfc3164-examples.log", "syslog/rfc5424-examples-as-printed.log")
}

// FuzzVerify checks that the requester's parser of received records never panics.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(`{"ssanet_summary":{"top":[{"value":"1.2.3.4"}]}}`))
	f.Add(readTestdata(f, "eve/test-eve-metadata.jsonl"))
	pol := &protocol.Policy{
		Masking:       []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: "count", TopN: 3, Window: 60},
	}
	p := mustCompile(f, ssaFor(pol, "eve"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		Verify(p, "eve", raw)
	})
}
