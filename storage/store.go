package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Errors of the store. Callers branch on them with errors.Is.
var (
	// ErrNotFound means no record has the ID asked for.
	ErrNotFound = errors.New("storage: not found")
	// ErrCorrupt means a stored record does not decode, or an agreement's signatures do not
	// verify: the files were damaged or altered.
	ErrCorrupt = errors.New("storage: corrupt record")
	// ErrConflict means a Commit would rewrite what is stored (a transcript entry or an
	// agreement version), or an offer changed while DeleteOffer deleted it; nothing was
	// written.
	ErrConflict = errors.New("storage: commit conflicts with stored records")
	// ErrSSAInUse means a Commit names an SSA ID that is already bound to another
	// negotiation; nothing was written.
	ErrSSAInUse = errors.New("storage: SSA ID belongs to another negotiation")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("storage: store is closed")
)

// Options configures a Store. The zero value is a valid configuration: no encryption, no logs.
type Options struct {
	// EncryptionKey enables Badger encryption at rest when non-empty (16, 24 or 32 bytes, AES).
	EncryptionKey []byte
	// Logger receives Badger's warnings and errors. Nil: discard.
	Logger *slog.Logger
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch len(o.EncryptionKey) {
	case 0, 16, 24, 32:
		return nil
	}
	return fmt.Errorf("storage: encryption key is %d bytes, want 16, 24 or 32", len(o.EncryptionKey))
}

// Tuning for small machines. Memory in use is about NumMemtables*memTableSize plus the caches,
// whatever the number of records.
const (
	memTableSize     = 32 << 20
	numMemtables     = 2
	blockCacheSize   = 8 << 20 // must be > 0: blocks are compressed (and maybe encrypted)
	indexCacheSize   = 4 << 20 // encrypted stores only; see badgerOptions
	valueLogFileSize = 64 << 20
	numCompactors    = 2 // Badger's minimum
	// valueThreshold sends values this large or larger to the value log. Records are a few
	// KiB; a large envelope (up to protocol.MaxMessageSize) then costs a Badger batch a value
	// pointer only, so a Commit never exceeds the batch size of the small memtables.
	valueThreshold = 64 << 10
)

// schemaVersion is the version of the record layout in doc.go; m/schema holds it.
const schemaVersion byte = 1

// Store is an open ssanet store. It is safe for concurrent use.
type Store struct {
	// mu guards closed: methods hold it for reading while they use db (Commit until its group
	// is written), so Close waits for them and none uses db after Close.
	mu     sync.RWMutex
	closed bool
	db     *badger.DB

	// commits feeds the committer goroutine, which writes concurrent requests (Commits and
	// the exchange queues' writes) as groups, one Badger transaction and one fsync per group.
	// Close stops it with stop and waits on done.
	commits chan request
	stop    chan struct{}
	done    chan struct{}
	// groups counts the transactions the committer has written: commits per group is the
	// number of Commits that shared an fsync.
	groups atomic.Int64

	// sent holds what MarkSent recorded per SSA, until the SSA's outbox state is written.
	sentMu sync.Mutex
	sent   map[string]uint64
}

// Open opens the store in dir, creating dir (mode 0700) and the store if needed.
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, true)
}

// open is Open with fsync optional, so tests can fill a store quickly.
func open(dir string, opts Options, sync bool) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	db, err := badger.Open(badgerOptions(dir, opts, sync))
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("storage: open %s: wrong or missing encryption key: %w", dir, err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s := &Store{db: db, commits: make(chan request), stop: make(chan struct{}), done: make(chan struct{}),
		sent: make(map[string]uint64)}
	if err := s.checkSchema(); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	go s.committer()
	return s, nil
}

func badgerOptions(dir string, opts Options, sync bool) badger.Options {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := badger.DefaultOptions(dir).
		WithSyncWrites(sync).
		WithLogger(badgerLogger{logger}).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(blockCacheSize).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(numCompactors).
		WithNumGoroutines(2).
		WithCompression(options.Snappy)
	if len(opts.EncryptionKey) > 0 {
		// An unencrypted table's index is read in place from the mapped file; an encrypted
		// one is decrypted onto the heap, and without an index cache every table's index
		// would stay there, growing with the data.
		o = o.WithEncryptionKey(opts.EncryptionKey).WithIndexCacheSize(indexCacheSize)
	}
	return o
}

// checkSchema records the schema version of a new store and refuses a store written with a
// layout this code does not know.
func (s *Store) checkSchema() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keySchema)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(keySchema, []byte{schemaVersion})
		}
		if err != nil {
			return fmt.Errorf("storage: read schema version: %w", err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("storage: read schema version: %w", err)
		}
		if len(v) != 1 || v[0] != schemaVersion {
			return fmt.Errorf("%w: schema version %x, this program reads %d", ErrCorrupt, v, schemaVersion)
		}
		return nil
	})
}

// Close closes the store, waiting for running calls to return. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	<-s.done
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// view runs fn in a read-only transaction.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// update runs fn in a read-write transaction and commits it durably.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	err := s.db.Update(fn)
	if errors.Is(err, badger.ErrConflict) {
		return fmt.Errorf("%w: a concurrent commit wrote the same records", ErrConflict)
	}
	return err
}

// badgerLogger passes Badger's warnings and errors to slog and drops the rest: Badger is
// chatty at Info level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.log(slog.LevelError, f, a) }

func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }

func (badgerLogger) Infof(string, ...any) {}

func (badgerLogger) Debugf(string, ...any) {}

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, "badger: "+strings.TrimSpace(fmt.Sprintf(f, a...)))
}
