package storage

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// eveRecords returns n Suricata EVE records: the public samples in policy/testdata/eve in
// turn (16 events), each with a random source address, time, flow ID and source port
// (added as fields before the sample's own: 790 bytes on average).
func eveRecords(t testing.TB, n int) [][]byte {
	t.Helper()
	var lines [][]byte
	for _, f := range []string{"test-eve-small.jsonl", "test-eve-6-0.jsonl", "test-eve-metadata.jsonl"} {
		b, err := os.ReadFile(filepath.Join("..", "policy", "testdata", "eve", f))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, bytes.Split(bytes.TrimSpace(b), []byte("\n"))...)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	for i := range out {
		l := lines[i%len(lines)]
		l = bytes.Replace(l, []byte(`"src_ip":"192.168.`), fmt.Appendf(nil, `"src_ip":"%d.%d.`, 11+rnd.IntN(200), rnd.IntN(250)), 1)
		l = bytes.Replace(l, []byte(`"timestamp":"`), fmt.Appendf(nil, `"timestamp":"2026-12-06T14:%02d:%02d.%06d+0000","sensor_time":"`, i/60000%60, i/1000%60, rnd.IntN(1000000)), 1)
		l = bytes.Replace(l, []byte(`"flow_id":`), fmt.Appendf(nil, `"flow_id":%d,"first_flow_id":`, rnd.Int64N(1<<50)), 1)
		l = bytes.Replace(l, []byte(`"src_port":`), fmt.Appendf(nil, `"src_port":%d,"first_src_port":`, 1024+rnd.IntN(64000)), 1)
		out[i] = l
	}
	return out
}

// storeFiles returns the disk space (allocated blocks) of the store's tables, value log
// files and segment files in dir.
func storeFiles(t testing.TB, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	records, _ := recordsDisk(t, dir)
	n := records
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sst") && !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		info, err := e.Info()
		if os.IsNotExist(err) {
			continue // deleted since ReadDir
		}
		if err != nil {
			t.Fatal(err)
		}
		n += info.Sys().(*syscall.Stat_t).Blocks * 512
	}
	return n
}

