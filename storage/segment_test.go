package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// smallSegments makes the segment files of the stores the test opens size bytes (see
// segmentSize), until it ends.
func smallSegments(t testing.TB, size int64) {
	t.Helper()
	old := segmentSize
	segmentSize = size
	t.Cleanup(func() { segmentSize = old })
}

// randomRecord is record seq of an SSA in these tests, of size bytes: its tag, then random
// bytes from seq, which do not compress.
func randomRecord(ssaID string, seq uint64, size int) []byte {
	b := fmt.Appendf(make([]byte, 0, size+8), "%s#%d|", ssaID, seq)
	rng := rand.New(rand.NewPCG(seq, uint64(len(ssaID))))
	for len(b) < size {
		b = binary.LittleEndian.AppendUint64(b, rng.Uint64())
	}
	return b[:size]
}

func randomRecords(ssaID string, first uint64, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = randomRecord(ssaID, first+uint64(i), size)
	}
	return out
}

// checkRandom checks that records are randomRecord's from..to of the SSA, of size bytes.
func checkRandom[R QueuedRecord | StoredRecord](t testing.TB, ssaID string, got []R, from, to uint64, size int) {
	t.Helper()
	if uint64(len(got)) != to-from+1 && !(from > to && len(got) == 0) {
		t.Fatalf("%d records, want %d to %d", len(got), from, to)
	}
	for i, r := range got {
		var seq uint64
		var data []byte
		switch r := any(r).(type) {
		case QueuedRecord:
			seq, data = r.Seq, r.Data
		case StoredRecord:
			seq, data = r.Seq, r.Data
		}
		if seq != from+uint64(i) || !bytes.Equal(data, randomRecord(ssaID, seq, size)) {
			t.Fatalf("record %d of %d to %d: seq %d, %d bytes, not the record enqueued", i, from, to, seq, len(data))
		}
	}
}

