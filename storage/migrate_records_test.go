package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A store of schema version 2 for the migration to version 3, written key by key as version
// 2 laid it out: an outbox whose records up to its Head were acknowledged but still in the
// tables, with the orphans of a large batch beyond its end under a mark, and an inbox whose
// records up to its Head expired but were still in the tables, in two runs.
const (
	v2OutSSA, v2InSSA = "ssa-v2-out", "ssa-v2-in"
	v2OutHead         = 1000
	v2OutFirst        = 900 // the first record key left in the tables
	v2OutEnd          = 4000
	v2Orphans         = 10
	v2InHead          = 500
	v2InEnd           = 2500
	v2InRunEnd        = 1700 // the first run ends here
)

var v2Received = [2]time.Time{time.Unix(1_700_000_000, 0).UTC(), time.Unix(1_700_000_100, 0).UTC()}

// v2Record is record seq of a v2 test queue: sizes vary, so blocks hold different counts.
func v2Record(queue string, seq uint64) []byte {
	return fmt.Appendf(nil, `{"queue":%q,"seq":%d,"pad":"%s"}`, queue, seq, strings.Repeat("p", int(seq%300)))
}

// writeV2Store writes the version 2 store into dir.
func writeV2Store(t *testing.T, dir string) {
	t.Helper()
	s, err := open(dir, Options{schema: &schema{version: 2, migrations: currentSchema.migrations[:1]}}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	out := ssaPrefix(v2PrefixOutbox, v2OutSSA, 8)
	in := ssaPrefix(v2PrefixInbox, v2InSSA, 8)
	put := func(from, to uint64, fn func(txn *badger.Txn, seq uint64) error) {
		for lo := from; lo <= to; lo += 500 {
			err := s.update(func(txn *badger.Txn) error {
				for seq := lo; seq <= min(lo+499, to); seq++ {
					if err := fn(txn, seq); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	put(v2OutFirst, v2OutEnd+v2Orphans, func(txn *badger.Txn, seq uint64) error {
		return txn.Set(seqKey(out, seq), v2Record("out", seq))
	})
	put(1, v2InEnd, func(txn *badger.Txn, seq uint64) error {
		return txn.Set(seqKey(in, seq), v2Record("in", seq))
	})
	err = s.update(func(txn *badger.Txn) error {
		if err := putOutbox(txn, v2OutSSA, &outboxRecord{Ingested: v2OutEnd, Refined: v2OutEnd, Acked: v2OutHead, Sent: v2OutHead, Head: v2OutHead}); err != nil {
			return err
		}
		if err := putInbox(txn, v2InSSA, &inboxRecord{Last: v2InEnd, Head: v2InHead}); err != nil {
			return err
		}
		for i, end := range []uint64{v2InRunEnd, v2InEnd} {
			at := binary.BigEndian.AppendUint64(nil, uint64(unixNano(v2Received[i])))
			if err := txn.Set(seqKey(runPrefix(v2InSSA), end), at); err != nil {
				return err
			}
		}
		return txn.Set(append([]byte(v2PrefixMark), out...), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkV2Moved checks that the store in dir, opened with the current schema, holds the live
// records of writeV2Store, and nothing under the prefixes of version 2.
func checkV2Moved(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	defer closeStore(t, s)
	pending, err := s.Pending(v2OutSSA, 0, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != v2OutEnd-v2OutHead {
		t.Fatalf("%d records pending, want %d", len(pending), v2OutEnd-v2OutHead)
	}
	for i, r := range pending {
		if want := uint64(v2OutHead + 1 + i); r.Seq != want || !bytes.Equal(r.Data, v2Record("out", want)) {
			t.Fatalf("pending record %d: %d %q, want %d %q", i, r.Seq, r.Data, want, v2Record("out", want))
		}
	}
	stored, err := s.Records(v2InSSA, 0, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != v2InEnd-v2InHead {
		t.Fatalf("%d records stored, want %d", len(stored), v2InEnd-v2InHead)
	}
	for i, r := range stored {
		want := uint64(v2InHead + 1 + i)
		at := v2Received[0]
		if want > v2InRunEnd {
			at = v2Received[1]
		}
		if r.Seq != want || !bytes.Equal(r.Data, v2Record("in", want)) || !r.ReceivedAt.Equal(at) {
			t.Fatalf("stored record %d: %d %q at %v, want %d %q at %v", i, r.Seq, r.Data, r.ReceivedAt, want, v2Record("in", want), at)
		}
	}
	err = s.view(func(txn *badger.Txn) error {
		if v, err := get(txn, keySchema); err != nil || !bytes.Equal(v, []byte{schemaVersion}) {
			return fmt.Errorf("schema record %x (%v), want %02x", v, err, schemaVersion)
		}
		for _, p := range []string{v2PrefixOutbox, v2PrefixInbox, v2PrefixMark} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
			it.Rewind()
			left := it.Valid()
			it.Close()
			if left {
				return fmt.Errorf("keys left under %s after the migration", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The moved queues go on: records follow the moved ones, and acknowledgements and
	// retention delete them.
	if last, err := s.Enqueue(v2OutSSA, [][]byte{[]byte(`{"after":"migration"}`)}, 1, 0); err != nil || last != v2OutEnd+1 {
		t.Fatalf("enqueue after the migration: %d, %v; want %d", last, err, v2OutEnd+1)
	}
	if err := s.Ack(v2OutSSA, v2OutEnd+1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteRecordsReceivedBefore(v2InSSA, v2Received[1]); err != nil || n != v2InRunEnd-v2InHead {
		t.Fatalf("retention after the migration deleted %d (%v), want %d", n, err, v2InRunEnd-v2InHead)
	}
}

// TestMigrateRecords: the migration to version 3 moves the live records of a version 2 store
// into segment files, unchanged and in order with their receive times, drops the dead
// records and the orphans, and leaves the queues working.
func TestMigrateRecords(t *testing.T) {
	dir := t.TempDir()
	writeV2Store(t, dir)
	var logs logBuffer
	s, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	closeStore(t, s)
	// Moved: the live records. Dropped: the outbox's records up to its Head and its orphans,
	// the inbox's up to its Head.
	want := fmt.Sprintf("records=%d dropped=%d", v2OutEnd-v2OutHead+v2InEnd-v2InHead, v2OutHead-v2OutFirst+1+v2Orphans+v2InHead)
	if !strings.Contains(logs.String(), want) {
		t.Errorf("the migration's log does not say %q:\n%s", want, logs.String())
	}
	checkV2Moved(t, dir)
}

// envMigrateRecordsDir names the store TestMigrateRecordsHelperProcess migrates.
const envMigrateRecordsDir = "SSANET_TEST_MIGRATE_RECORDS_DIR"

// TestMigrateRecordsHelperProcess is TestMigrateRecordsCrash's child: it opens the store,
// which moves its records, printing a line per chunk moved, and waits to be killed.
func TestMigrateRecordsHelperProcess(t *testing.T) {
	dir := os.Getenv(envMigrateRecordsDir)
	if dir == "" {
		t.Skip("run by TestMigrateRecordsCrash only")
	}
	if _, err := fmt.Println(crashReady); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	select {} // the parent kills this process
}

// TestMigrateRecordsCrash kills a process moving the records at a random chunk, and checks
// that the next Open resumes the move and ends with every live record, once.
func TestMigrateRecordsCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	template := t.TempDir()
	writeV2Store(t, template)
	for round := range 3 {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(template)); err != nil {
			t.Fatal(err)
		}
		killAt := 1 + rand.IntN(8) // the chunks of 1024 keys, and the lines around them
		lines := killChild(t, "TestMigrateRecordsHelperProcess", killAt, 5*time.Second, envMigrateRecordsDir+"="+dir)
		t.Logf("round %d: killed after %d lines (asked at %d)", round, len(lines), killAt)
		checkV2Moved(t, dir)
	}
}

// TestMigrateRecordsStoppedRefusedByOldVersion: once the move has begun, a program of
// version 2 refuses the store (ErrStoreNewer) rather than read it with its records half
// moved, where it would find them missing; the current version resumes the move. The move
// runs on its own (migration.run), outside the visits that write the migration's state with
// each chunk, and the store said version 2 until its end.
func TestMigrateRecordsStoppedRefusedByOldVersion(t *testing.T) {
	dir := t.TempDir()
	writeV2Store(t, dir)
	errStop := errors.New("stopped after one chunk")
	stopped := migrateRecords
	stopped.run = func(s *Store) error {
		if n, _, err := s.moveChunk([]byte(v2PrefixOutbox)); err != nil || n == 0 {
			return fmt.Errorf("moved %d keys: %v", n, err)
		}
		return errStop
	}
	if _, err := open(dir, Options{schema: &schema{version: 3, migrations: []migration{migrateQueueKeys, stopped}}}, false); !errors.Is(err, errStop) {
		t.Fatalf("open with a move stopped after one chunk: %v", err)
	}
	s, err := open(dir, Options{schema: &schema{version: 2, migrations: currentSchema.migrations[:1]}}, false)
	if err == nil {
		closeStore(t, s)
	}
	if !errors.Is(err, ErrStoreNewer) {
		t.Fatalf("a program of version 2 opens the half-moved store: %v, want ErrStoreNewer", err)
	}
	checkV2Moved(t, dir)
}
