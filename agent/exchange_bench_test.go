package agent

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// evePayload returns n EVE alerts dated inside the test SSA's schedule, with public source
// addresses that the agreed masking truncates.
func evePayload(t testing.TB, n int) []byte {
	t.Helper()
	lines := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	var out bytes.Buffer
	for i := 0; i < n; i++ {
		l := lines[i%len(lines)]
		l = bytes.Replace(l, []byte(`"src_ip":"192.168.`), []byte(fmt.Sprintf(`"src_ip":"%d.%d.`, 11+i%200, i%250)), 1)
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// BenchmarkExchangeThroughput measures records per second from ingest at the provider to the
// requester's store, with durable storage on both sides and verification at the requester,
// and the CPU time (user and system) the process, both agents together, used per record
// meanwhile: the figure that does not depend on how busy the machine is.
func BenchmarkExchangeThroughput(b *testing.B) {
	ctx := context.Background()
	prov, req, s := exchangePair(b)
	const chunk = 10000
	payload := evePayload(b, chunk)
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU(b)
	var want uint64
	for i := 0; i < b.N; i++ {
		st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(payload))
		if err != nil {
			b.Fatal(err)
		}
		want += uint64(st.Queued[s.ID])
	}
	for {
		st, err := req.store.InboxState(s.ID)
		if err != nil {
			b.Fatal(err)
		}
		if st.Last >= want {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	el, cpu := time.Since(start), processCPU(b)-cpu0
	b.StopTimer()
	b.ReportMetric(float64(want)/el.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(want), "cpu-µs/record")
}

// BenchmarkExchangeLatency feeds records at a steady 1,000 records/s (100 every 100 ms) for
// b.N seconds and reports the provider's delivery latency percentiles (queued to
// acknowledged by the requester's durable store).
func BenchmarkExchangeLatency(b *testing.B) {
	ctx := context.Background()
	prov, _, s := exchangePair(b)
	payload := evePayload(b, 100)
	b.ResetTimer()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 10*b.N; i++ {
		<-tick.C
		if _, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(payload)); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	p50, _, p99 := prov.mgr.run(s.ID).latencies()
	b.ReportMetric(float64(p50), "p50-ms")
	b.ReportMetric(float64(p99), "p99-ms")
}

// BenchmarkIdleAgreements measures what SSAs in force cost while nothing is shared: two
// agents negotiate 2,000 SSAs (the provider runs a delivery loop for each), then the process
// is watched for b.N seconds with no records. It reports the CPU used, as a share of one core,
// and the goroutines and the memory (stacks and heap) added per SSA in force on the two agents
// together.
func BenchmarkIdleAgreements(b *testing.B) {
	const n = 2000
	prov, req, tmpl := benchPair(b)
	before := memoryInUse()
	goroutines := runtime.NumGoroutine()
	runConcurrent(b, n, 16, func(ctx context.Context, _ uint64) error {
		rec, err := req.Request(ctx, addrInfo(prov), tmpl)
		if err == nil && rec.State != protocol.StateApproved {
			err = fmt.Errorf("negotiation ended %s", rec.State)
		}
		return err
	})
	if got := len(prov.mgr.providerRuns()); got != n {
		b.Fatalf("%d SSAs in force at the provider, want %d", got, n)
	}
	time.Sleep(time.Second) // the negotiations' last writes and compactions settle
	b.ResetTimer()
	cpu0, t0 := processCPU(b), time.Now()
	time.Sleep(time.Duration(b.N) * time.Second)
	cpu, el := processCPU(b)-cpu0, time.Since(t0)
	b.StopTimer()
	b.ReportMetric(100*cpu.Seconds()/el.Seconds(), "%-of-a-core")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/n, "goroutines/SSA")
	b.ReportMetric(float64(memoryInUse()-before)/n, "bytes/SSA")
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memoryInUse is the Go heap and stacks in use after a collection.
func memoryInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}
