package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// startSinks starts sinks of a's records beside a's own, until the end of the test.
func startSinks(t *testing.T, a *Agent, log *slog.Logger, cfgs ...SinkConfig) *sinks {
	t.Helper()
	sk, err := newSinks(a.store, filepath.Join(a.home, SinksDir), cfgs, a.mgr.requesterRuns, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.close)
	return sk
}

// heapPeak samples the heap in use every 20 ms until stop (or the end of the test), which
// returns the highest sample.
func heapPeak(t *testing.T) (stop func() uint64) {
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var ms runtime.MemStats
		var high uint64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			high = max(high, ms.HeapInuse)
			select {
			case <-done:
				peak <- high
				return
			case <-t.C:
			}
		}
	}()
	stop = sync.OnceValue(func() uint64 {
		close(done)
		return <-peak
	})
	t.Cleanup(func() { stop() })
	return stop
}

// A provider can send records of up to 1 MiB that are not JSON, which the requester stores
// even when they violate the SSA, and JSON escapes a control byte to 6 bytes: the forwarder
// once read 512 of them at a time and encoded a whole chunk at once (63 records of 0x01 took
// the heap from 33 MiB to 1.5 GiB). It must hold a bounded chunk, encode one record at a
// time, and still deliver each record once, in order.
func TestForwardLargeRecordsBoundedMemory(t *testing.T) {
	const (
		n     = 63
		size  = 1<<20 - 16
		limit = 256 << 20 // peak heap above the baseline
	)
	_, req, s := exchangePair(t)
	rec := bytes.Repeat([]byte{1}, size)
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = rec
	}
	if _, _, err := req.store.Receive(s.ID, 1, recs, time.Now(), n); err != nil {
		t.Fatal(err)
	}
	_, text := req.mgr.run(s.ID).untag(rec)
	// What a line ends with: the text, each byte escaped, and the end of the object.
	wantTail := append(bytes.Repeat([]byte(`\u0001`), len(text)), "\"}\n"...)

	// The sink writes to a FIFO that the test reads as it goes, so that the 380 MB of JSON
	// Lines never reach the disk. Opened for reading and writing, it does not wait for the
	// sink to open it.
	path := filepath.Join(t.TempDir(), "records.jsonl")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fifo.Close() // before the sinks stop (t.Cleanup): a sink blocked on a full FIFO gets EPIPE
	if err := fifo.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := heapPeak(t)
	sk := startSinks(t, req, req.log, SinkConfig{Name: "big", Type: "jsonl", Path: path, Relation: "organisation"})
	r := bufio.NewReaderSize(fifo, 64<<10)
	for seq := uint64(1); seq <= n; seq++ {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("record %d: %v", seq, err)
		}
		head, tail, ok := bytes.Cut(line, []byte(`,"text":"`))
		var got ForwardedRecord
		if err := json.Unmarshal(append(head, '}'), &got); !ok || err != nil || got.SSAID != s.ID || got.Seq != seq || !bytes.Equal(tail, wantTail) {
			t.Fatalf("line %d is not record %d of %s as text (%d bytes; %v): %.200q", seq, seq, s.ID, len(line), err, line)
		}
	}
	sk.close()
	peak := stop()
	t.Logf("heap in use: %d MiB before forwarding, peak %d MiB", base>>20, peak>>20)
	if peak > base+limit {
		t.Errorf("forwarding %d records of %d bytes took the heap from %d MiB to %d MiB, more than %d MiB above", n, size, base>>20, peak>>20, limit>>20)
	}

	// Nothing came twice, and the sink's progress is at the end.
	fifo.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := r.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after record %d, the sink wrote %q (%v)", n, b, err)
	}
	b, err := os.ReadFile(filepath.Join(req.home, "sinks", "big.json"))
	var progress map[string]uint64
	if err != nil || json.Unmarshal(b, &progress) != nil || progress[s.ID] != n {
		t.Errorf("sink progress %s (%v), want %d for %s", b, err, n, s.ID)
	}

	// The control API's reads (ssanet records) are bounded alike.
	got, err := req.Records(s.ID, 0, 1000)
	if want := forwardBytes / size; err != nil || len(got) != want {
		t.Errorf("Records: %d records (%v), want %d of %d bytes in %d bytes", len(got), err, want, size, forwardBytes)
	}
}

