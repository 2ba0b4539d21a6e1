package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// indexedSchema is a schema version 2 for tests: its migration adds, for every negotiation
// record n/<nid>, a key X/<nid> holding the negotiation's SSA ID, and rewrites nothing else,
// so that every object of version 1 reads the same after it. chunk is the keys a transaction
// visits.
func indexedSchema(chunk int) *schema {
	return &schema{version: 2, migrations: []migration{{
		to: 2, what: "index negotiations by ID (test)", prefix: []byte(prefixNegotiation), chunk: chunk,
		visit: func(txn *badger.Txn, k, v []byte) error {
			n, _, err := decodeNegotiation(k[len(prefixNegotiation):], v)
			if err != nil {
				return err
			}
			return txn.Set(append([]byte("X/"), n.ID...), []byte(n.SSAID))
		},
	}}}
}

// copyingSchema is a schema version 2 for tests whose migration copies every outbox record
// q/... to X/q/..., chunk keys per transaction, calling visited with each key.
func copyingSchema(chunk int, visited func(k []byte)) *schema {
	return &schema{version: 2, migrations: []migration{{
		to: 2, what: "copy the outbox records (test)", prefix: []byte(prefixOutbox), chunk: chunk,
		visit: func(txn *badger.Txn, k, v []byte) error {
			if visited != nil {
				visited(k)
			}
			return txn.Set(append([]byte("X/"), k...), append([]byte(nil), v...))
		},
	}}}
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

// TestMigrateFixture upgrades the store written by schema version 1 with a test migration to
// version 2, reads back every object of version 1 and what the migration wrote, and checks
// the log and that a program of version 1 then refuses the store.
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
		if !bytes.Equal(v, []byte{2}) {
			t.Errorf("schema after the migration: %x, want 02", v)
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
	for _, want := range []string{`msg="storage: migrating the store" from=1 to=2`, `msg="storage: migrated the store" from=1 to=2 records=1 transactions=2`} {
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

	// This program (version 1) refuses the store of version 2.
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrStoreNewer) || !strings.Contains(err.Error(), "schema version 2, this program reads up to 1") {
		t.Fatalf("open a store of schema version 2 with version 1: %v, want ErrStoreNewer", err)
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
		{"current", []byte{1}, nil, []byte{1}},
		{"newer", []byte{2}, ErrStoreNewer, []byte{2}},
		{"migration to a newer version under way", []byte{1, 2, 'n', '/'}, ErrStoreNewer, []byte{1, 2, 'n', '/'}},
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
	if _, err := s.Enqueue("ssa-migrate", records, migrateCrashRecords, 0); err != nil {
		t.Fatal(err)
	}
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
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixOutbox)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().Key()
				want := st.version == 2 || st.migrating && bytes.Compare(k, st.after) <= 0
				if copied[string(k)] != want {
					t.Errorf("record %x copied: %t, but the schema record says %+v", k, copied[string(k)], st)
				}
			}
			return nil
		})
		if !(st.version == 1 && (st.migrating || len(copied) == 0) || st.version == 2 && !st.migrating) {
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
		got, err := s.Pending("ssa-migrate", 0, 2*migrateCrashRecords, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(records) {
			t.Fatalf("round %d: %d records pending after the migration, want %d", round, len(got), len(records))
		}
		for i, r := range got {
			if !bytes.Equal(r.Data, records[i]) {
				t.Fatalf("round %d: record %d reads %q, want %q", round, r.Seq, r.Data, records[i])
			}
		}
		err = s.view(func(txn *badger.Txn) error {
			if v, err := get(txn, keySchema); err != nil || !bytes.Equal(v, []byte{2}) {
				return fmt.Errorf("schema record after the migration %x (%v), want 02", v, err)
			}
			for i := range records {
				k := seqKey(outboxPrefix("ssa-migrate"), uint64(i+1))
				v, err := get(txn, append([]byte("X/"), k...))
				if err != nil || !bytes.Equal(v, records[i]) {
					return fmt.Errorf("record %d copied as %q (%v)", i+1, v, err)
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
	if _, err := s.Enqueue("ssa-fan", data, records, 0); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	fan := &schema{version: 2, migrations: []migration{{
		to: 2, what: "fan out (test)", prefix: []byte(prefixOutbox),
		visit: func(txn *badger.Txn, k, v []byte) error {
			for i := range fanOut {
				if err := txn.Set(fmt.Appendf([]byte("X/"), "%x/%d", k, i), append([]byte(nil), v...)); err != nil {
					return err
				}
			}
			return nil
		},
	}}}
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