// pending returns every record of an SSA's outbox, and records every record of its inbox.
func pending(t testing.TB, s *Store, ssaID string) []QueuedRecord {
	t.Helper()
	got, err := s.Pending(ssaID, 0, 1<<30, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func stored(t testing.TB, s *Store, ssaID string) []StoredRecord {
	t.Helper()
	got, err := s.Records(ssaID, 0, 1<<30, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// segFiles returns the sizes of the files in the store's records directory, by name.
func segFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, segmentDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		if _, _, ok := parseSegmentName(e.Name()); !ok {
			continue // not the store's (TestSegmentRecovery)
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Size()
	}
	return out
}

// recordsDisk returns the disk the files of the store's records directory take (allocated
// blocks) and their sizes, in all.
func recordsDisk(t testing.TB, dir string) (allocated, size int64) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, segmentDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		allocated += info.Sys().(*syscall.Stat_t).Blocks * 512
		size += info.Size()
	}
	return allocated, size
}

// emptyDisk bounds the disk that a queue's file appended to takes once every block in it is
// dead and punched out: the file system's block that its end is in, and one of the file
// system's own (ext4 counts the blocks of a file's extent tree).
const emptyDisk = 2 * punchAlign

// blockPath returns the path of the file that holds the block of a queue's index entry.
func blockPath(s *Store, prefix []byte, ref blockRef) string {
	return filepath.Join(s.dir, segmentDir, segmentName(queueFileName(prefix), ref.file))
}

// checkSegmentFiles checks the records directory as Open leaves it: it holds the files the
// index points into and no other, each cut at the end of its last indexed block.
func checkSegmentFiles(t testing.TB, s *Store) {
	t.Helper()
	ends := map[string]int64{}
	err := s.db.View(func(txn *badger.Txn) error {
		return eachIndexEntry(txn, func(prefix []byte, ref blockRef) error {
			name := filepath.Base(blockPath(s, prefix, ref))
			ends[name] = max(ends[name], int64(ref.off)+int64(ref.size))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, s.dir)
	for name, size := range files {
		if end, ok := ends[name]; !ok || size != end {
			t.Errorf("%s: %d bytes, its last indexed block ends at %d (indexed: %v)", name, size, end, ok)
		}
	}
	for name := range ends {
		if _, ok := files[name]; !ok {
			t.Errorf("%s: indexed, not in the directory", name)
		}
	}
}

// failRequest fails the transaction of its group: in apply, before the group's records are
// written to the segment files, or (conflict) at its commit, after they were written and
// synced, by writing a key that the transaction read (its value unchanged) in another one.
type failRequest struct {
	waiter
	s        *Store
	conflict []byte
}

var errFail = errors.New("failRequest")

func (*failRequest) cost() (int, int) { return 0, 0 }

func (r *failRequest) apply(*badger.Txn) (refused, failed error) {
	if r.conflict == nil {
		return nil, errFail
	}
	return nil, r.s.db.Update(func(txn *badger.Txn) error {
		v, err := get(txn, r.conflict)
		if err != nil {
			return err
		}
		return txn.Set(r.conflict, v)
	})
}

// TestSegmentRecovery alters the records directory of a closed store as a crash (or a
// stranger) would leave it, and checks that Open cuts the files at their last indexed block
// and removes the files no block is indexed in, and that the records read back and the
// queues go on.
func TestSegmentRecovery(t *testing.T) {
	smallSegments(t, 256<<10)
	// Files whose names are not the store's: Open leaves them alone.
	strays := []string{"notes.txt", "x-0000000000000000.seg", "x-1.seg", "x-00000000000000zz.seg"}
	const size = 10 << 10
	tests := []struct {
		name  string
		alter func(t *testing.T, dir string, out, in []blockRef)
	}{
		{"garbage after the last blocks", func(t *testing.T, dir string, out, in []blockRef) {
			appendFile(t, blockPathIn(dir, outboxPrefix("ssa"), out[len(out)-1]), bytes.Repeat([]byte{0xa5}, 5000))
			appendFile(t, blockPathIn(dir, inboxPrefix("ssa"), in[len(in)-1]), []byte("ssb1 a block cut short"))
		}},
		{"a block after the last, of a group that never committed", func(t *testing.T, dir string, out, _ []blockRef) {
			last := out[len(out)-1]
			b, err := os.ReadFile(blockPathIn(dir, outboxPrefix("ssa"), last))
			if err != nil {
				t.Fatal(err)
			}
			appendFile(t, blockPathIn(dir, outboxPrefix("ssa"), last), b[last.off:last.off+uint64(last.size)])
		}},
		{"a file no block is indexed in", func(t *testing.T, dir string, out, _ []blockRef) {
			ref := out[len(out)-1]
			ref.file = ref.last + 1
			appendFile(t, blockPathIn(dir, outboxPrefix("ssa"), ref), bytes.Repeat([]byte{1}, 300<<10))
		}},
		{"the files of a queue not indexed", func(t *testing.T, dir string, _, _ []blockRef) {
			ref := blockRef{file: 1}
			appendFile(t, blockPathIn(dir, outboxPrefix("gone"), ref), []byte("records"))
			appendFile(t, blockPathIn(dir, inboxPrefix("gone"), ref), []byte("records"))
		}},
		{"files that are not segments", func(t *testing.T, dir string, _, _ []blockRef) {
			for _, name := range strays {
				appendFile(t, filepath.Join(dir, segmentDir, name), []byte("stray"))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{})
			for b := range 6 { // 50 records in 3 files in each queue
				first := uint64(b*10 + 1)
				if _, err := s.Enqueue("ssa", randomRecords("ssa", first, 10, size), 10, 0); err != nil {
					t.Fatal(err)
				}
				if _, _, err := s.Receive("ssa", first, randomRecords("ssa", first, 10, size), t0, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Ack("ssa", 5); err != nil {
				t.Fatal(err)
			}
			out, in := indexed(t, s, outboxPrefix("ssa")), indexed(t, s, inboxPrefix("ssa"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if n := len(segFiles(t, dir)); n < 4 {
				t.Fatalf("%d segment files: the test means several per queue", n)
			}
			tc.alter(t, dir, out, in)
			var placed []string // the strays this case put there
			for _, name := range strays {
				if _, err := os.Stat(filepath.Join(dir, segmentDir, name)); err == nil {
					placed = append(placed, name)
				}
			}

			s = openTest(t, dir, Options{})
			checkSegmentFiles(t, s)
			checkRandom(t, "ssa", pending(t, s, "ssa"), 6, 60, size)
			checkRandom(t, "ssa", stored(t, s, "ssa"), 1, 60, size)
			// The queues go on where they were.
			if _, err := s.Enqueue("ssa", randomRecords("ssa", 61, 10, size), 10, 0); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Receive("ssa", 61, randomRecords("ssa", 61, 10, size), t0, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, Options{})
			checkSegmentFiles(t, s)
			checkRandom(t, "ssa", pending(t, s, "ssa"), 6, 70, size)
			checkRandom(t, "ssa", stored(t, s, "ssa"), 1, 70, size)
			for _, name := range placed {
				if _, err := os.Stat(filepath.Join(dir, segmentDir, name)); err != nil {
					t.Errorf("a file that is not the store's, %s, after Open: %v; want it left alone", name, err)
				}
			}
		})
	}
}

func blockPathIn(dir string, prefix []byte, ref blockRef) string {
	return blockPath(&Store{dir: dir}, prefix, ref)
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRollback fails the transaction of a group that appended records, and checks that the
// files are back at their committed ends, with no file the group created, and that the
// next groups append, read back, and open again.
func TestRollback(t *testing.T) {
	smallSegments(t, 256<<10)
	const size = 16 << 10
	tests := []struct {
		name     string
		inbox    bool
		conflict bool
		prefill  int // records before the group that fails; 12 leave room for one block
	}{
		{"outbox, apply fails", false, false, 3},
		{"outbox, commit fails", false, true, 3},
		{"inbox, apply fails", true, false, 3},
		{"inbox, commit fails", true, true, 3},
		// The group that fails starts a file; the one after it starts in the file before.
		{"outbox, a new file", false, true, 12},
		{"inbox, a new file", true, true, 12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{})
			prefix, stateKey := outboxPrefix("ssa"), outboxStateKey("ssa")
			if tc.inbox {
				prefix, stateKey = inboxPrefix("ssa"), inboxStateKey("ssa")
			}
			write := func(first uint64, n int) request {
				recs := randomRecords("ssa", first, n, size)
				if tc.inbox {
					r, err := newReceiveRequest(s, "ssa", first, recs, t0, 0)
					if err != nil {
						t.Fatal(err)
					}
					return r
				}
				r, err := newEnqueueRequest(s, []Batch{{SSAID: "ssa", Records: recs, Ingested: uint64(n)}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			read := func(last uint64) {
				t.Helper()
				if tc.inbox {
					checkRandom(t, "ssa", stored(t, s, "ssa"), 1, last, size)
				} else {
					checkRandom(t, "ssa", pending(t, s, "ssa"), 1, last, size)
				}
				checkIndex(t, s, prefix, 0, last)
			}
			// The committer is idle between calls: the test may write groups itself.
			if _, err := s.writeTxn([]request{write(1, tc.prefill)}); err != nil {
				t.Fatal(err)
			}
			before := segFiles(t, dir)
			fail := &failRequest{waiter: newWaiter(), s: s}
			if tc.conflict {
				fail.conflict = stateKey
			}
			if _, err := s.writeTxn([]request{write(uint64(tc.prefill)+1, 8), fail}); err == nil {
				t.Fatal("the group meant to fail committed")
			}
			if after := segFiles(t, dir); !maps.Equal(before, after) {
				t.Fatalf("files %v after the group failed, %v before", after, before)
			}
			read(uint64(tc.prefill))
			last := uint64(tc.prefill) + 8
			if _, err := s.writeTxn([]request{write(uint64(tc.prefill)+1, 8)}); err != nil {
				t.Fatal(err)
			}
			read(last)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, Options{})
			checkSegmentFiles(t, s)
			read(last)
		})
	}
}

// TestSegmentCorrupt alters the files or the index of a closed store: a block that does not
// check is ErrCorrupt when read, never other records, and a file shorter than its index
// says, or missing, is ErrCorrupt at Open.
func TestSegmentCorrupt(t *testing.T) {
	const size = 50000 // two records a block: three blocks in each queue
	// Each alters the second block of the queue (or its file) or its index entry.
	tests := []struct {
		name     string
		alter    func(t *testing.T, s *Store, prefix []byte, ref, next blockRef)
		openFail bool
	}{
		{"a byte of the records flipped", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			flip(t, blockPath(s, prefix, ref), int64(ref.off)+int64(ref.size)/2)
		}, false},
		{"a byte of the header flipped", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			flip(t, blockPath(s, prefix, ref), int64(ref.off)+10)
		}, false},
		{"the checksum flipped", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			flip(t, blockPath(s, prefix, ref), int64(ref.off)+5)
		}, false},
		{"the block punched out", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			f, err := os.OpenFile(blockPath(s, prefix, ref), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := punchHole(f, int64(ref.off), int64(ref.size)); err != nil {
				t.Skipf("punch: %v", err)
			}
		}, false},
		{"the index points at the next block", func(t *testing.T, s *Store, prefix []byte, ref, next blockRef) {
			ref.off, ref.size = next.off, next.size
			setIndex(t, s, prefix, ref.last, ref.encode())
		}, false},
		{"the index entry short", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			setIndex(t, s, prefix, ref.last, ref.encode()[:20])
		}, true},
		{"the index entry past the file's end", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			ref.off += 1 << 20
			setIndex(t, s, prefix, ref.last, ref.encode())
		}, true},
		{"the index entry far past the file's end", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			ref.off = 1<<64 - 100
			setIndex(t, s, prefix, ref.last, ref.encode())
		}, true},
		{"the file cut short", func(t *testing.T, s *Store, prefix []byte, _, next blockRef) {
			if err := os.Truncate(blockPath(s, prefix, next), int64(next.off)+int64(next.size)-1); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"the file removed", func(t *testing.T, s *Store, prefix []byte, ref, _ blockRef) {
			if err := os.Remove(blockPath(s, prefix, ref)); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, queue := range []string{"outbox", "inbox"} {
		for _, tc := range tests {
			t.Run(queue+", "+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				s, err := Open(dir, Options{})
				if err != nil {
					t.Fatal(err)
				}
				recs := records("ssa", 1, 6, size)
				prefix := outboxPrefix("ssa")
				read := func(s *Store) (int, error) {
					got, err := s.Pending("ssa", 0, 10, 1<<30)
					return len(got), err
				}
				if queue == "inbox" {
					prefix = inboxPrefix("ssa")
					read = func(s *Store) (int, error) {
						got, err := s.Records("ssa", 0, 10, 1<<30)
						return len(got), err
					}
					_, _, err = s.Receive("ssa", 1, recs, t0, 0)
				} else {
					_, err = s.Enqueue("ssa", recs, 6, 0)
				}
				if err != nil {
					t.Fatal(err)
				}
				refs := indexed(t, s, prefix)
				if len(refs) != 3 {
					t.Fatalf("%d blocks, want 3", len(refs))
				}
				tc.alter(t, s, prefix, refs[1], refs[2])
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s, err = Open(dir, Options{})
				if tc.openFail {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("Open: %v, want ErrCorrupt", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if n, err := read(s); !errors.Is(err, ErrCorrupt) || n != 0 {
					t.Fatalf("%d records read, error %v; want none and ErrCorrupt", n, err)
				}
			})
		}
	}
}

// flip inverts the byte at off in the file.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// setIndex sets the index entry of a queue's block that ends at last.
func setIndex(t *testing.T, s *Store, prefix []byte, last uint64, value []byte) {
	t.Helper()
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(seqKey(prefix, last), value) }); err != nil {
		t.Fatal(err)
	}
}

// TestSegmentEncryption: with an encryption key the segment files hold none of the records'
// bytes (a clear store's do: the records do not compress), a store opened with another key
// is refused, and the records read back with the right one.
func TestSegmentEncryption(t *testing.T) {
	const n, size = 20, 3000
	key := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		name  string
		opts  Options
		clear bool
	}{
		{"clear", Options{}, true},
		{"encrypted", Options{EncryptionKey: key}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			recs := randomRecords("ssa", 1, n, size)
			if _, err := s.Enqueue("ssa", recs, n, 0); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Receive("ssa", 1, recs, t0, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			var files []byte
			for name := range segFiles(t, dir) {
				b, err := os.ReadFile(filepath.Join(dir, segmentDir, name))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, b...)
			}
			found := 0
			for _, r := range recs {
				for _, part := range [][]byte{r[:16], r[size/2 : size/2+16], r[size-16:]} {
					if bytes.Contains(files, part) {
						found++
					}
				}
			}
			if tc.clear && found != 3*n || !tc.clear && found != 0 {
				t.Fatalf("%d of %d parts of the records found in the segment files", found, 3*n)
			}
			if !tc.clear {
				if s, err := Open(dir, Options{EncryptionKey: bytes.Repeat([]byte{8}, 32)}); err == nil {
					s.Close()
					t.Fatal("opened with another key")
				}
			}
			s = openTest(t, dir, tc.opts)
			checkRandom(t, "ssa", pending(t, s, "ssa"), 1, n, size)
			checkRandom(t, "ssa", stored(t, s, "ssa"), 1, n, size)
		})
	}
}

// TestReleaseDisk: the disk of the records acknowledged, dropped or expired is given back
// when the call returns: files wholly dead are removed, and the dead blocks at the start of
// the first live file are punched out of it. What is left takes no more than the records
// kept and a block, and stays so after reopening.
func TestReleaseDisk(t *testing.T) {
	const n, per, size = 400, 50, 16 << 10
	type queueCase struct {
		name  string
		inbox bool
		kept  int
		empty func(s *Store) error
	}
	tests := []queueCase{
		{"ack some", false, per, func(s *Store) error { return s.Ack("ssa", n-per) }},
		{"ack all", false, 0, func(s *Store) error { return s.Ack("ssa", n) }},
		{"drop", false, 0, func(s *Store) error { return s.DropOutbox("ssa") }},
		{"retention of some", true, per, func(s *Store) error {
			_, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add((n/per-1)*time.Second))
			return err
		}},
		{"retention of all", true, 0, func(s *Store) error {
			_, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Hour))
			return err
		}},
	}
	big := segmentSize
	for _, files := range []int64{big, 1 << 20} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s, files of %d MiB", tc.name, files>>20), func(t *testing.T) {
				smallSegments(t, files)
				dir := t.TempDir()
				s := openTest(t, dir, Options{})
				prefix := outboxPrefix("ssa")
				if tc.inbox {
					prefix = inboxPrefix("ssa")
				}
				for i := 0; i < n; i += per {
					recs := randomRecords("ssa", uint64(i+1), per, size)
					var err error
					if tc.inbox {
						_, _, err = s.Receive("ssa", uint64(i+1), recs, t0.Add(time.Duration(i/per)*time.Second), 0)
					} else {
						_, err = s.Enqueue("ssa", recs, per, 0)
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				full, _ := recordsDisk(t, dir)
				if err := tc.empty(s); err != nil {
					t.Fatal(err)
				}
				check := func(when string, open bool) {
					t.Helper()
					checkIndex(t, s, prefix, uint64(n-tc.kept), n)
					allocated, total := recordsDisk(t, dir)
					bound := int64(tc.kept*size) + blockRaw + 2*punchAlign
					if tc.kept == 0 {
						bound = emptyDisk // the file appended to, kept while open
						if !open {
							bound = 0
						}
					}
					if lazy := strings.HasPrefix(tc.name, "ack"); lazy && open {
						// An acknowledgement punches the file appended to by punchBatch.
						bound += punchBatch
					}
					t.Logf("%s: %d bytes allocated of %d in %d files; %d before", when, allocated, total, len(segFiles(t, dir)), full)
					if allocated > bound {
						t.Errorf("%s: the segment files take %d bytes, want at most %d", when, allocated, bound)
					}
					// The files left are those that hold live blocks, and the one appended to.
					live := map[uint64]bool{}
					for _, ref := range indexed(t, s, prefix) {
						live[ref.file] = true
					}
					if got := len(segFiles(t, dir)); got > len(live)+1 || !open && got != len(live) {
						t.Errorf("%s: %d files, %d hold live blocks", when, got, len(live))
					}
					if files == big && tc.kept > 0 && allocated >= total/2 {
						t.Errorf("%s: a file of %d bytes takes %d: its dead blocks were not punched out", when, total, allocated)
					}
					if tc.inbox {
						checkRandom(t, "ssa", stored(t, s, "ssa"), uint64(n-tc.kept+1), n, size)
					} else {
						checkRandom(t, "ssa", pending(t, s, "ssa"), uint64(n-tc.kept+1), n, size)
					}
				}
				check("after", true)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openTest(t, dir, Options{})
				check("reopened", false)
			})
		}
	}
}

