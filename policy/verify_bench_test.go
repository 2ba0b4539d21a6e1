//go:build linux

package policy

import (
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// clockThreadCPU is Linux's CLOCK_THREAD_CPUTIME_ID: the CPU time of the calling thread,
// to the nanosecond (getrusage's RUSAGE_THREAD moves by scheduler ticks).
const clockThreadCPU = 3

// threadCPU is the CPU time the calling thread has used; the goroutine must be locked to it.
func threadCPU(tb testing.TB) time.Duration {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPU, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		tb.Fatal(errno)
	}
	return time.Duration(ts.Nano())
}

// mallocs is the number of heap allocations so far.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// BenchmarkVerifyVsRefine measures, in one run and interleaved so that the machine's load
// cancels out, the provider's refine (an Enforcer, as ingest runs it) and the requester's
// verify (a Verifier, as the agent checks a received batch) on the same records of each
// format, 8-bit truncation of every public address and a filter; verify/refine is the ratio
// of their times per record. With the first filter of a format (eve-kind, idmef-kind, …) the
// filter reads a string field that the masking may have changed, so verify cannot evaluate
// it; with the second (…-int-field) it reads a number, which verify evaluates too.
func BenchmarkVerifyVsRefine(b *testing.B) {
	for _, format := range benchFormats {
		for _, f := range benchSamples[format].filters {
			b.Run(format+"-"+f.name, func(b *testing.B) {
				pol := benchPolicy()
				pol.Filtering[0].Expr = f.expr
				benchVerifyVsRefine(b, mustCompile(b, ssaFor(pol, format)), format)
			})
		}
	}
}

func benchVerifyVsRefine(b *testing.B, p *SSP, format string) {
	raw, refined := benchRefined(b, p, format, 2000)
	var size int
	for _, r := range raw {
		size += len(r)
	}
	var buf []byte
	refine := func(e *Enforcer, recs [][]byte) {
		var err error
		for _, r := range recs {
			if buf, err = e.Refine(buf[:0], r); err != nil || len(buf) == 0 {
				b.Fatalf("refine: %q, %v", buf, err)
			}
		}
	}
	verify := func(v *Verifier, recs [][]byte) {
		for _, r := range recs {
			if f := v.Verify(format, r); len(f) > 0 {
				b.Fatalf("verify: %v", f)
			}
		}
	}
	newEnforcer := func() *Enforcer {
		e, err := NewEnforcer(p, format, Config{})
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	a0 := mallocs()
	refine(newEnforcer(), raw)
	a1 := mallocs()
	verify(NewVerifier(p), refined)
	a2 := mallocs()
	// The two sides take turns every chunk of records, first one then the other, so that
	// both see the same load; each is timed by the CPU time of the benchmark's thread, so
	// that time the machine gives to other work is not counted.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const chunk = 100
	var tRefine, tVerify time.Duration
	var n int
	for b.Loop() {
		e, v := newEnforcer(), NewVerifier(p)
		for i := 0; i < len(raw); i += chunk {
			j := min(i+chunk, len(raw))
			first, second := func() { refine(e, raw[i:j]) }, func() { verify(v, refined[i:j]) }
			t1, t2 := &tRefine, &tVerify
			if i/chunk%2 == 1 {
				first, second, t1, t2 = second, first, t2, t1
			}
			c0 := threadCPU(b)
			first()
			c1 := threadCPU(b)
			second()
			c2 := threadCPU(b)
			*t1 += c1 - c0
			*t2 += c2 - c1
		}
		n += len(raw)
	}
	b.ReportMetric(float64(size)/float64(len(raw)), "B/record")
	b.ReportMetric(float64(tRefine.Nanoseconds())/float64(n), "refine-cpu-ns/record")
	b.ReportMetric(float64(tVerify.Nanoseconds())/float64(n), "verify-cpu-ns/record")
	b.ReportMetric(float64(a1-a0)/float64(len(raw)), "refine-allocs/record")
	b.ReportMetric(float64(a2-a1)/float64(len(raw)), "verify-allocs/record")
	b.ReportMetric(float64(tVerify)/float64(tRefine), "verify/refine")
}

// BenchmarkCodec measures one record per operation, so that ns/op, B/op and allocs/op are
// per record: the provider's refine (an Enforcer) and the requester's verify (a Verifier)
// of the benchmark's records of each format, under benchPolicy with the format's first
// filter.
func BenchmarkCodec(b *testing.B) {
	for _, format := range benchFormats {
		pol := benchPolicy()
		pol.Filtering[0].Expr = benchSamples[format].filters[0].expr
		p := mustCompile(b, ssaFor(pol, format))
		raw, refined := benchRefined(b, p, format, 1000)
		b.Run(format+"/refine", func(b *testing.B) {
			e, err := NewEnforcer(p, format, Config{})
			if err != nil {
				b.Fatal(err)
			}
			var buf []byte
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if buf, err = e.Refine(buf[:0], raw[i%len(raw)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(format+"/verify", func(b *testing.B) {
			v := NewVerifier(p)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if f := v.Verify(format, refined[i%len(refined)]); len(f) > 0 {
					b.Fatalf("verify: %v", f)
				}
				i++
			}
		})
	}
}
