package storage

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Migrations. The record layout (doc.go) has a version, kept under m/schema. A program reads
// the layout of its own version and upgrades an older store on Open, one version at a time,
// each step a migration from version N to N+1 in the ordered list below. A store newer than
// the program is refused (ErrStoreNewer), never read.
//
// A migration visits the keys under one prefix in key order, a chunk per transaction, and
// rewrites what it must (any key, in the same transaction). The last key it visited is
// written with the chunk, into m/schema itself, which holds three things while a migration
// runs: the version it migrates from, the one it migrates to, and that key. So a kill at any
// moment leaves either the old version with the chunks done so far, from which the next Open
// resumes after the last key, or the new version; and a program of the old version, which
// reads a one-byte m/schema only, refuses the half-migrated store rather than read it. The
// migration's last transaction runs its finish (if any) and writes the new version alone.

// ErrStoreNewer means the store was written by a newer ssanet, with a record layout this
// program does not know: run that version (or a later one), or restore into a new home a
// backup that this version wrote.
var ErrStoreNewer = errors.New("storage: store is newer than this program")

// migration upgrades a store from schema version to-1 to version to.
type migration struct {
	to byte
	// what says what the migration changes, for the log.
	what string
	// prefix is the keys visit is called for, in key order. Nil: visit is not called.
	// prefixes, when set instead, are several, visited one after the other: in key order,
	// none a prefix of another.
	prefix   []byte
	prefixes [][]byte
	// visit rewrites the record k (holding v, which is valid during the call only) in txn.
	// Records written under prefix beyond k are visited too, so they must be of the new
	// layout, which visit leaves as they are.
	visit func(txn *badger.Txn, k, v []byte) error
	// run, if set, migrates on its own after the visits (if any): in transactions of its
	// own, each leaving the store at the old version and readable by the next run, so that it
	// resumes after a kill.
	run func(s *Store) error
	// finish, if set, runs in the transaction that writes the new version.
	finish func(txn *badger.Txn) error
	// chunk is how many keys a transaction visits at most; 0: migrateChunk. Tests lower it.
	chunk int
}

// schema is a record layout version and the migrations up to it from version 1: migrations[i]
// upgrades version i+1 to i+2.
type schema struct {
	version    byte
	migrations []migration
}

// currentSchema is the layout this program writes. A new layout adds its migration here and
// raises schemaVersion (store.go).
var currentSchema = schema{version: schemaVersion, migrations: []migration{migrateQueueKeys, migrateRecords}}

// migrateQueueKeys (version 1 to 2) moves the exchange queues' states, runs and marks after
// their records (codec.go): each key keeps its value and its suffix under the new prefix.
var migrateQueueKeys = migration{
	to:   2,
	what: "key the exchange queues' states, runs and marks after their records",
	prefixes: [][]byte{[]byte(v1PrefixOutboxState), []byte(v1PrefixInboxState),
		[]byte(v1PrefixInboxRun), []byte(v1PrefixMark)},
	visit: func(txn *badger.Txn, k, v []byte) error {
		var to string
		switch string(k[:2]) {
		case v1PrefixOutboxState:
			to = prefixOutboxState
		case v1PrefixInboxState:
			to = prefixInboxState
		case v1PrefixInboxRun:
			to = prefixInboxRun
		case v1PrefixMark:
			to = v2PrefixMark
		default:
			return fmt.Errorf("%w: key %x under no prefix of the migration", ErrCorrupt, k)
		}
		if err := txn.Set(append([]byte(to), k[2:]...), bytes.Clone(v)); err != nil {
			return err
		}
		return txn.Delete(bytes.Clone(k))
	},
}

// keys returns the prefixes m visits, in key order.
func (m *migration) keys() [][]byte {
	if m.prefixes != nil {
		return m.prefixes
	}
	if m.prefix != nil {
		return [][]byte{m.prefix}
	}
	return nil
}

// migrateChunk bounds the keys one transaction of a migration visits; its values at most
// maxGroupBytes / 2. A chunk whose writes Badger finds too large for one transaction is
// retried in halves.
const migrateChunk = 1024

// check verifies that the migrations are numbered from 2 up to the version, in order.
func (sc *schema) check() error {
	if sc.version == 0 || int(sc.version) != len(sc.migrations)+1 {
		return fmt.Errorf("storage: schema version %d with %d migrations", sc.version, len(sc.migrations))
	}
	for i, m := range sc.migrations {
		if int(m.to) != i+2 || (len(m.keys()) == 0) != (m.visit == nil) || (m.prefix != nil && m.prefixes != nil) {
			return fmt.Errorf("storage: migration %d of the list goes to version %d (or has a prefix without visit)", i, m.to)
		}
	}
	return nil
}

// schemaState is what m/schema holds: the version, and while a migration runs, the version it
// goes to and the last key it visited (none yet: nil).
type schemaState struct {
	version   byte
	migrating bool
	to        byte
	after     []byte
}

func parseSchema(v []byte) (schemaState, error) {
	switch {
	case len(v) == 1 && v[0] > 0:
		return schemaState{version: v[0]}, nil
	case len(v) >= 2 && v[0] > 0 && v[1] == v[0]+1:
		st := schemaState{version: v[0], migrating: true, to: v[1]}
		if len(v) > 2 {
			st.after = append([]byte(nil), v[2:]...)
		}
		return st, nil
	}
	return schemaState{}, fmt.Errorf("%w: schema version record %x", ErrCorrupt, v)
}

func (st schemaState) bytes() []byte {
	if !st.migrating {
		return []byte{st.version}
	}
	return append([]byte{st.version, st.to}, st.after...)
}