// TestManySegments writes records in many files, one batch over several files and many
// more records than a group holds entries (one transaction), and reads them back in pages
// that cross the files' ends, before and after reopening.
func TestManySegments(t *testing.T) {
	smallSegments(t, 256<<10)
	const size = 6000
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	last := uint64(0)
	for b := range 10 {
		n := 5 + 13*b
		if _, err := s.Enqueue("ssa", randomRecords("ssa", last+1, n, size), uint64(n), 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Receive("ssa", last+1, randomRecords("ssa", last+1, n, size), t0, 0); err != nil {
			t.Fatal(err)
		}
		last += uint64(n)
	}
	// A batch of 12 MB in one transaction: about 100 blocks in 48 files.
	const huge = 2000
	groups := s.groups.Load()
	if got, err := s.Enqueue("ssa", randomRecords("ssa", last+1, huge, size), huge, 0); err != nil || got != last+huge {
		t.Fatalf("huge batch: %d %v", got, err)
	}
	if g := s.groups.Load() - groups; g != 1 {
		t.Fatalf("a batch of %d records in %d transactions, want 1", huge, g)
	}
	if _, _, err := s.Receive("ssa", last+1, randomRecords("ssa", last+1, huge, size), t0, 0); err != nil {
		t.Fatal(err)
	}
	last += huge
	// A file takes blocks until it is over 256 KiB.
	if n := len(segFiles(t, dir)); n < 2*int(last)*size/(256<<10+blockRaw) {
		t.Fatalf("%d files for %d records in 2 queues", n, last)
	}
	pages := func() {
		t.Helper()
		for _, page := range []int{1, 7, 100 << 10, 1 << 20} {
			var out []QueuedRecord
			var in []StoredRecord
			for after := uint64(0); after < last; {
				got, err := s.Pending("ssa", after, 1<<20, page)
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, got...)
				after = got[len(got)-1].Seq
			}
			for after := uint64(0); after < last; {
				got, err := s.Records("ssa", after, 1<<20, page)
				if err != nil {
					t.Fatal(err)
				}
				in = append(in, got...)
				after = got[len(got)-1].Seq
			}
			checkRandom(t, "ssa", out, 1, last, size)
			checkRandom(t, "ssa", in, 1, last, size)
		}
	}
	pages()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	checkSegmentFiles(t, s)
	pages()
}

