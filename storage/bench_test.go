package storage

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// BenchmarkCommit commits whole 4-message negotiations (each with its record and index
// entries, and with agreement=true its agreement too) from 1 and 16
// goroutines, each Commit fsynced before it returns. It reports commits/s and commits/txn,
// the number of Commits that shared a transaction and its fsync. mode=badger-txn is the
// baseline without group commit: each Commit in its own Badger transaction, as Badger's
// SyncWrites alone would have it.
func BenchmarkCommit(b *testing.B) {
	f := approvedFixture(b)
	for _, mode := range []string{"group", "badger-txn"} {
		for _, agreed := range []bool{false, true} {
			for _, goroutines := range []int{1, 16} {
				name := fmt.Sprintf("mode=%s/agreement=%t/goroutines=%d", mode, agreed, goroutines)
				b.Run(name, func(b *testing.B) { benchCommit(b, f, mode == "group", agreed, goroutines) })
			}
		}
	}
}

func benchCommit(b *testing.B, f approved, group, agreed bool, goroutines int) {
	var pool []*protocol.SSA
	if agreed {
		pool = agreementPool(b, b.N)
	}
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	}()
	commit := func(n *Negotiation, a *protocol.SSA) error {
		if group {
			return s.Commit(n, f.msgs, a)
		}
		r, err := newCommitRequest(n, f.msgs, a)
		if err != nil {
			return err
		}
		refused, err := s.writeTxn([]request{r})
		if err != nil {
			return err
		}
		return refused[0]
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range goroutines {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				n := &Negotiation{ID: testNID(uint64(i)), Role: protocol.RoleProvider, State: protocol.StateApproved,
					SSAID: fmt.Sprintf("bench-%d", i), Created: t0, Updated: t0}
				var a *protocol.SSA
				if agreed {
					a = pool[i]
					n.SSAID = a.ID
				}
				if err := commit(n, a); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
	b.ReportMetric(float64(b.N)/float64(s.groups.Load()), "commits/txn")
}

// BenchmarkOpenMemory reports the heap in use by an open store, after a GC, for an empty store
// and for one holding 20,000 agreements (each committed with its two messages in one of 159
// negotiations), plain and encrypted. Memory must not grow with the number of records.
func BenchmarkOpenMemory(b *testing.B) {
	const agreements = 20_000
	for _, encrypted := range []bool{false, true} {
		var opts Options
		if encrypted {
			opts.EncryptionKey = bytes.Repeat([]byte{7}, 32)
		}
		for _, count := range []int{0, agreements} {
			b.Run(fmt.Sprintf("encrypted=%t/agreements=%d", encrypted, count), func(b *testing.B) {
				dir := b.TempDir()
				populate(b, dir, opts, count)
				var heap, objects float64
				for b.Loop() {
					before := heapInUse()
					s, err := Open(dir, opts)
					if err != nil {
						b.Fatal(err)
					}
					after := heapInUse()
					heap = float64(after.HeapInuse) - float64(before.HeapInuse)
					objects = float64(after.HeapObjects) - float64(before.HeapObjects)
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(heap/(1<<20), "heap-MiB")
				b.ReportMetric(objects, "heap-objects")
			})
		}
	}
}

func heapInUse() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// populate commits count agreements to the store in dir, without fsync, the way an agent
// would: each negotiation's messages, record, agreement and index, one commit per version.
func populate(b *testing.B, dir string, opts Options, count int) {
	b.Helper()
	s, err := open(dir, opts, false)
	if err != nil {
		b.Fatal(err)
	}
	f := approvedFixture(b)
	var wg sync.WaitGroup
	var failed atomic.Bool
	pool := agreementPool(b, count)
	// Consecutive pool entries share a negotiation, as many as its transcript holds; one
	// goroutine commits each negotiation's versions in order.
	const perNegotiation = (protocol.MaxMessages - 4) / 2
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for g := w; g*perNegotiation < len(pool) && !failed.Load(); g += workers {
				n := &Negotiation{ID: testNID(1<<40 + uint64(g)), Role: protocol.RoleProvider, State: protocol.StateApproved,
					OfferID: "offer-1", Created: t0, Updated: t0, Delivered: true}
				for v, a := range pool[g*perNegotiation : min(len(pool), (g+1)*perNegotiation)] {
					n.SSAID = a.ID
					msgs := f.msgs[2:] // a revision and its confirmation are two messages
					if v == 0 {
						msgs = f.msgs
					}
					if err := s.Commit(n, msgs, a); err != nil {
						b.Error(err)
						failed.Store(true)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	stored := 0
	err = s.view(func(txn *badger.Txn) error {
		return scan(txn, []byte(prefixAgreement), func(k, v []byte) error { stored++; return nil })
	})
	if err != nil || stored != count {
		b.Fatalf("%d agreements stored (%v), want %d", stored, err, count)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
