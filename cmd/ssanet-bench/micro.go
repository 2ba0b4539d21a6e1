//go:build linux

package main

import (
	"bytes"
	"fmt"
	"runtime"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// benchPolicy is the SSA's policy of the in-process measures: 8-bit truncation of every
// public address anywhere, and the filter on event.kind.
func benchPolicy() *protocol.Policy {
	return &protocol.Policy{
		Masking:   []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Filtering: []protocol.Filter{{Expr: `r["event.kind"] != "stats"`}},
	}
}

// compileEVE compiles an SSA for EVE records under pol.
func compileEVE(pol *protocol.Policy) (*policy.SSP, error) {
	s := &protocol.SSA{ID: "ssa-bench-0001", Version: 1, Policy: pol,
		Information: []protocol.Information{{Name: "eve", Type: protocol.TypeAttackDetectionLog, Format: "eve"}}}
	return policy.Compile(s, func(string, string) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil })
}

// enforceResult is enforcement against the limit scanner, in one run.
type enforceResult struct {
	Records                   int     `json:"records"`
	RecordBytes               float64 `json:"record_bytes"`
	PerCPUSecond, LimitPerCPU float64 // records per CPU-second
	OfLimit                   float64 `json:"of_limit"`
	Allocs, LimitAllocs       float64 // per record
}

// measureEnforce refines recs rounds times with the enforcer (Refine, record by record) and
// with limitScanner, alternating every 1,000 records, each timed in CPU time of the process
// so that the load of the machine weighs on both alike. The two outputs must be the same
// bytes, or the yardstick measures something else.
func measureEnforce(recs [][]byte, rounds int) (enforceResult, error) {
	p, err := compileEVE(benchPolicy())
	if err != nil {
		return enforceResult{}, err
	}
	newEnforcer := func() (*policy.Enforcer, error) { return policy.NewEnforcer(p, "eve", policy.Config{}) }
	e, err := newEnforcer()
	if err != nil {
		return enforceResult{}, err
	}
	var want, got []byte
	size := 0
	for _, r := range recs {
		size += len(r) + 1
		if want, err = e.Refine(want, r); err != nil {
			return enforceResult{}, fmt.Errorf("refine: %w", err)
		}
		got = limitScanner{}.refine(got, r)
	}
	if !bytes.Equal(got, want) {
		return enforceResult{}, fmt.Errorf("the limit scanner's output differs from the enforcer's: the yardstick is off")
	}
	const chunk = 1000
	var ours, limit time.Duration
	var oursAllocs, limitAllocs uint64
	var ms0, ms1 runtime.MemStats
	buf := make([]byte, 0, 64<<10)
	for range rounds {
		if e, err = newEnforcer(); err != nil {
			return enforceResult{}, err
		}
		for c := 0; c < len(recs); c += chunk {
			part := recs[c:min(c+chunk, len(recs))]
			runtime.ReadMemStats(&ms0)
			start := cpuClock(clockProcessCPU)
			for _, r := range part {
				if buf, err = e.Refine(buf[:0], r); err != nil {
					return enforceResult{}, err
				}
			}
			ours += cpuClock(clockProcessCPU) - start
			runtime.ReadMemStats(&ms1)
			oursAllocs += ms1.Mallocs - ms0.Mallocs

			runtime.ReadMemStats(&ms0)
			start = cpuClock(clockProcessCPU)
			var ls limitScanner
			for _, r := range part {
				buf = ls.refine(buf[:0], r)
			}
			limit += cpuClock(clockProcessCPU) - start
			runtime.ReadMemStats(&ms1)
			limitAllocs += ms1.Mallocs - ms0.Mallocs
		}
	}
	n := float64(rounds * len(recs))
	return enforceResult{Records: len(recs), RecordBytes: float64(size) / float64(len(recs)),
		PerCPUSecond: n / ours.Seconds(), LimitPerCPU: n / limit.Seconds(), OfLimit: limit.Seconds() / ours.Seconds(),
		Allocs: float64(oursAllocs) / n, LimitAllocs: float64(limitAllocs) / n}, nil
}

// verifyResult is the requester's verification against the provider's refining.
type verifyResult struct {
	Refine, Verify time.Duration // CPU per record
	Ratio          float64
}

// measureVerify refines recs (the provider's side, an Enforcer as ingest runs it) and
// verifies the refined records (the requester's, a Verifier as the agent checks a batch),
// rounds times, taking turns every 100 records, each side timed by the CPU time of this
// thread, so that time the machine gives to other work is not counted.
func measureVerify(recs [][]byte, rounds int) (verifyResult, error) {
	p, err := compileEVE(benchPolicy())
	if err != nil {
		return verifyResult{}, err
	}
	e, err := policy.NewEnforcer(p, "eve", policy.Config{})
	if err != nil {
		return verifyResult{}, err
	}
	var raw, refined [][]byte
	for _, r := range recs {
		out, err := e.Refine(nil, r)
		if err != nil {
			return verifyResult{}, err
		}
		if len(out) > 0 {
			raw, refined = append(raw, r), append(refined, bytes.TrimSuffix(out, []byte("\n")))
		}
	}
	if len(raw) == 0 {
		return verifyResult{}, fmt.Errorf("the filter dropped every record")
	}
	var buf []byte
	var failed error
	refine := func(e *policy.Enforcer, recs [][]byte) {
		for _, r := range recs {
			if buf, err = e.Refine(buf[:0], r); err != nil || len(buf) == 0 {
				failed = fmt.Errorf("refine: %q, %v", buf, err)
			}
		}
	}
	verify := func(v *policy.Verifier, recs [][]byte) {
		for _, r := range recs {
			if f := v.Verify("eve", r); len(f) > 0 {
				failed = fmt.Errorf("verify: %v", f)
			}
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const chunk = 100
	var tRefine, tVerify time.Duration
	for range rounds {
		e, err := policy.NewEnforcer(p, "eve", policy.Config{})
		if err != nil {
			return verifyResult{}, err
		}
		v := policy.NewVerifier(p)
		for i := 0; i < len(raw); i += chunk {
			j := min(i+chunk, len(raw))
			first, second := func() { refine(e, raw[i:j]) }, func() { verify(v, refined[i:j]) }
			t1, t2 := &tRefine, &tVerify
			if i/chunk%2 == 1 {
				first, second, t1, t2 = second, first, t2, t1
			}
			c0 := cpuClock(clockThreadCPU)
			first()
			c1 := cpuClock(clockThreadCPU)
			second()
			c2 := cpuClock(clockThreadCPU)
			*t1 += c1 - c0
			*t2 += c2 - c1
		}
		if failed != nil {
			return verifyResult{}, failed
		}
	}
	n := time.Duration(rounds * len(raw))
	return verifyResult{Refine: tRefine / n, Verify: tVerify / n, Ratio: float64(tVerify) / float64(tRefine)}, nil
}
