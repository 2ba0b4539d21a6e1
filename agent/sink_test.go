package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

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
	sk, err := newSinks(req, []SinkConfig{{Name: "big", Type: "jsonl", Path: path, Relation: "organisation"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.close)
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