// manyBlocks writes to the outbox or the inbox of "ssa" (received at t0) 150 records that
// make a block each (a block holds at least one record, and two of these are over
// blockRaw): more blocks than one transaction takes out of the index (dropChunk). It
// returns the queue's index prefix.
func manyBlocks(t *testing.T, s *Store, inbox bool) []byte {
	t.Helper()
	recs := records("ssa", 1, 150, blockRaw/2+1000)
	prefix := outboxPrefix("ssa")
	var err error
	if inbox {
		prefix = inboxPrefix("ssa")
		_, _, err = s.Receive("ssa", 1, recs, t0, 0)
	} else {
		_, err = s.Enqueue("ssa", recs, 150, 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n := len(indexed(t, s, prefix)); n != 150 {
		t.Fatalf("%d blocks, want 150", n)
	}
	return prefix
}

// TestTrimChunks deletes more blocks at once than one transaction takes out of the index:
// the call takes as many transactions as it needs, and returns with none left and their
// disk given back.
func TestTrimChunks(t *testing.T) {
	tests := []struct {
		name   string
		inbox  bool
		delete func(s *Store) error
	}{
		{"ack", false, func(s *Store) error { return s.Ack("ssa", 150) }},
		{"drop", false, func(s *Store) error { return s.DropOutbox("ssa") }},
		{"retention", true, expireAll(150)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{})
			prefix := manyBlocks(t, s, tc.inbox)
			groups := s.groups.Load()
			if err := tc.delete(s); err != nil {
				t.Fatal(err)
			}
			if g := s.groups.Load() - groups; g != 3 {
				t.Errorf("150 blocks out of the index in %d transactions, want 3", g)
			}
			checkIndex(t, s, prefix, 150, 150)
			if allocated, _ := recordsDisk(t, dir); allocated > emptyDisk+ackSlack(tc.name) {
				t.Errorf("%d bytes of segment files left", allocated)
			}
		})
	}
}