// TestQuarantine: records that do not comply with the SSA (here raw ones from a provider
// that skipped its enforcement point, among refined ones) are kept and shown as quarantined,
// and a sink receives only the others.
func TestQuarantine(t *testing.T) {
	prov, req, s := exchangePair(t)
	run := prov.mgr.run(s.ID)
	lines := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	refined, _, err := run.refine(protocol.FormatEVE, lines, time.Now().Year(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	for _, l := range lines {
		raws = append(raws, append([]byte{0}, l...))
	}
	for _, recs := range [][][]byte{refined, raws} { // a compliant batch, then a violating one
		if _, err := prov.store.Enqueue(s.ID, recs, uint64(len(recs)), 0); err != nil {
			t.Fatal(err)
		}
	}
	n := uint64(len(refined) + len(raws))
	prov.deliver.wake(run)
	waitRecords(t, req, s.ID, n)

	held, err := req.Records(s.ID, 0, 1000)
	if err != nil || uint64(len(held)) != n {
		t.Fatalf("%d records held, want %d: %v", len(held), n, err)
	}
	want := map[uint64]bool{} // the sequence numbers a sink must receive
	for _, r := range held {
		if r.Seq <= uint64(len(refined)) && r.Quarantined {
			t.Fatalf("refined record %d quarantined", r.Seq)
		}
		if !r.Quarantined {
			want[r.Seq] = true
		}
	}
	if len(want) == len(held) {
		t.Fatal("no raw record was quarantined: nothing to test")
	}

	path := filepath.Join(t.TempDir(), "records.jsonl")
	startSinks(t, req, req.log, SinkConfig{Name: "q", Type: "jsonl", Path: path, Relation: "organisation"})
	waitFor(t, 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(req.home, "sinks", "q.json"))
		var progress map[string]uint64
		return json.Unmarshal(b, &progress) == nil && progress[s.ID] == n, "sink progress " + string(b)
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r ForwardedRecord
		if err := json.Unmarshal(line, &r); err != nil || !want[r.Seq] || got[r.Seq] || r.Quarantined {
			t.Fatalf("the sink got %s (%v)", line, err)
		}
		got[r.Seq] = true
	}
	if len(got) != len(want) {
		t.Fatalf("the sink got %d records, want the %d that comply", len(got), len(want))
	}
}

// TestSinkProgressCorrupt: a sink whose progress file cannot be read forwards nothing (rather
// than every record again) and says in the log what to do; the other sinks go on.
func TestSinkProgressCorrupt(t *testing.T) {
	_, req, s := exchangePair(t)
	if _, _, err := req.store.Receive(s.ID, 1, [][]byte{append([]byte{0}, `{"event_type":"alert"}`...)}, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	progress := filepath.Join(req.home, SinksDir, "broken.json")
	if err := os.MkdirAll(filepath.Dir(progress), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(progress, []byte(`{"`+s.ID+`": 1`), 0o600); err != nil { // cut short
		t.Fatal(err)
	}
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	dir := t.TempDir()
	broken, good := filepath.Join(dir, "broken.jsonl"), filepath.Join(dir, "good.jsonl")
	startSinks(t, req, log, SinkConfig{Name: "broken", Type: "jsonl", Path: broken, Relation: "organisation"},
		SinkConfig{Name: "good", Type: "jsonl", Path: good, Relation: "organisation"})
	waitFor(t, 10*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(good)
		return bytes.Count(b, []byte("\n")) == 1, "the good sink got " + string(b)
	})
	waitFor(t, 10*time.Second, func() (bool, string) {
		return logged.count("sink stopped") == 1 && logged.count(progress) == 1 && logged.count("remove it") == 1,
			"no log line says the sink stopped and what to do"
	})
	if b, err := os.ReadFile(broken); err != nil || len(b) != 0 {
		t.Fatalf("the sink with a corrupt progress file wrote %q (%v)", b, err)
	}
}
