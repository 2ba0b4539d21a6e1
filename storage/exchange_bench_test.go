package storage

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the CPU time the process has used, user and system: on a shared machine a
// steadier measure than the wall clock, and it counts Badger's flushes and compactions.
func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports records/s and the CPU microseconds per record since cpu0.
func reportRate(b *testing.B, records int, cpu0 time.Duration) {
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(records)/1e3, "cpu-µs/record")
	b.ReportMetric(0, "ns/op")
}

// Batches of the benchmarks: 1000 EVE-sized records of 500 bytes.
const (
	benchBatch      = 1000
	benchRecordSize = 500
)

func benchRecords(n, size int) [][]byte {
	recs := make([][]byte, n)
	for i := range recs {
		r := make([]byte, size)
		for j := range r {
			r[j] = byte('a' + (i+j)%26)
		}
		recs[i] = r
	}
	return recs
}

// BenchmarkEnqueue enqueues batches of 1000 500-byte records, fsynced, from 1 goroutine and
// from 4 (each its own SSA, sharing fsyncs). It reports records/s.
func BenchmarkEnqueue(b *testing.B) {
	recs := benchRecords(benchBatch, benchRecordSize)
	for _, goroutines := range []int{1, 4} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			s := openTest(b, b.TempDir(), Options{})
			b.SetBytes(benchBatch * benchRecordSize)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			var wg sync.WaitGroup
			per := (b.N + goroutines - 1) / goroutines
			for g := range goroutines {
				wg.Go(func() {
					for range per {
						if _, err := s.Enqueue(fmt.Sprintf("ssa-%d", g), recs, benchBatch, 0); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			reportRate(b, per*goroutines*benchBatch, cpu0)
		})
	}
}

// BenchmarkReceive stores batches of 1000 500-byte records, fsynced, in one inbox. It
// reports records/s.
func BenchmarkReceive(b *testing.B) {
	recs := benchRecords(benchBatch, benchRecordSize)
	s := openTest(b, b.TempDir(), Options{})
	b.SetBytes(benchBatch * benchRecordSize)
	at := time.Now()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := range b.N {
		if _, _, err := s.Receive("ssa-bench", uint64(i*benchBatch+1), recs, at, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, b.N*benchBatch, cpu0)
}

// BenchmarkPendingAck drains an outbox as the agent does: Pending (1000 records, 1 MiB),
// MarkSent, Ack of the batch. The records are enqueued before the timer starts. It reports
// records/s.
func BenchmarkPendingAck(b *testing.B) {
	recs := benchRecords(benchBatch, benchRecordSize)
	s := openTest(b, b.TempDir(), Options{})
	for range b.N {
		if _, err := s.Enqueue("ssa-bench", recs, benchBatch, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(benchBatch * benchRecordSize)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	var acked uint64
	for range b.N {
		p, err := s.Pending("ssa-bench", acked, benchBatch, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		if len(p) != benchBatch {
			b.Fatalf("%d records pending", len(p))
		}
		last := p[len(p)-1].Seq
		if err := s.MarkSent("ssa-bench", last); err != nil {
			b.Fatal(err)
		}
		if err := s.Ack("ssa-bench", last); err != nil {
			b.Fatal(err)
		}
		acked = last
	}
	b.StopTimer()
	reportRate(b, b.N*benchBatch, cpu0)
}

// BenchmarkExchange runs the storage side of the Exchange phase end to end, as the two agents
// do, with a provider store and a requester store (each its own Badger, fsynced): per op, the
// provider enqueues a batch of 1000 500-byte records, reads it back (Pending), the requester
// stores it (Receive), and the provider records the ack (MarkSent, Ack). One goroutine per
// SSA, with ssas SSAs at once. It reports records/s and CPU per record for both stores.
func BenchmarkExchange(b *testing.B) {
	recs := benchRecords(benchBatch, benchRecordSize)
	for _, ssas := range []int{1, 4} {
		b.Run(fmt.Sprintf("ssas=%d", ssas), func(b *testing.B) {
			provider := openTest(b, b.TempDir(), Options{})
			requester := openTest(b, b.TempDir(), Options{})
			b.SetBytes(benchBatch * benchRecordSize)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			per := (b.N + ssas - 1) / ssas
			var wg sync.WaitGroup
			for g := range ssas {
				wg.Go(func() {
					ssa := fmt.Sprintf("ssa-%d", g)
					var acked uint64
					for range per {
						if _, err := provider.Enqueue(ssa, recs, benchBatch, 0); err != nil {
							b.Error(err)
							return
						}
						p, err := provider.Pending(ssa, acked, benchBatch, 1<<20)
						if err != nil {
							b.Error(err)
							return
						}
						batch := make([][]byte, len(p))
						for i, r := range p {
							batch[i] = r.Data
						}
						last := p[len(p)-1].Seq
						if err := provider.MarkSent(ssa, last); err != nil {
							b.Error(err)
							return
						}
						if _, _, err := requester.Receive(ssa, p[0].Seq, batch, time.Now(), 0); err != nil {
							b.Error(err)
							return
						}
						if err := provider.Ack(ssa, last); err != nil {
							b.Error(err)
							return
						}
						acked = last
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			reportRate(b, per*ssas*benchBatch, cpu0)
		})
	}
}