// TestTrimAfterCrash stops a deletion of more blocks than one transaction takes out of the
// index after its first transaction, as a crash would, and checks that the same call after
// reopening (which deletes no more records) takes the rest out and gives their disk back.
func TestTrimAfterCrash(t *testing.T) {
	tests := []struct {
		name  string
		inbox bool
		first request // the first transaction of the deletion
		again func(s *Store) error
	}{
		{"ack", false, &trimRequest{ssaID: "ssa", ack: 150}, func(s *Store) error { return s.Ack("ssa", 150) }},
		{"drop", false, &trimRequest{ssaID: "ssa", drop: true}, func(s *Store) error { return s.DropOutbox("ssa") }},
		{"retention", true, &retainRequest{ssaID: "ssa", through: 150, deletes: 150, runs: 1, keyLen: len(runPrefix("ssa")) + 8},
			expireAll(0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{})
			prefix := manyBlocks(t, s, tc.inbox)
			switch r := tc.first.(type) {
			case *trimRequest:
				r.waiter, r.s = newWaiter(), s
			case *retainRequest:
				r.waiter, r.s = newWaiter(), s
			}
			if err := s.commit(tc.first); err != nil {
				t.Fatal(err)
			}
			if n := len(indexed(t, s, prefix)); n != 150-dropChunk {
				t.Fatalf("%d blocks left in the index after the first transaction, want %d", n, 150-dropChunk)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, Options{})
			if err := tc.again(s); err != nil {
				t.Fatal(err)
			}
			checkIndex(t, s, prefix, 150, 150)
			if allocated, _ := recordsDisk(t, dir); allocated > emptyDisk+ackSlack(tc.name) {
				t.Errorf("%d bytes of segment files left", allocated)
			}
		})
	}
}

