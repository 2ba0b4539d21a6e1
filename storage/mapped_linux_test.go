package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// mappedRSS is the resident memory (smaps Rss) of the mappings of files in dir whose name
// ends in suffix.
func mappedRSS(t *testing.T, dir, suffix string) int64 {
	t.Helper()
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Bytes()
		if f := bytes.Fields(l); len(f) > 0 && bytes.Contains(f[0], []byte("-")) {
			path := string(f[len(f)-1])
			in = len(f) >= 6 && filepath.Dir(path) == dir && filepath.Ext(path) == suffix
			continue
		}
		if in && bytes.HasPrefix(l, []byte("Rss:")) {
			kb, err := strconv.ParseInt(string(bytes.Fields(l)[1]), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			n += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// fillTree writes n keys of random values of 200 bytes to the store's tree, under a prefix
// of no data, and returns a function that reads them all back: tables enough to map (the
// records are not in the tree: they are in the segment files, which are not mapped).
func fillTree(t *testing.T, s *Store, n int) (read func()) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{2})
	key := func(i int) []byte { return fmt.Appendf(nil, "z/%08d", i) }
	values := make([][]byte, n)
	for i := 0; i < n; i += 1000 {
		err := s.db.Update(func(txn *badger.Txn) error {
			for j := i; j < min(i+1000, n); j++ {
				values[j] = make([]byte, 200)
				_, _ = rng.Read(values[j])
				if err := txn.Set(key(j), values[j]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		t.Helper()
		err := s.db.View(func(txn *badger.Txn) error {
			for i, v := range values {
				got, err := get(txn, key(i))
				if err != nil {
					return err
				}
				if !bytes.Equal(got, v) {
					return fmt.Errorf("key %s differs", key(i))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestReleaseMapped: the sensor profile's round hands back the pages of the tables that
// writing and reading left resident, and the tables and the records read the same
// afterwards.
// The store is opened through a symbolic link: /proc/self/maps names the files by their
// real path.
func TestReleaseMapped(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	s, err := open(link, Options{Profile: ProfileSensor}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	tree := fillTree(t, s, 20000)
	recs := eveRecords(t, 2000)
	receiveEVE(t, s, recs)
	if err := s.db.Flatten(1); err != nil { // tables written, and read by the compaction
		t.Fatal(err)
	}
	read := func() {
		t.Helper()
		tree()
		got, err := s.Records("ssa", 0, len(recs), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(recs) || !bytes.Equal(got[len(got)-1].Data, recs[len(recs)-1]) {
			t.Fatalf("%d records read back, want %d", len(got), len(recs))
		}
	}
	read()
	before := mappedRSS(t, dir, ".sst")
	if err := s.releaseMapped(); err != nil {
		t.Fatal(err)
	}
	after := mappedRSS(t, dir, ".sst")
	t.Logf("tables resident: %d bytes, %d after releaseMapped", before, after)
	if before < 1<<20 || after > before/10 {
		t.Fatalf("tables resident: %d bytes, %d after releaseMapped: want at least 1 MiB before, a tenth of it after", before, after)
	}
	read()
}

// TestReleaseOverBudget: releaseOver (which the sensor profile's collector calls) hands the
// mapped pages back only once the resident pages of mapped files grew past the budget since
// the last time, and then from what is left. The store is of the default profile, whose
// collector releases nothing: the test's calls are the only ones.
func TestReleaseOverBudget(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	const budget = 1 << 20
	floor, err := fileResident()
	if err != nil {
		t.Fatal(err)
	}
	look := func(wantRelease bool) {
		t.Helper()
		n := s.releases.Load()
		if err := s.releaseOver(&floor, budget); err != nil {
			t.Fatal(err)
		}
		if released := s.releases.Load() > n; released != wantRelease {
			t.Fatalf("released: %t, want %t (floor %d)", released, wantRelease, floor)
		}
	}
	look(false) // nothing grew
	tree := fillTree(t, s, 20000)
	if err := s.db.Flatten(1); err != nil { // tables written, and read by the compaction
		t.Fatal(err)
	}
	tree()
	if grown := mappedRSS(t, dir, ".sst"); grown < 2*budget {
		t.Fatalf("tables resident: %d bytes, want more than twice the budget", grown)
	}
	look(true)
	if left := mappedRSS(t, dir, ".sst"); left > budget {
		t.Errorf("tables resident after the release: %d bytes, want at most the budget", left)
	}
	look(false) // within the budget of what was left
}

func TestProfileValidate(t *testing.T) {
	for _, tc := range []struct {
		p  Profile
		ok bool
	}{{"", true}, {ProfileDefault, true}, {ProfileSensor, true}, {"tiny", false}} {
		if err := (&Options{Profile: tc.p}).Validate(); (err == nil) != tc.ok {
			t.Errorf("profile %q: %v", tc.p, err)
		}
	}
}

// TestSensorProfileTakesLargeBatches: the sensor profile's store takes the largest writes
// of the exchange, a batch of 2,048 EVE records received or enqueued at once (Badger sizes
// its largest transaction from the memtables).
func TestSensorProfileTakesLargeBatches(t *testing.T) {
	s, err := open(t.TempDir(), Options{Profile: ProfileSensor}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	recs := eveRecords(t, 2048)
	if _, _, err := s.Receive("in", 1, recs, t0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue("out", recs, uint64(len(recs)), 0); err != nil {
		t.Fatal(err)
	}
}
