package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// testSchema is this program's schema with m as one more migration, to the next version
// (schemaVersion+1).
func testSchema(m migration) *schema {
	m.to = schemaVersion + 1
	return &schema{version: schemaVersion + 1, migrations: append(slices.Clone(currentSchema.migrations), m)}
}

// indexedSchema is a schema of the next version for tests: its migration adds, for every
// negotiation record n/<nid>, a key X/<nid> holding the negotiation's SSA ID, and rewrites
// nothing else, so that every object of version 1 reads the same after it. chunk is the keys
// a transaction visits.
func indexedSchema(chunk int) *schema {
	return testSchema(migration{
		what: "index negotiations by ID (test)", prefix: []byte(prefixNegotiation), chunk: chunk,
		visit: func(txn *badger.Txn, k, v []byte) error {
			n, _, err := decodeNegotiation(k[len(prefixNegotiation):], v)
			if err != nil {
				return err
			}
			return txn.Set(append([]byte("X/"), n.ID...), []byte(n.SSAID))
		},
	})
}

// testKeys is the prefix of the keys the tests' migrations visit: testKey(prefix, i) for
// i from 1, written by putTestKeys.
const testKeys = "T/"

func testKey(i int) []byte { return seqKey([]byte(testKeys), uint64(i)) }

// putTestKeys writes values under testKey(1), testKey(2), … in s.
func putTestKeys(t *testing.T, s *Store, values [][]byte) {
	t.Helper()
	for from := 0; from < len(values); from += 1000 {
		err := s.update(func(txn *badger.Txn) error {
			for i := from; i < min(from+1000, len(values)); i++ {
				if err := txn.Set(testKey(i+1), values[i]); err != nil {
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

// copyingSchema is a schema of the next version for tests whose migration copies every
// key T/... to X/T/..., chunk keys per transaction, calling visited with each key.
func copyingSchema(chunk int, visited func(k []byte)) *schema {
	return testSchema(migration{
		what: "copy the test keys (test)", prefix: []byte(testKeys), chunk: chunk,
		visit: func(txn *badger.Txn, k, v []byte) error {
			if visited != nil {
				visited(k)
			}
			return txn.Set(append([]byte("X/"), k...), append([]byte(nil), v...))
		},
	})
}

// logBuffer is a slog handler's output, safe for the store's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMigrateFixture upgrades the store written by schema version 1 with this program's
// migrations and a test migration to the next version, reads back every object of version 1
// and what the migration wrote, and checks the log and that this program then refuses the
// store.
func TestMigrateFixture(t *testing.T) {
	c := readV1Contents(t)
	dir := copyFixture(t)
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(dir, Options{schema: indexedSchema(0), Logger: log})
	if err != nil {
		t.Fatalf("open and migrate the store of schema version 1: %v", err)
	}
	checkV1Contents(t, s, c)
	err = s.view(func(txn *badger.Txn) error {
		v, err := get(txn, keySchema)
		if err != nil {
			return err
		}
		if !bytes.Equal(v, []byte{schemaVersion + 1}) {
			t.Errorf("schema after the migration: %x, want %02x", v, schemaVersion+1)
		}
		v, err = get(txn, append([]byte("X/"), c.Negotiation.ID...))
		if err != nil {
			return fmt.Errorf("what the migration wrote: %w", err)
		}
		if string(v) != c.Negotiation.SSAID {
			t.Errorf("migration wrote %q for the negotiation, want %q", v, c.Negotiation.SSAID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	for _, want := range []string{`msg="storage: migrating the store" from=1 to=2`, `msg="storage: migrated the store" from=1 to=2`,
		fmt.Sprintf(`msg="storage: migrated the store" from=%d to=%d records=1 transactions=2`, schemaVersion, schemaVersion+1)} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}

	// Opened again: nothing to migrate.
	before := logs.String()
	if s, err = Open(dir, Options{schema: indexedSchema(0), Logger: log}); err != nil {
		t.Fatal(err)
	}
	checkV1Contents(t, s, c)
	closeStore(t, s)
	if after := logs.String(); strings.Contains(after[len(before):], "migrat") {
		t.Errorf("second open migrated again: %s", after[len(before):])
	}

	// This program refuses the store of the next version.
	_, err = Open(dir, Options{})
	if want := fmt.Sprintf("schema version %d, this program reads up to %d", schemaVersion+1, schemaVersion); !errors.Is(err, ErrStoreNewer) || !strings.Contains(err.Error(), want) {
		t.Fatalf("open a store of schema version %d with version %d: %v, want ErrStoreNewer", schemaVersion+1, schemaVersion, err)
	}
}

// TestSchemaRecord checks what Open does with each kind of schema record.
func TestSchemaRecord(t *testing.T) {
	cases := []struct {
		name   string
		stored []byte
		want   error  // nil: opens
		after  []byte // the schema record after Open
	}{
		{"current", []byte{schemaVersion}, nil, []byte{schemaVersion}},
		{"older", []byte{1}, nil, []byte{schemaVersion}},
		{"newer", []byte{schemaVersion + 1}, ErrStoreNewer, []byte{schemaVersion + 1}},
		{"migration to a newer version under way", []byte{schemaVersion, schemaVersion + 1, 'n', '/'}, ErrStoreNewer, []byte{schemaVersion, schemaVersion + 1, 'n', '/'}},
		{"version 0", []byte{0}, ErrCorrupt, []byte{0}},
		{"empty", []byte{}, ErrCorrupt, []byte{}},
		{"migration skipping a version", []byte{1, 3}, ErrCorrupt, []byte{1, 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			setSchemaRecord(t, dir, tc.stored)
			s, err := Open(dir, Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
			if err == nil {
				closeStore(t, s)
			}
			if got := schemaRecord(t, dir); !bytes.Equal(got, tc.after) {
				t.Errorf("schema record after open: %x, want %x", got, tc.after)
			}
		})
	}
}

// TestSchemaRecordMissing: a store that holds records but no schema record is refused, not
// taken for a new store and labelled with this version.
func TestSchemaRecordMissing(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue("ssa", [][]byte{[]byte(`{"n":1}`)}, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(txn *badger.Txn) error { return txn.Delete(keySchema) }); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	if s, err = Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			closeStore(t, s)
		}
		t.Fatalf("open a store with records and no schema record: %v, want ErrCorrupt", err)
	}
	withBadger(t, dir, func(txn *badger.Txn) error {
		if _, err := get(txn, keySchema); !errors.Is(err, ErrNotFound) {
			t.Errorf("schema record after the refused open: %v, want none", err)
		}
		return nil
	})
}

// TestSchemaList checks the list of migrations of this program.
func TestSchemaList(t *testing.T) {
	if err := currentSchema.check(); err != nil {
		t.Fatal(err)
	}
	bad := []schema{
		{version: 2},
		{version: 2, migrations: []migration{{to: 3, prefix: []byte("n/"), visit: indexedSchema(0).migrations[0].visit}}},
		{version: 2, migrations: []migration{{to: 2, prefix: []byte("n/")}}},
	}
	for i, sc := range bad {
		if err := sc.check(); err == nil {
			t.Errorf("schema %d: %+v accepted", i, sc)
		}
	}
}

// setSchemaRecord writes a new store in dir whose schema record is v.
func setSchemaRecord(t *testing.T, dir string, v []byte) {
	t.Helper()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(txn *badger.Txn) error { return txn.Set(keySchema, v) }); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
}

// schemaRecord reads the schema record of the store in dir with Badger alone.
func schemaRecord(t *testing.T, dir string) []byte {
	t.Helper()
	var v []byte
	withBadger(t, dir, func(txn *badger.Txn) error {
		var err error
		v, err = get(txn, keySchema)
		return err
	})
	return v
}

// withBadger runs fn in a read-only transaction of the store in dir, opened with Badger alone:
// no migration runs.
func withBadger(t *testing.T, dir string, fn func(txn *badger.Txn) error) {
	t.Helper()
	if err := removeEmptyMemtables(dir); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badgerOptions(dir, Options{}, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(fn); err != nil {
		t.Error(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// The migration crash test's child is this test binary, run with this variable set.
const envMigrateDir = "SSANET_STORAGE_MIGRATE_DIR"

const (
	migrateCrashRecords = 3000
	migrateCrashChunk   = 16
	migrateCrashRounds  = 3
)

// TestMigrateHelperProcess is the migration crash test's child: it opens the store, running
// copyingSchema's migration, prints each key it visits, and waits to be killed.
func TestMigrateHelperProcess(t *testing.T) {
	dir := os.Getenv(envMigrateDir)
	if dir == "" {
		t.Skip("run by TestMigrateCrash only")
	}
	if _, err := fmt.Println(crashReady); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{schema: copyingSchema(migrateCrashChunk, func(k []byte) {
		if _, err := fmt.Printf("%x\n", k); err != nil {
			panic(err)
		}
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	if _, err := fmt.Println("migrated"); err != nil {
		t.Fatal(err)
	}
	select {} // the parent kills this process
}

// TestMigrateCrash kills a process in the middle of a migration of a store with many keys,
// at a random key, and checks that the store is at the old version with whole chunks done
// and the last key visited recorded, or at the new one; then that the next Open resumes the
// migration and ends it, and that the store reads the same.
func TestMigrateCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	template := t.TempDir()
	s, err := open(template, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	var records [][]byte
	for i := range migrateCrashRecords {
		records = append(records, fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%200)))
	}
	putTestKeys(t, s, records)
	closeStore(t, s)

	for round := range migrateCrashRounds {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(template)); err != nil {
			t.Fatal(err)
		}
		killAt := 1 + rand.IntN(migrateCrashRecords)
		lines := killChild(t, "TestMigrateHelperProcess", killAt, 5*time.Second, envMigrateDir+"="+dir)
		t.Logf("round %d: killed after %d of %d keys visited (asked at %d)", round, len(lines), migrateCrashRecords, killAt)

		// What the kill left: the old version with the chunks up to the last key recorded,
		// or the new version with every record copied.
		var st schemaState
		copied := map[string]bool{}
		withBadger(t, dir, func(txn *badger.Txn) error {
			v, err := get(txn, keySchema)
			if err != nil {
				return err
			}
			if st, err = parseSchema(v); err != nil {
				return err
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("X/")})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				copied[string(it.Item().Key()[2:])] = true
			}
			return nil
		})
		t.Logf("round %d: schema record after the kill: %+v, %d records copied", round, st, len(copied))
		withBadger(t, dir, func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(testKeys)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().Key()
				want := st.version == schemaVersion+1 || st.migrating && bytes.Compare(k, st.after) <= 0
				if copied[string(k)] != want {
					t.Errorf("record %x copied: %t, but the schema record says %+v", k, copied[string(k)], st)
				}
			}
			return nil
		})
		if !(st.version == schemaVersion && (st.migrating || len(copied) == 0) || st.version == schemaVersion+1 && !st.migrating) {
			t.Errorf("schema record %+v after a kill", st)
		}

		// The next Open resumes and ends the migration; the store reads the same.
		var logs logBuffer
		s, err := Open(dir, Options{schema: copyingSchema(migrateCrashChunk, nil), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("round %d: open after the kill: %v", round, err)
		}
		if st.migrating && !strings.Contains(logs.String(), "resuming the migration") {
			t.Errorf("round %d: no resumption logged: %s", round, logs.String())
		}
		err = s.view(func(txn *badger.Txn) error {
			if v, err := get(txn, keySchema); err != nil || !bytes.Equal(v, []byte{schemaVersion + 1}) {
				return fmt.Errorf("schema record after the migration %x (%v), want %02x", v, err, schemaVersion+1)
			}
			for i := range records {
				k := testKey(i + 1)
				if v, err := get(txn, k); err != nil || !bytes.Equal(v, records[i]) {
					return fmt.Errorf("key %d reads %q (%v) after the migration, want %q", i+1, v, err, records[i])
				}
				v, err := get(txn, append([]byte("X/"), k...))
				if err != nil || !bytes.Equal(v, records[i]) {
					return fmt.Errorf("key %d copied as %q (%v)", i+1, v, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		closeStore(t, s)
	}
}

// TestMigrateHalvesChunk: a migration that writes more per key than a chunk of the default
// size fits in one Badger transaction goes on in smaller chunks.
func TestMigrateHalvesChunk(t *testing.T) {
	const records, fanOut = 1500, 10
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	data := make([][]byte, records)
	for i := range data {
		data[i] = fmt.Appendf(nil, "record %d", i)
	}
	putTestKeys(t, s, data)
	closeStore(t, s)
	fan := testSchema(migration{
		what: "fan out (test)", prefix: []byte(testKeys),
		visit: func(txn *badger.Txn, k, v []byte) error {
			for i := range fanOut {
				if err := txn.Set(fmt.Appendf([]byte("X/"), "%x/%d", k, i), append([]byte(nil), v...)); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if s, err = open(dir, Options{schema: fan}, false); err != nil {
		t.Fatalf("migrate with %d writes per key: %v", fanOut, err)
	}
	defer closeStore(t, s)
	n := 0
	err = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("X/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil || n != records*fanOut {
		t.Fatalf("%d keys written by the migration (%v), want %d", n, err, records*fanOut)
	}
}

// TestMigrateQueueKeys: the migration to version 2 moves the exchange queues' states, runs
// and marks of the version 1 fixture after the records, each value unchanged, and leaves
// nothing under the old prefixes; the store then reads the same (checkV1Contents), retention
// finds the runs it moved, and the mark of a large batch that a crash cut short under
// version 1 still has its orphan deleted at Open.
func TestMigrateQueueKeys(t *testing.T) {
	c := readV1Contents(t)
	dir := copyFixture(t)
	queue := ssaPrefix(v2PrefixOutbox, fixtureOutSSA, 8)
	orphan := seqKey(queue, 1000) // beyond the outbox's Refined (3)
	db, err := badger.Open(badgerOptions(dir, Options{}, false))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(append([]byte(v1PrefixMark), queue...), nil); err != nil {
			return err
		}
		return txn.Set(orphan, []byte(`{"orphan":true}`))
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	moved := map[string]string{v1PrefixOutboxState: prefixOutboxState, v1PrefixInboxState: prefixInboxState,
		v1PrefixInboxRun: prefixInboxRun, v1PrefixMark: v2PrefixMark}
	before := map[string][]byte{} // key under an old prefix: value
	withBadger(t, dir, func(txn *badger.Txn) error {
		for old := range moved {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(old)})
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				before[string(it.Item().KeyCopy(nil))] = v
			}
			it.Close()
		}
		return nil
	})
	runs := 0
	for k := range before {
		if strings.HasPrefix(k, v1PrefixInboxRun) {
			runs++
		}
	}
	if len(before) < 4 || runs == 0 {
		t.Fatalf("the fixture has %d keys to move (%d runs): want states, runs and the mark", len(before), runs)
	}

	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open and migrate: %v", err)
	}
	checkV1Contents(t, s, c)
	closeStore(t, s)
	withBadger(t, dir, func(txn *badger.Txn) error {
		for k, v := range before {
			nk := append([]byte(moved[k[:2]]), k[2:]...)
			got, err := get(txn, nk)
			switch {
			case k[:2] == v1PrefixMark: // Open deleted the orphan and the mark
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("the mark %q after Open: %v, want it deleted with its orphan", nk, err)
				}
			case err != nil || !bytes.Equal(got, v):
				t.Errorf("%q moved to %q: %x (%v), want %x", k, nk, got, err, v)
			}
			if _, err := get(txn, []byte(k)); !errors.Is(err, ErrNotFound) {
				t.Errorf("%q is still there: %v", k, err)
			}
		}
		if _, err := get(txn, orphan); !errors.Is(err, ErrNotFound) {
			t.Errorf("the orphan of the version 1 mark after Open: %v, want it deleted", err)
		}
		return nil
	})

	// Retention reads the runs where the migration put them.
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	n, err := s.DeleteRecordsReceivedBefore(c.Negotiation.SSAID, c.Inbox[len(c.Inbox)-1].ReceivedAt.Add(time.Second))
	if err != nil || n != len(c.Inbox) {
		t.Fatalf("retention after the migration deleted %d records (%v), want %d", n, err, len(c.Inbox))
	}
}

// TestMigrateSeveralPrefixes: a migration over several prefixes visits every key under each
// once, in key order, in chunks that run from one prefix into the next (resuming after the
// last key visited), and skips an empty prefix.
func TestMigrateSeveralPrefixes(t *testing.T) {
	dir := t.TempDir()
	s, err := open(dir, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"X/1", "X/2", "X/3", "Z/1", "Z/2"} // nothing under Y/
	if err := s.update(func(txn *badger.Txn) error {
		for _, k := range want {
			if err := txn.Set([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	var visited []string
	sc := testSchema(migration{what: "several prefixes (test)", prefixes: [][]byte{[]byte("X/"), []byte("Y/"), []byte("Z/")}, chunk: 2,
		visit: func(txn *badger.Txn, k, v []byte) error {
			if string(v) != "v"+string(k) {
				return fmt.Errorf("key %q holds %q", k, v)
			}
			visited = append(visited, string(k))
			return nil
		}})
	var logs logBuffer
	if s, err = open(dir, Options{schema: sc, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, false); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	if !slices.Equal(visited, want) {
		t.Errorf("visited %q, want %q", visited, want)
	}
	if w := "records=5 transactions=4"; !strings.Contains(logs.String(), w) {
		t.Errorf("log lacks %s (chunks of 2 across the prefixes, and the last transaction):\n%s", w, logs.String())
	}
}