// TestDropThenEnqueue drops an outbox whose records span files and enqueues to it again:
// the new records are pending, in the file the queue appended to, and after reopening.
func TestDropThenEnqueue(t *testing.T) {
	smallSegments(t, 256<<10)
	const size = 10 << 10
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	for first := uint64(1); first <= 100; first += 25 {
		if _, err := s.Enqueue("ssa", randomRecords("ssa", first, 25, size), 25, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DropOutbox("ssa"); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, s, "ssa"); len(got) != 0 {
		t.Fatalf("%d records pending after DropOutbox", len(got))
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("%d files after DropOutbox, want the one appended to", n)
	}
	if last, err := s.Enqueue("ssa", randomRecords("ssa", 101, 30, size), 30, 0); err != nil || last != 130 {
		t.Fatalf("enqueue after DropOutbox: %d %v", last, err)
	}
	checkRandom(t, "ssa", pending(t, s, "ssa"), 101, 130, size)
	if err := s.Ack("ssa", 110); err != nil {
		t.Fatal(err)
	}
	checkRandom(t, "ssa", pending(t, s, "ssa"), 111, 130, size)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	checkSegmentFiles(t, s)
	checkRandom(t, "ssa", pending(t, s, "ssa"), 111, 130, size)
	if err := s.DropOutbox("ssa"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if n := len(segFiles(t, dir)); n != 0 {
		t.Fatalf("%d files of an empty outbox after reopening", n)
	}
	if last, err := s.Enqueue("ssa", randomRecords("ssa", 131, 3, size), 3, 0); err != nil || last != 133 {
		t.Fatalf("enqueue: %d %v", last, err)
	}
	checkRandom(t, "ssa", pending(t, s, "ssa"), 131, 133, size)
}

// TestReadBesideRelease reads both queues while records are written, acknowledged and
// expired beside the reads, in files small enough that the committer removes and punches
// them all the time: a read never fails and never returns other records than its own.
func TestReadBesideRelease(t *testing.T) {
	smallSegments(t, 64<<10)
	const batches, per, size = 150, 20, 1000
	s := openTest(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 4)
	wg.Go(func() {
		defer close(done)
		for b := range batches {
			first := uint64(b*per + 1)
			recs := randomRecords("ssa", first, per, size)
			if _, err := s.Enqueue("ssa", recs, per, 0); err != nil {
				errs <- err
				return
			}
			if _, _, err := s.Receive("ssa", first, recs, t0.Add(time.Duration(b)*time.Second), 0); err != nil {
				errs <- err
				return
			}
			if err := s.Ack("ssa", first+per/2); err != nil {
				errs <- err
				return
			}
			if _, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Duration(b)*time.Second)); err != nil {
				errs <- err
				return
			}
		}
	})
	check := func(seq uint64, data []byte) error {
		if !bytes.Equal(data, randomRecord("ssa", seq, size)) {
			return fmt.Errorf("record %d read is not the record stored", seq)
		}
		return nil
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				out, err := s.Pending("ssa", 0, 3*per, 1<<20)
				for _, r := range out {
					err = errors.Join(err, check(r.Seq, r.Data))
				}
				in, rerr := s.Records("ssa", 0, 3*per, 1<<20)
				for _, r := range in {
					rerr = errors.Join(rerr, check(r.Seq, r.Data))
				}
				if err = errors.Join(err, rerr); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestIndexEntries checks that indexEntries bounds the blocks that the records it is given
// make, as append cuts them, for records of many sizes.
func TestIndexEntries(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[string]func() int{
		"small":            func() int { return rng.IntN(200) },
		"around a block":   func() int { return blockRaw/2 - 10 + rng.IntN(20) },
		"up to the limit":  func() int { return rng.IntN(MaxRecordSize + 1) },
		"mixed":            func() int { return []int{0, 1, 100, blockRaw - 5, blockRaw, MaxRecordSize}[rng.IntN(6)] },
		"just over a half": func() int { return blockRaw/2 - binary.MaxVarintLen32 + 1 },
	}
	for name, size := range sizes {
		t.Run(name, func(t *testing.T) {
			for range 20 {
				recs := make([][]byte, 1+rng.IntN(40))
				for i := range recs {
					recs[i] = make([]byte, size())
				}
				// The committer is idle: the test appends and rolls back itself.
				keys, _, err := s.recs.append(outboxPrefix("ssa"), 1, recs)
				if rerr := s.recs.rollback(); err != nil || rerr != nil {
					t.Fatal(err, rerr)
				}
				if bound := indexEntries(recs); len(keys) > bound {
					t.Fatalf("%d records made %d blocks, indexEntries says at most %d", len(recs), len(keys), bound)
				}
			}
		})
	}
}

// FuzzDecodeBlock decodes blocks from real ones (clear and sealed, compressed or not) with
// their index entries, altered: decodeBlock never panics, and returns ErrCorrupt for what is
// not a valid block of the records the entry says, or records that match the entry. With
// fixCRC the checksum is made right after the alteration, so that the checks behind it are
// reached.
// fuzzQueue is the queue FuzzDecodeBlock's blocks belong to.
var fuzzQueue = outboxPrefix("ssa")

func FuzzDecodeBlock(f *testing.F) {
	logs := map[bool]*recordLog{}
	for _, sealed := range []bool{false, true} {
		var opts Options
		if sealed {
			opts.EncryptionKey = bytes.Repeat([]byte{3}, 32)
		}
		s, err := Open(f.TempDir(), opts)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { s.Close() })
		logs[sealed] = s.recs
	}
	for _, sealed := range []bool{false, true} {
		for _, recs := range [][][]byte{
			records("ssa", 7, 1, 10),                 // compressed
			records("ssa", 7, 30, 300),               // compressed, several records
			randomRecords("ssa", 7, 3, 100),          // in clear: it does not compress
			{{}, randomRecord("ssa", 8, 20), {}, {}}, // empty records
		} {
			var raw []byte
			for _, r := range recs {
				raw = binary.AppendUvarint(raw, uint64(len(r)))
				raw = append(raw, r...)
			}
			// The committer is idle: nothing else uses the log's scratch.
			b := logs[sealed].encodeBlock(fuzzQueue, 7, len(recs), raw)
			f.Add(b, uint64(7), uint64(7+len(recs)-1), sealed, false)
			f.Add(b, uint64(7), uint64(7+len(recs)-1), !sealed, false)
			f.Add(b, uint64(7), uint64(7+len(recs)-1), sealed, true)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, first, last uint64, sealed, fixCRC bool) {
		if fixCRC && len(b) >= blockHeader {
			binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
		}
		ref := blockRef{file: 1, size: uint32(len(b)), first: first, last: last}
		d, err := logs[sealed].decodeBlock(fuzzQueue, bytes.Clone(b), ref)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			return
		}
		if flags := binary.BigEndian.Uint32(b[28:]); flags&^(flagCompressed|flagSealed) != 0 || (flags&flagSealed != 0) != sealed {
			t.Fatalf("block with flags %#x decoded by a store sealed %t", flags, sealed)
		}
		if d.first != first || uint64(d.n) != last-first+1 {
			t.Fatalf("block of %d records from %d, the entry says %d to %d", d.n, d.first, first, last)
		}
		n, next := 0, first
		var framed []byte
		d.each(first, func(seq uint64, rec []byte) bool {
			if seq != next {
				t.Fatalf("record %d after %d", seq, next-1)
			}
			framed = binary.AppendUvarint(framed, uint64(len(rec)))
			framed = append(framed, rec...)
			n, next = n+1, next+1
			return true
		})
		if n != d.n || !bytes.Equal(framed, d.raw) {
			t.Fatalf("%d records of %d bytes in all, the block says %d records of %d bytes", n, len(framed), d.n, len(d.raw))
		}
	})
}

