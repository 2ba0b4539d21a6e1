package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// benchEVE is n EVE records cycled from the samples, with varied public source addresses.
func benchEVE(tb testing.TB, n int) []byte {
	var lines [][]byte
	for _, f := range []string{"eve/test-eve-small.jsonl", "eve/test-eve-6-0.jsonl", "eve/test-eve-metadata.jsonl"} {
		for _, l := range bytes.Split(readTestdata(tb, f), []byte("\n")) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines = append(lines, l)
			}
		}
	}
	var b bytes.Buffer
	for i := range n {
		l := lines[i%len(lines)]
		ip := fmt.Sprintf("81.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		b.Write(bytes.Replace(l, []byte(`"src_ip":"192.168.86.85"`), []byte(`"src_ip":"`+ip+`"`), 1))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// benchPolicy is the benchmark's SSA: 8-bit truncation of every public address anywhere,
// and a filter.
func benchPolicy() *protocol.Policy {
	return &protocol.Policy{
		Masking:   []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Filtering: []protocol.Filter{{Expr: `r["event.kind"] != "stats"`}},
	}
}

// BenchmarkEVE measures parse + mask + filter + write of EVE records through Run.
func BenchmarkEVE(b *testing.B) {
	in := benchEVE(b, 20000)
	p := mustCompile(b, ssaFor(benchPolicy(), "eve"))
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		e, err := NewEnforcer(p, "eve", Config{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Run(context.Background(), bytes.NewReader(in), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*20000/time.Since(start).Seconds(), "records/s")
}

// BenchmarkTopNMemory measures the memory a top-N summarisation holds after 1,000,000
// distinct addresses in one window: bounded by SketchCapacity, not by the addresses.
func BenchmarkTopNMemory(b *testing.B) {
	for _, n := range []uint32{10, 1000} {
		b.Run(fmt.Sprintf("top%d", n), func(b *testing.B) {
			var held float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				s := newSummarizer(protocol.Summarization{GroupBy: "source.ip", RankBy: "source.bytes", TopN: n, Window: 3600}, "bench")
				ts := time.Unix(1700000000, 0)
				for i := range 1_000_000 {
					a := netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
					s.add(ts, a.String(), true, int64(1+i%1500))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = float64(after.HeapAlloc) - float64(before.HeapAlloc)
				runtime.KeepAlive(s)
			}
			b.ReportMetric(held, "bytes")
			b.ReportMetric(float64(SketchCapacity(int(n))), "counters")
		})
	}
}
