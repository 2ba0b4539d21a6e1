package policy

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// benchRefined returns the benchmark's EVE records that the benchmark policy keeps, raw and
// as refined: the same records on both sides of an exchange.
func benchRefined(tb testing.TB, p *SSP, n int) (raw, refined [][]byte) {
	tb.Helper()
	e, err := NewEnforcer(p, "eve", Config{})
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range bytes.Split(benchEVE(tb, n), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		out, err := e.Refine(nil, l)
		if err != nil {
			tb.Fatal(err)
		}
		if len(out) == 0 {
			continue
		}
		raw, refined = append(raw, l), append(refined, bytes.TrimSuffix(out, []byte("\n")))
	}
	return raw, refined
}

// mallocs is the number of heap allocations so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// BenchmarkVerifyVsRefine measures, in one run and interleaved so that the machine's load
// cancels out, the provider's refine (an Enforcer, as ingest runs it) and the requester's
// verify (a Verifier, as the agent checks a received batch) on the same EVE records: 8-bit truncation of
// every public address and a filter. verify/refine is the ratio of their times per record.
func BenchmarkVerifyVsRefine(b *testing.B) {
	p := mustCompile(b, ssaFor(benchPolicy(), "eve"))
	raw, refined := benchRefined(b, p, 2000)
	var size int
	for _, r := range raw {
		size += len(r)
	}
	var tRefine, tVerify time.Duration
	var aRefine, aVerify uint64
	var n int
	var buf []byte
	for b.Loop() {
		e, err := NewEnforcer(p, "eve", Config{})
		if err != nil {
			b.Fatal(err)
		}
		a0, t0 := mallocs(), time.Now()
		for _, r := range raw {
			if buf, err = e.Refine(buf[:0], r); err != nil || len(buf) == 0 {
				b.Fatalf("refine: %q, %v", buf, err)
			}
		}
		a1, t1 := mallocs(), time.Now()
		v := NewVerifier(p)
		for _, r := range refined {
			if f := v.Verify("eve", r); len(f) > 0 {
				b.Fatalf("verify: %v", f)
			}
		}
		a2, t2 := mallocs(), time.Now()
		tRefine += t1.Sub(t0)
		tVerify += t2.Sub(t1)
		aRefine += a1 - a0
		aVerify += a2 - a1
		n += len(raw)
	}
	b.ReportMetric(float64(size)/float64(len(raw)), "B/record")
	b.ReportMetric(float64(tRefine.Nanoseconds())/float64(n), "refine-ns/record")
	b.ReportMetric(float64(tVerify.Nanoseconds())/float64(n), "verify-ns/record")
	b.ReportMetric(float64(aRefine)/float64(n), "refine-allocs/record")
	b.ReportMetric(float64(aVerify)/float64(n), "verify-allocs/record")
	b.ReportMetric(float64(tVerify)/float64(tRefine), "verify/refine")
}