// TestGroupOfOneQueue writes groups that append to a queue and delete from it in one
// transaction, in either order: what each request reads of the index includes what the
// requests before it in the group appended, and release gives back only the dead blocks.
func TestGroupOfOneQueue(t *testing.T) {
	smallSegments(t, 64<<10)
	const size = 5000
	tests := []struct {
		name     string
		prefill  int
		group    func(s *Store) []request
		from, to uint64 // pending after the group
	}{
		{"enqueue then drop", 20, func(s *Store) []request {
			return []request{enqueueOf(t, s, 21, 30, size), &trimRequest{waiter: newWaiter(), s: s, ssaID: "ssa", drop: true}}
		}, 31, 30},
		{"ack then enqueue", 20, func(s *Store) []request {
			return []request{&trimRequest{waiter: newWaiter(), s: s, ssaID: "ssa", ack: 20}, enqueueOf(t, s, 21, 30, size)}
		}, 21, 30},
		{"enqueue then ack within it", 20, func(s *Store) []request {
			return []request{enqueueOf(t, s, 21, 30, size), &trimRequest{waiter: newWaiter(), s: s, ssaID: "ssa", ack: 25}}
		}, 26, 30},
		{"two enqueues over a file's end", 0, func(s *Store) []request {
			return []request{enqueueOf(t, s, 1, 15, size), enqueueOf(t, s, 16, 30, size)}
		}, 1, 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, Options{})
			if tc.prefill > 0 {
				if _, err := s.Enqueue("ssa", randomRecords("ssa", 1, tc.prefill, size), uint64(tc.prefill), 0); err != nil {
					t.Fatal(err)
				}
			}
			// The committer is idle: the test may write a group itself.
			refused, err := s.writeTxn(tc.group(s))
			if err := errors.Join(append(refused, err)...); err != nil {
				t.Fatal(err)
			}
			check := func() {
				t.Helper()
				checkRandom(t, "ssa", pending(t, s, "ssa"), tc.from, tc.to, size)
				checkIndex(t, s, outboxPrefix("ssa"), tc.from-1, tc.to)
			}
			check()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openTest(t, dir, Options{})
			checkSegmentFiles(t, s)
			check()
		})
	}
}