// migrate brings the store's schema to sc.version: it writes that version into a new store,
// runs the migrations a store of an older version needs (resuming one a crash cut short), and
// refuses a newer store. It runs in Open, before the committer.
func (s *Store) migrate(sc *schema) error {
	if err := sc.check(); err != nil {
		return err
	}
	var st schemaState
	err := s.db.Update(func(txn *badger.Txn) error {
		v, err := get(txn, keySchema)
		if errors.Is(err, ErrNotFound) {
			// A new store. One that holds records without a version is not: labelled with
			// this version, records of an older layout would be misread (an outbox whose
			// state is not found starts again at record 1, over its stored records).
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			k := it.Valid()
			var first []byte
			if k {
				first = it.Item().KeyCopy(nil)
			}
			it.Close()
			if k {
				return fmt.Errorf("%w: the store holds records (the first %q) but no schema version", ErrCorrupt, first)
			}
			st = schemaState{version: sc.version}
			return txn.Set(keySchema, st.bytes())
		}
		if err != nil {
			return err
		}
		st, err = parseSchema(v)
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: read the schema version of %s: %w", s.dir, err)
	}
	if st.version > sc.version || (st.migrating && st.to > sc.version) {
		return fmt.Errorf("%w: %s has schema version %d, this program reads up to %d: run the ssanet that wrote it (or a later one)",
			ErrStoreNewer, s.dir, max(st.version, st.to), sc.version)
	}
	for st.version < sc.version {
		m := &sc.migrations[st.version-1]
		if st, err = s.runMigration(m, st); err != nil {
			return fmt.Errorf("storage: migrate %s from schema version %d to %d (%s): %w; the store is left at version %d, and the next start resumes the migration",
				s.dir, m.to-1, m.to, m.what, err, m.to-1)
		}
	}
	return nil
}

// runMigration runs m on a store at version m.to-1, from where st says it stopped, and
// returns the state at version m.to.
func (s *Store) runMigration(m *migration, st schemaState) (schemaState, error) {
	start := time.Now()
	if st.migrating {
		s.log.Info("storage: resuming the migration of the store", "from", st.version, "to", m.to, "what", m.what, "after", fmt.Sprintf("%q", st.after))
	} else {
		s.log.Info("storage: migrating the store", "from", st.version, "to", m.to, "what", m.what)
		st = schemaState{version: st.version, migrating: true, to: m.to}
		// Stored before the first change, so that a program of the old version refuses the
		// store from then on: the visits store it with each chunk, but run, on its own, left
		// the old version there until its end (TestMigrateRecordsStoppedRefusedByOldVersion).
		if err := s.update(func(txn *badger.Txn) error { return txn.Set(keySchema, st.bytes()) }); err != nil {
			return st, err
		}
	}
	chunk := m.chunk
	if chunk <= 0 {
		chunk = migrateChunk
	}
	visited, chunks := 0, 0
	// Every chunk visits at least one key after the last, or ends the loop: it ends.
	for done := m.visit == nil; !done; {
		var n int
		var last bool
		next := st
		err := s.update(func(txn *badger.Txn) error {
			var err error
			if n, next.after, last, err = visitChunk(txn, m, st.after, chunk); err != nil || n == 0 {
				return err
			}
			return txn.Set(keySchema, next.bytes())
		})
		switch {
		case errors.Is(err, badger.ErrTxnTooBig) && chunk > 1:
			chunk /= 2
			continue
		case err != nil:
			return st, err
		}
		st, done = next, last
		visited += n
		if n > 0 {
			chunks++
		}
	}
	if m.run != nil {
		if err := m.run(s); err != nil {
			return st, err
		}
	}
	err := s.update(func(txn *badger.Txn) error {
		if m.finish != nil {
			if err := m.finish(txn); err != nil {
				return err
			}
		}
		return txn.Set(keySchema, []byte{m.to})
	})
	if err != nil {
		return st, err
	}
	s.log.Info("storage: migrated the store", "from", m.to-1, "to", m.to, "records", visited, "transactions", chunks+1,
		"took", time.Since(start).Round(time.Millisecond))
	return schemaState{version: m.to}, nil
}

// visitChunk visits up to n keys under m.prefix after the key after (from the first: nil) in
// txn, and up to maxGroupBytes/2 of their values. It returns how many it visited, the last
// one, and whether none is left.
func visitChunk(txn *badger.Txn, m *migration, after []byte, n int) (visited int, last []byte, done bool, err error) {
	// Keys are collected first: the visits write, and an iterator of txn would see the
	// writes.
	type kv struct{ k, v []byte }
	var batch []kv
	size := 0
	done = true
	for _, p := range m.keys() {
		if after != nil && !bytes.HasPrefix(after, p) && bytes.Compare(after, p) > 0 {
			continue // every key under p is before after: visited
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
		seek := p
		if after != nil && bytes.HasPrefix(after, p) {
			seek = append(append([]byte(nil), after...), 0) // the first key after after
		}
		for it.Seek(seek); it.Valid() && len(batch) < n && (len(batch) == 0 || size < maxGroupBytes/2); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return 0, nil, false, err
			}
			batch = append(batch, kv{item.KeyCopy(nil), v})
			size += len(v)
		}
		more := it.Valid()
		it.Close()
		if more {
			done = false
			break
		}
	}
	for _, e := range batch {
		if after != nil && bytes.Compare(e.k, after) <= 0 {
			return 0, nil, false, fmt.Errorf("%w: key %x visited again after %x", ErrCorrupt, e.k, after)
		}
		if err := m.visit(txn, e.k, e.v); err != nil {
			return 0, nil, false, fmt.Errorf("record %x: %w", e.k, err)
		}
	}
	if len(batch) == 0 {
		return 0, after, true, nil
	}
	return len(batch), batch[len(batch)-1].k, done, nil
}
