package storage

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReserveRefusesRecords: with a reserve above the volume's free space, records are refused
// with ErrDiskFull (naming the free and needed bytes), nothing is written, and the writes that
// do not add records go on; with the reserve met again, records are taken.
func TestReserveRefusesRecords(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	if _, err := s.Enqueue("a", [][]byte{[]byte("r1")}, 1, 0); err != nil {
		t.Fatal(err)
	}
	sp, err := s.Space()
	if err != nil {
		t.Fatal(err)
	}
	if sp.Paused || sp.Margin < MinReserve || sp.Reserve < DefaultReserve {
		t.Fatalf("space %+v: want not paused, reserve >= %d, margin >= %d", sp, DefaultReserve, MinReserve)
	}
	if sp.Free < sp.Reserve+1<<20 {
		t.Skipf("the volume of the test's temporary directory has %d bytes free, under the reserve", sp.Free)
	}
	s.reserve = sp.Free + 1<<40 // the committer reads it after the next request's send

	tests := []struct {
		name  string
		write func() error
	}{
		{"enqueue", func() error { _, err := s.Enqueue("a", [][]byte{[]byte("r2")}, 1, 0); return err }},
		{"receive", func() error { _, _, err := s.Receive("b", 1, [][]byte{[]byte("r1")}, time.Now(), 0); return err }},
		{"large enqueue", func() error {
			_, err := s.Enqueue("a", make([][]byte, maxGroupEntries+1), 0, 0)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.write()
			if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "bytes free") {
				t.Fatalf("%v, want ErrDiskFull naming the free bytes", err)
			}
		})
	}
	if sp, _ := s.Space(); !sp.Paused {
		t.Errorf("space %+v not paused", sp)
	}
	if st, _ := s.OutboxState("a"); st.Refined != 1 || st.Ingested != 1 {
		t.Errorf("outbox %+v after refused enqueues, want the first record only", st)
	}
	if in, _ := s.InboxState("b"); in.Last != 0 {
		t.Errorf("inbox %+v after a refused receive, want empty", in)
	}
	if err := s.Ack("a", 1); err != nil { // above the margin: an acknowledgement is written
		t.Fatalf("ack below the reserve: %v", err)
	}

	s.reserve = DefaultReserve
	if last, err := s.Enqueue("a", [][]byte{[]byte("r2")}, 1, 0); err != nil || last != 2 {
		t.Fatalf("enqueue with space again: last %d, %v", last, err)
	}
}

func TestValidateReserve(t *testing.T) {
	tests := []struct {
		reserve uint64
		ok      bool
	}{{0, true}, {MinReserve, true}, {DefaultReserve, true}, {MinReserve - 1, false}, {1 << 20, false}}
	for _, tc := range tests {
		err := (&Options{Reserve: tc.reserve}).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("reserve %d: %v, want ok %v", tc.reserve, err, tc.ok)
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted at cleanup. It skips
// the test when not root or when mounting is not permitted.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("mount tmpfs: %v (mounting is not permitted here)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestOpenFullVolume: a store is not opened on a volume with less than the margin free, with
// an error naming the free and needed bytes; records are refused before the volume fills,
// and Badger never crashes the process.
func TestOpenFullVolume(t *testing.T) {
	vol := mountTmpfs(t, 64<<20)
	dir := filepath.Join(vol, "data")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the unmount
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	// Random records, each its own: the blocks of the segment files are compressed.
	const size = 4000
	rng := rand.NewChaCha8([32]byte{1})
	var refused error
	for i := 0; i < 64<<20/size/100+1 && refused == nil; i++ { // at most the volume, 100 at a time
		recs := make([][]byte, 100)
		for j := range recs {
			recs[j] = make([]byte, size)
			_, _ = rng.Read(recs[j])
		}
		_, refused = s.Enqueue("a", recs, 100, 0)
	}
	if !errors.Is(refused, ErrDiskFull) {
		t.Fatalf("filling a 64 MiB volume: %v, want ErrDiskFull", refused)
	}
	st, err := s.OutboxState("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A filler leaves less than the margin: Open refuses, and says how much it needs.
	free, err := freeBytes(vol)
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(vol, "filler")
	if free > MinReserve/2 {
		if err := os.WriteFile(filler, make([]byte, free-MinReserve/2), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "needed") {
		t.Fatalf("open with %d bytes free: %v, want ErrDiskFull", MinReserve/2, err)
	}
	if err := os.Remove(filler); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if got, err := s.OutboxState("a"); err != nil || got.Refined != st.Refined {
		t.Fatalf("after reopening: %+v, %v; want %d records", got, err, st.Refined)
	}
}