// receiveEVE stores recs in the inbox of "ssa" in batches of 200, record i received at
// t0 + i ms.
func receiveEVE(t testing.TB, s *Store, recs [][]byte) {
	t.Helper()
	for i := 0; i < len(recs); i += 200 {
		if _, _, err := s.Receive("ssa", uint64(i+1), recs[i:min(i+200, len(recs))], t0.Add(time.Duration(i)*time.Millisecond), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetentionReturnsDisk: records that retention deletes leave the disk within two
// retention passes (each followed by the value log's garbage collection, as its ticker
// would run it), so that what is left is within 10 % of the records kept.
func TestRetentionReturnsDisk(t *testing.T) {
	const n, keep = 40000, 4000
	recs := eveRecords(t, n)
	live := 0
	for _, r := range recs[n-keep:] {
		live += len(r)
	}
	for name, opts := range map[string]Options{"plain": {}, "encrypted": {EncryptionKey: bytes.Repeat([]byte{7}, 32)}} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := open(dir, opts, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			receiveEVE(t, s, recs)
			full := storeFiles(t, dir)
			cut := t0.Add(time.Duration(n-keep) * time.Millisecond)
			deleted := 0
			for range 2 {
				d, err := s.DeleteRecordsReceivedBefore("ssa", cut)
				if err != nil {
					t.Fatal(err)
				}
				deleted += d
				for range 100 {
					if !s.gcOnce() {
						break
					}
				}
			}
			if deleted != n-keep {
				t.Fatalf("retention deleted %d records, want %d", deleted, n-keep)
			}
			// Badger deletes a file when its last reader lets go of it: wait for that.
			bound := int64(live) * 11 / 10
			var left int64
			start := time.Now()
			for deadline := start.Add(10 * time.Second); ; {
				if left = storeFiles(t, dir); left <= bound || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("%d records: %d bytes of files; %d deleted, %d kept (%d bytes): %d bytes of files %v later", n, full, deleted, keep, live, left, time.Since(start))
			if left > bound {
				t.Errorf("after retention deleted %d of %d records, the store's files take %d bytes, more than 110 %% of the %d bytes kept", deleted, n, left, live)
			}
			got, err := s.Records("ssa", 0, keep+1, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != keep || got[0].Seq != n-keep+1 || !bytes.Equal(got[keep-1].Data, recs[n-1]) {
				t.Fatalf("%d records left, from %d, want %d from %d", len(got), got[0].Seq, keep, n-keep+1)
			}
		})
	}
}

// BenchmarkRetentionDisk stores 100,000 EVE records (eveRecords) in one inbox, then deletes
// the oldest 90 % by retention, twice, each time followed by the value log's garbage
// collection. It reports the disk the store's files take per million records
// (disk-GB/M-records, extrapolated) and, after the deletions, their size over the raw size of
// the records kept (after/live), with the CPU per record stored and deleted and the longest
// retention pass (wall clock). Sizes are allocated blocks of the .sst, .vlog and segment
// files, measured with the store closed (memtables flushed).
func BenchmarkRetentionDisk(b *testing.B) {
	const n, keep = 100000, 10000
	recs := eveRecords(b, n)
	raw, live := 0, 0
	for i, r := range recs {
		raw += len(r)
		if i >= n-keep {
			live += len(r)
		}
	}
	reopen := func(dir string) *Store {
		s, err := open(dir, Options{}, true)
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	var full, after int64
	var cpu, reclaim, pass time.Duration
	for range b.N {
		dir := b.TempDir()
		s := reopen(dir)
		cpu0 := cpuTime(b)
		receiveEVE(b, s, recs)
		cpu += cpuTime(b) - cpu0
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		full = storeFiles(b, dir)
		s = reopen(dir)
		cpu0 = cpuTime(b)
		for range 2 {
			start := time.Now()
			if _, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add((n-keep)*time.Millisecond)); err != nil {
				b.Fatal(err)
			}
			pass = max(pass, time.Since(start))
			for range 1000 {
				if !s.gcOnce() {
					break
				}
			}
		}
		reclaim += cpuTime(b) - cpu0
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		after = storeFiles(b, dir)
	}
	b.ReportMetric(float64(raw)/n, "raw-B/record")
	b.ReportMetric(float64(full)/n*1e6/1e9, "disk-GB/M-records")
	b.ReportMetric(float64(after)/float64(live), "after/live")
	b.ReportMetric(float64(cpu)/float64(b.N*n)/1e3, "write-cpu-µs/record")
	b.ReportMetric(float64(reclaim)/float64(b.N*(n-keep))/1e3, "delete-cpu-µs/record")
	b.ReportMetric(float64(pass)/1e6, "retention-pass-ms")
	b.ReportMetric(0, "ns/op")
}

// TestRetentionBesideWrites: writes to another queue go on while retention takes records out
// of the index and gives their disk back, and neither fails.
func TestRetentionBesideWrites(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const n = 3000
	receiveEVE(t, s, eveRecords(t, n))
	stop, written := make(chan struct{}), make(chan error, 1)
	go func() {
		small := records("busy", 1, 10, 100)
		for range 1_000_000 { // until stopped; the bound only keeps the loop finite
			select {
			case <-stop:
				written <- nil
				return
			default:
			}
			if _, err := s.Enqueue("busy", small, 10, 0); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	// Three passes while the writes go on.
	for i := range 3 {
		if _, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Duration(800*(i+1))*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-written; err != nil {
		t.Fatalf("a write beside retention: %v", err)
	}
	checkIndex(t, s, inboxPrefix("ssa"), 2400, n)
	if got, err := s.Records("ssa", 0, n, 1<<30); err != nil || len(got) != n-2400 || got[0].Seq != 2401 {
		t.Fatalf("%d records readable (%v), want %d from 2401", len(got), err, n-2400)
	}
}

// BenchmarkRetentionSteady streams 150,000 EVE records into one inbox as if 1,000 arrived
// each second, with a retention of 30 seconds checked every 5 (the clock is simulated: the
// records carry their times), and reports the store's files at the end (closed, memtables
// flushed) over the raw size of the records then held (steady-disk/live, live-MB), and the
// most the files took at a check (max-disk-MB, the store open: records still in the
// memtables not counted).
func BenchmarkRetentionSteady(b *testing.B) {
	const n, perSecond, batch = 150000, 1000, 500
	const retention, check = 30 * time.Second, 5 * time.Second
	recs := eveRecords(b, n)
	for range b.N {
		dir := b.TempDir()
		s, err := open(dir, Options{}, true)
		if err != nil {
			b.Fatal(err)
		}
		var most int64
		lastCheck := t0
		for i := 0; i < n; i += batch {
			at := t0.Add(time.Duration(i) * time.Second / perSecond)
			if _, _, err := s.Receive("ssa", uint64(i+1), recs[i:i+batch], at, 0); err != nil {
				b.Fatal(err)
			}
			if at.Sub(lastCheck) >= check {
				lastCheck = at
				if _, err := s.DeleteRecordsReceivedBefore("ssa", at.Add(-retention)); err != nil {
					b.Fatal(err)
				}
				most = max(most, storeFiles(b, dir))
			}
		}
		st, err := s.InboxState("ssa")
		if err != nil {
			b.Fatal(err)
		}
		live := 0
		for _, r := range recs[st.Deleted:st.Last] {
			live += len(r)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(storeFiles(b, dir))/float64(live), "steady-disk/live")
		b.ReportMetric(float64(most)/(1<<20), "max-disk-MB")
		b.ReportMetric(float64(live)/(1<<20), "live-MB")
	}
	b.ReportMetric(0, "ns/op")
}