// enqueueOf is an enqueue request of records first..last of "ssa" (randomRecord): they must
// be the next ones when it applies.
func enqueueOf(t *testing.T, s *Store, first, last uint64, size int) request {
	t.Helper()
	r, err := newEnqueueRequest(s, []Batch{{SSAID: "ssa", Records: randomRecords("ssa", first, int(last-first+1), size)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ackSlack is what an acknowledgement may leave unpunched in the file appended to: it
// punches by punchBatch (release).
func ackSlack(name string) int64 {
	if name == "ack" {
		return punchBatch
	}
	return 0
}

// TestAppendBuffersFreed: what a group appends to a file is held in memory only until it is
// written. A large batch spans several files, each of which kept a buffer as large as what the
// batch wrote to it for as long as the file lived (until its records were all deleted): an
// inbox received in large batches stayed in memory whole. A group's rollback frees them too.
func TestAppendBuffersFreed(t *testing.T) {
	smallSegments(t, 256<<10)
	const size = 10000
	tests := []struct {
		name  string
		write func(s *Store) error
	}{
		{"enqueue", func(s *Store) error {
			_, err := s.Enqueue("ssa", randomRecords("ssa", 1, 100, size), 100, 0)
			return err
		}},
		{"receive", func(s *Store) error {
			_, _, err := s.Receive("ssa", 1, randomRecords("ssa", 1, 100, size), time.Now(), 0)
			return err
		}},
		{"rollback", func(s *Store) error {
			if _, err := s.Enqueue("ssa", randomRecords("ssa", 1, 1, size), 1, 0); err != nil {
				return err
			}
			// The committer is idle: the test may append and roll back itself.
			if _, _, err := s.recs.append(outboxPrefix("ssa"), 2, randomRecords("ssa", 2, 100, size)); err != nil {
				return err
			}
			return s.recs.rollback()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), Options{})
			if err := tc.write(s); err != nil {
				t.Fatal(err)
			}
			s.recs.mu.Lock()
			defer s.recs.mu.Unlock()
			held := 0
			for _, q := range s.recs.queues {
				for _, f := range q.files {
					held += cap(f.buf)
				}
			}
			if held != 0 {
				t.Errorf("%d bytes of append buffers held after the group", held)
			}
		})
	}
}

// TestAckBesideRead: an acknowledgement that gives no disk back (less than punchBatch, no
// file dead) does not wait for the reads under way. It took the lock that keeps release from
// readers whatever it had to do, so every Ack stalled the committer, and every writer behind
// it, until the reads in flight ended, and held new reads off meanwhile.
func TestAckBesideRead(t *testing.T) {
	const size = 1000
	s := openTest(t, t.TempDir(), Options{})
	if _, err := s.Enqueue("ssa", randomRecords("ssa", 1, 100, size), 100, 0); err != nil {
		t.Fatal(err)
	}
	// A read under way: viewRecords holds rel for reading from before its transaction.
	s.recs.rel.RLock()
	read := true
	defer func() {
		if read {
			s.recs.rel.RUnlock()
		}
	}()
	acked := make(chan error, 1)
	go func() { acked <- s.Ack("ssa", 10) }()
	select {
	case err := <-acked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second): // a hang, not a measure: the Ack needs no time
		s.recs.rel.RUnlock()
		read = false
		t.Fatalf("Ack waited for a read under way (it returned %v once the read ended)", <-acked)
	}
	checkRandom(t, "ssa", pending(t, s, "ssa"), 11, 100, size)
}

// TestDroppedAfterOpen: after Open, the drops and the checks for blocks left to drop (Ack,
// DropOutbox, retention) seek to the queue's first live index entry, past those deleted
// before, whose tombstones Badger keeps until a compaction meets them. From 0 they walked
// every tombstone of the queue, at each call until the queue's first drop since Open, and
// retention checks an inbox with nothing due at every pass.
func TestDroppedAfterOpen(t *testing.T) {
	const n, size = 200, 1000
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	recs := randomRecords("ssa", 1, n, size)
	for i := range n / 10 {
		if _, err := s.Enqueue("ssa", recs[i*10:i*10+10], 10, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Receive("ssa", uint64(i*10+1), recs[i*10:i*10+10], t0.Add(time.Duration(i)*time.Second), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack("ssa", n/2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(n/20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	for _, prefix := range [][]byte{outboxPrefix("ssa"), inboxPrefix("ssa")} {
		var first uint64 // the last record of the first live block
		err := s.view(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			it.Rewind()
			if !it.Valid() {
				return fmt.Errorf("no live index entry")
			}
			first, _ = parseSeq(it.Item().Key(), len(prefix))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.recs.dropped(prefix); got != first {
			t.Errorf("%q: drops seek from record %d after Open, want %d (the first live block's last)", prefix[:2], got, first)
		}
	}
}

// expireAll returns a deletion by retention of every record of the inbox of "ssa" (received
// an hour after t0 at the latest), which must delete want of them.
func expireAll(want int) func(s *Store) error {
	return func(s *Store) error {
		n, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Hour))
		if err == nil && n != want {
			err = fmt.Errorf("%d deleted, want %d", n, want)
		}
		return err
	}
}
