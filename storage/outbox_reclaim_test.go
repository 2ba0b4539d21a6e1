package storage

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// versionsUnder counts every version the store's files hold under prefix: values deleted,
// tombstones and values a tombstone hides included, which a reader never sees but the disk
// holds until a compaction or a drop removes them.
func versionsUnder(t *testing.T, s *Store, prefix []byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAckReturnsDisk: acknowledged records leave the store's files, without tombstones, at
// the collector's next round, and an outbox dropped by DropOutbox at once; the records not
// acknowledged stay readable.
func TestAckReturnsDisk(t *testing.T) {
	const n, kept = 20000, 500
	recs := eveRecords(t, n)
	for _, tc := range []struct {
		name  string
		empty func(s *Store) error
		left  int
	}{
		{"ack", func(s *Store) error {
			if err := s.Ack("ssa", n-kept); err != nil {
				return err
			}
			return s.reclaimOutboxes() // as the collector does every reclaimInterval
		}, kept},
		{"drop", func(s *Store) error { return s.DropOutbox("ssa") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := open(t.TempDir(), Options{}, false)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			for i := 0; i < n; i += 1000 {
				if _, err := s.Enqueue("ssa", recs[i:i+1000], 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.empty(s); err != nil {
				t.Fatal(err)
			}
			if got := versionsUnder(t, s, outboxPrefix("ssa")); got != tc.left {
				t.Fatalf("the files hold %d versions of outbox records, want the %d not acknowledged", got, tc.left)
			}
			got, err := s.Pending("ssa", 0, n, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.left || tc.left > 0 && (got[0].Seq != n-kept+1 || string(got[0].Data) != string(recs[n-kept])) {
				t.Fatalf("%d records pending, want the %d not acknowledged", len(got), tc.left)
			}
		})
	}
}

// TestAckDroppedByCollector: an Ack leaves its records on the disk, invisible, until the
// collector's round (a drop flushes the memtables and rewrites tables: too much for every
// Ack), and Close drops what was acknowledged since the last round.
func TestAckDroppedByCollector(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	step := func(name string, do func() error, want int) {
		t.Helper()
		if err := do(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := versionsUnder(t, s, outboxPrefix("ssa")); got != want {
			t.Fatalf("%s: the files hold %d versions of outbox records, want %d", name, got, want)
		}
	}
	enqueue := func(first uint64) func() error {
		return func() error {
			_, err := s.Enqueue("ssa", records("ssa", first, 100, 20), 0, 0)
			return err
		}
	}
	step("enqueue", enqueue(1), 100)
	step("ack", func() error { return s.Ack("ssa", 60) }, 100)
	checkPending(t, s, "ssa", 61, 100, 20)
	step("collector", s.reclaimOutboxes, 40)
	step("collector again", s.reclaimOutboxes, 40)
	step("enqueue", enqueue(101), 140)
	step("ack", func() error { return s.Ack("ssa", 150) }, 140)
	step("close and open", func() error {
		if err := s.Close(); err != nil {
			return err
		}
		s, err = open(dir, Options{}, false)
		return err
	}, 50)
	checkPending(t, s, "ssa", 151, 200, 20)
}

// TestDropOutboxDropsItsOwn: DropOutbox drops its own outbox from the disk, not the other
// outboxes an Ack marked due, which wait for the collector's round.
func TestDropOutboxDropsItsOwn(t *testing.T) {
	s, err := open(t.TempDir(), Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, id := range []string{"acked", "dropped"} {
		if _, err := s.Enqueue(id, records(id, 1, 100, 20), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack("acked", 60); err != nil {
		t.Fatal(err)
	}
	if err := s.DropOutbox("dropped"); err != nil {
		t.Fatal(err)
	}
	if got := versionsUnder(t, s, outboxPrefix("dropped")); got != 0 {
		t.Fatalf("the dropped outbox: %d versions on the disk, want 0", got)
	}
	if got := versionsUnder(t, s, outboxPrefix("acked")); got != 100 {
		t.Fatalf("the acknowledged outbox: %d versions on the disk before the collector's round, want 100", got)
	}
	if err := s.reclaimOutboxes(); err != nil {
		t.Fatal(err)
	}
	if got := versionsUnder(t, s, outboxPrefix("acked")); got != 40 {
		t.Fatalf("the acknowledged outbox: %d versions on the disk after the collector's round, want 40", got)
	}
}

// TestDroppedOutboxAfterCrash: records a crash left on the disk below the Head of an outbox
// that no Ack will trim again (DropOutbox committed, the process died before the drop) go
// at the collector's first round after the next start.
func TestDroppedOutboxAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue("ssa", records("ssa", 1, 100, 20), 0, 0); err != nil {
		t.Fatal(err)
	}
	// DropOutbox's transaction without its drop, as a crash right after it leaves it.
	if err := s.commit(&trimRequest{waiter: newWaiter(), s: s, ssaID: "ssa", drop: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = open(dir, Options{}, false); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if got := versionsUnder(t, s, outboxPrefix("ssa")); got != 100 {
		t.Fatalf("before the collector's round: %d versions on the disk, want the 100 the crash left", got)
	}
	if err := s.markOutboxesDue(); err != nil { // as the collector's first round does
		t.Fatal(err)
	}
	if err := s.reclaimOutboxes(); err != nil {
		t.Fatal(err)
	}
	if got := versionsUnder(t, s, outboxPrefix("ssa")); got != 0 {
		t.Fatalf("after the collector's first round: %d versions on the disk, want 0", got)
	}
}
