package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	// ErrEvidenceFull means an SSA already keeps MaxEvidence batches of evidence; nothing
	// was written.
	ErrEvidenceFull = errors.New("storage: evidence of this SSA is full")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("storage: store is closed")
)

// Options configures a Store. The zero value is a valid configuration: no encryption, no logs.
type Options struct {
	// EncryptionKey enables Badger encryption at rest when non-empty (16, 24 or 32 bytes, AES).
	EncryptionKey []byte
	// Logger receives Badger's warnings and errors, and what migrations do (migrate.go). Nil:
	// discard.
	Logger *slog.Logger
	// Reserve is the free space, besides the LSM tree's size, below which Enqueue and Receive
	// are refused with ErrDiskFull (see space.go). Zero: DefaultReserve. At least MinReserve.
	Reserve uint64
	// Profile is Badger's tuning: ProfileDefault ("" too) or ProfileSensor.
	Profile Profile

	// schema replaces currentSchema in tests (migrate.go).
	schema *schema
}

// Profile names a tuning of Badger's memory.
type Profile string

const (
	// ProfileDefault is the tuning of the constants below: memory in use about 16 MiB besides
	// the pages of the store's files that the kernel keeps mapped (all it has read or written,
	// until memory runs short).
	ProfileDefault Profile = "default"
	// ProfileSensor is for a sensor, whose memory belongs first to the IDS: a quarter of the
	// caches, memtables of half the size and tables of one size at every level (Badger
	// builds a table in memory, and by default doubles their size at each level), smaller
	// value log files, and the pages of the store's files mapped into the process handed back
	// to the kernel whenever the resident pages of mapped files grew past releaseBudget
	// (releaseOver), so that the resident memory does not grow with the store. The
	// price is CPU and reads: compactions and readers read the tables from the disk (or the
	// page cache) again. README "Performance" has the figures.
	ProfileSensor Profile = "sensor"
)

// Validate checks the options.
func (o *Options) Validate() error {
	switch o.Profile {
	case "", ProfileDefault, ProfileSensor:
	default:
		return fmt.Errorf("storage: unknown profile %q: want %q or %q", o.Profile, ProfileDefault, ProfileSensor)
	}
	if o.Reserve != 0 && o.Reserve < MinReserve {
		return fmt.Errorf("storage: reserve of %d bytes is below what Badger may write on its own, %d (%d MiB): raise it", o.Reserve, MinReserve, MinReserve>>20)
	}
	switch len(o.EncryptionKey) {
	case 0, 16, 24, 32:
		return nil
	}
	return fmt.Errorf("storage: encryption key is %d bytes, want 16, 24 or 32", len(o.EncryptionKey))
}

// Tuning for small machines. Memory in use is about NumMemtables*memTableSize plus the caches,
// whatever the number of records. The memtables and value log files are small so that the
// free space Badger may fill on its own (MinReserve, space.go) is small too: 16 MiB.
const (
	memTableSize     = 4 << 20
	numMemtables     = 2
	blockCacheSize   = 8 << 20 // must be > 0: blocks are compressed (and maybe encrypted)
	indexCacheSize   = 4 << 20 // encrypted stores only; see badgerOptions
	valueLogFileSize = 16 << 20
	numCompactors    = 2 // Badger's minimum
	// valueThreshold sends values this large or larger to the value log, leaving a 12-byte
	// pointer in the LSM tree. Smaller ones (transcript entries, agreements, the records'
	// index) live in the tree's tables, compressed. Badger does not compress the value log,
	// and frees a deleted value there only after a compaction happens to meet its key. The
	// exchange records live in segment files of their own (segment.go).
	valueThreshold = 64 << 10
	// blockSize and the compression (Snappy) trade disk for CPU. Measured once, with a
	// variant of BenchmarkRetentionDisk that stores 300,000 EVE records in batches of 500,
	// fsynced (CPU per record, disk per million records): records in the value log 3.8 µs,
	// 0.85 GB; in the tree with Snappy and 16 KiB blocks 12 µs, 0.36 GB; Snappy, 4 KiB
	// blocks 14 µs, 0.50 GB; ZSTD, 16 KiB blocks 19 µs, 0.26 GB.
	blockSize = 16 << 10
	// numLevelZeroTables is how many tables level 0 gathers before they are compacted into
	// the next level. Each such compaction rewrites the next level's tables between the
	// inbox states and the newest records, which is all of its records: gathering more
	// than Badger's default of 5 makes it rarer. With ZSTD, 15 cut the CPU per record
	// stored from 26-31 µs to 19-20 µs (same measure); with Snappy, 10 and 15 gave 12 and
	// 14 µs.
	numLevelZeroTables = 10
	// gcInterval is how often the value log's garbage collector looks for a file that is
	// half garbage (deleted values of valueThreshold or more) to rewrite and delete. It reads
	// nothing while no file is: Badger's compactions keep the discard statistics it picks
	// from.
	gcInterval       = 5 * time.Second
	gcDiscardPercent = 50
	gcDiscardRatio   = gcDiscardPercent / 100.0
)

// The sensor profile's tuning (ProfileSensor). Each is at most the default's, so that
// MinReserve (space.go) covers what Badger may write on its own with it too.
const (
	// sensorMemTableSize halves the memtables. Most of the heap is Badger's table builders
	// (a pure-Go build allocates them on the Go heap): a builder holds the whole table it
	// builds, uncompressed and compressed, in buffers that double as they fill, and Badger
	// keeps up to eight builders' buffers in a pool for the next tables, each as large as
	// the largest table it built. A level-0 table is a memtable's worth: with 4 MiB
	// memtables each pooled builder grew to 14 MiB, over 100 MiB in all, above the memory
	// limit (SensorMemoryLimit in agent), so the garbage collector ran all the time (a
	// quarter of both agents' CPU under ssanet-bench's stream); with 2 MiB, as with the
	// 1 MiB tables of the other levels, 6 MiB each.
	sensorMemTableSize = 2 << 20
	// sensorGroupBytes and sensorGroupEntries bound a group below Badger's transaction
	// limits with sensorMemTableSize (15 % of it, 307 KiB, and 3276 entries).
	sensorGroupBytes   = 256 << 10
	sensorGroupEntries = 2048
	// sensorLevelZeroTables keeps level 0 at the default profile's 20 MiB with half-size
	// memtables, so that compactions into level 1 (which rewrite its tables) are no more
	// frequent.
	sensorLevelZeroTables  = 10
	sensorBlockCacheSize   = 2 << 20
	sensorIndexCacheSize   = 1 << 20
	sensorValueLogFileSize = 8 << 20
	sensorBaseTableSize    = 1 << 20
	// releaseInterval is how often the resident pages of mapped files are looked at (one
	// read of /proc/self/statm), and releaseBudget how much they may grow before the pages
	// of the store's mapped files are handed back (releaseMapped, which reads
	// /proc/self/maps and advises every mapping). Compactions write and read tens of MB a
	// second through the mappings under a stream of 5,000 EVE records a second: handing
	// them back every 5 s let the resident memory reach 140 MB more than the heap, every
	// second about 30 MB (cmd/ssanet-bench); a budget looked at four times a second holds
	// it near the budget, and costs nothing while the store is quiet.
	releaseInterval = 250 * time.Millisecond
	releaseBudget   = 12 << 20
)

// errNoPageout is releaseMapped's error where the kernel does not know MADV_PAGEOUT: the
// collector stops releasing.
var errNoPageout = errors.New("storage: release mapped pages: the kernel does not know MADV_PAGEOUT (Linux 5.4 or later)")

// schemaVersion is the version of the record layout in doc.go; m/schema holds it.
const schemaVersion byte = 3

// Store is an open ssanet store. It is safe for concurrent use.
type Store struct {
	// mu guards closed: methods hold it for reading while they use db (Commit until its group
	// is written), so Close waits for them and none uses db after Close.
	// gcMu keeps Badger's value log GC apart from writes: writers share it, a GC round takes
	// it alone. Badger 4.9.6's RunValueLogGC reads the memtable's latest version without the
	// lock its writes take (a data race that -race reports whenever a rewrite meets a write).
	gcMu   sync.RWMutex
	mu     sync.RWMutex
	closed bool
	db     *badger.DB
	// dir is the store's directory; reserve is Options.Reserve or DefaultReserve (space.go).
	dir     string
	reserve uint64
	// key is Options.EncryptionKey: Backup writes a hash of it (backup.go).
	key []byte
	// releases counts the rounds of releaseMapped that releaseOver ran.
	releases atomic.Int64
	// profile is Options.Profile; groupBytes and groupEntries the bounds of a group that
	// go with its memtables (commit.go).
	profile                  Profile
	groupBytes, groupEntries int
	// refusedNeed is the free space the last records refused for lack of it needed, 0 once
	// records are taken again (Space.Paused).
	refusedNeed atomic.Uint64

	// commits feeds the committer goroutine, which writes concurrent requests (Commits and
	// the exchange queues' writes) as groups, one Badger transaction (and its syncs) per group.
	// Close stops it and the value log's garbage collector with stop, and waits on done and
	// gcDone.
	commits chan request
	stop    chan struct{}
	done    chan struct{}
	gcDone  chan struct{}
	// groups counts the transactions the committer has written: commits per group is the
	// number of Commits that shared an fsync.
	groups atomic.Int64
	// waiting counts the requests waiting to be taken by the committer.
	waiting atomic.Int32
	// gcRuns counts the value log files rewritten by the garbage collector.
	gcRuns atomic.Int64

	// sent holds what MarkSent recorded per SSA, until the SSA's outbox state is written.
	sentMu sync.Mutex
	sent   map[string]uint64
	// recs holds the exchange queues' records (segment.go).
	recs *recordLog

	log *slog.Logger
}

// Open opens the store in dir, creating dir (mode 0700) and the store if needed. It deletes
// the invisible records of a large Enqueue or Receive that a crash cut short (see doc.go).
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, true)
}

// open is Open with fsync optional, so tests can fill a store quickly, and Badger's options
// open to tests (tune).
func open(dir string, opts Options, sync bool, tune ...func(badger.Options) badger.Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	if err := checkOpenSpace(dir); err != nil {
		return nil, err
	}
	if err := removeEmptyMemtables(dir); err != nil {
		return nil, err
	}
	bo := badgerOptions(dir, opts, sync)
	for _, f := range tune {
		bo = f(bo)
	}
	db, err := badger.Open(bo)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("storage: open %s: wrong or missing encryption key: %w", dir, err)
		}
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
	s := &Store{db: db, commits: make(chan request), stop: make(chan struct{}), done: make(chan struct{}),
		gcDone: make(chan struct{}), sent: make(map[string]uint64), log: logger(opts), dir: dir, reserve: opts.Reserve,
		key: opts.EncryptionKey, profile: opts.Profile,
		groupBytes: maxGroupBytes, groupEntries: maxGroupEntries}
	if opts.Profile == ProfileSensor {
		s.groupBytes, s.groupEntries = sensorGroupBytes, sensorGroupEntries
	}
	if s.reserve == 0 {
		s.reserve = DefaultReserve
	}
	sc := &currentSchema
	if opts.schema != nil {
		sc = opts.schema
	}
	if s.recs, err = openRecordLog(dir, opts.EncryptionKey, db, s.log); err != nil { // segment.go
		return nil, errors.Join(err, db.Close())
	}
	if err := s.migrate(sc); err != nil { // migrate.go
		return nil, errors.Join(err, s.recs.close(), db.Close())
	}
	go s.committer()
	go s.collectGarbage()
	return s, nil
}

func logger(opts Options) *slog.Logger {
	if opts.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return opts.Logger
}

func badgerOptions(dir string, opts Options, sync bool) badger.Options {
	o := badger.DefaultOptions(dir).
		WithSyncWrites(sync).
		WithLogger(badgerLogger{logger(opts)}).
		WithMetricsEnabled(false).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(blockCacheSize).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(numCompactors).
		WithNumGoroutines(2).
		WithCompression(options.Snappy).
		WithBlockSize(blockSize).
		WithNumLevelZeroTables(numLevelZeroTables).
		WithNumLevelZeroTablesStall(2 * numLevelZeroTables)
	index := int64(indexCacheSize)
	if opts.Profile == ProfileSensor {
		o = o.WithMemTableSize(sensorMemTableSize).
			WithBlockCacheSize(sensorBlockCacheSize).
			WithValueLogFileSize(sensorValueLogFileSize).
			WithBaseTableSize(sensorBaseTableSize).
			WithNumLevelZeroTables(sensorLevelZeroTables).
			WithNumLevelZeroTablesStall(2 * sensorLevelZeroTables)
		o.TableSizeMultiplier = 1
		index = sensorIndexCacheSize
	}
	if len(opts.EncryptionKey) > 0 {
		// An unencrypted table's index is read in place from the mapped file; an encrypted
		// one is decrypted onto the heap, and without an index cache every table's index
		// would stay there, growing with the data.
		o = o.WithEncryptionKey(opts.EncryptionKey).WithIndexCacheSize(index)
	}
	return o
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
	<-s.gcDone
	if err := errors.Join(s.recs.close(), s.db.Close()); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// collectGarbage runs until Close, rewriting value log files that are mostly garbage every
// gcInterval, and with ProfileSensor handing back the mapped pages of the store's files
// whenever the resident pages of mapped files grew past releaseBudget (releaseOver).
func (s *Store) collectGarbage() {
	defer close(s.gcDone)
	t := time.NewTicker(gcInterval)
	defer t.Stop()
	var release <-chan time.Time // nil: never
	var floor uint64             // releaseOver's
	if s.profile == ProfileSensor {
		floor, _ = fileResident() // 0 on error: the first look releases
		r := time.NewTicker(releaseInterval)
		defer r.Stop()
		release = r.C
	}
	for {
		select {
		case <-s.stop:
			return
		case <-release:
			if err := s.releaseOver(&floor, releaseBudget); err != nil {
				s.log.Warn("storage: release the pages of the store's mapped files", "err", err)
				if errors.Is(err, errNoPageout) {
					release = nil // the kernel will not learn it: do not read the maps and warn every second
				}
			}
			continue
		case <-t.C:
		}
		for s.gcOnce() {
			select {
			case <-s.stop:
				return
			default:
			}
		}
	}
}

// gcOnce rewrites at most one value log file and reports whether it did. It does not below
// the margin (space.go): a rewrite writes before it deletes.
func (s *Store) gcOnce() bool {
	// Free space that cannot be read is not logged here: every write reports it (admit).
	if sp, err := s.space(); err != nil || sp.Free < sp.Margin {
		return false
	}
	s.gcMu.Lock()
	err := s.db.RunValueLogGC(gcDiscardRatio)
	s.gcMu.Unlock()
	switch {
	case err == nil:
		s.gcRuns.Add(1)
		return true
	case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
	default:
		s.log.Warn("storage: value log garbage collection", "err", err)
	}
	return false
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

// update runs fn in a read-write transaction and commits it durably, above the margin
// (space.go).
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	sp, err := s.space()
	if err != nil {
		return err
	}
	if sp.Free < sp.Margin {
		return diskFull(s.dir, sp.Free, sp.Margin, false)
	}
	s.gcMu.RLock()
	err = s.db.Update(fn)
	s.gcMu.RUnlock()
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

// removeEmptyMemtables deletes memtable logs (*.mem) of zero bytes. Badger creates one, then
// sizes it: a crash in between leaves an empty file, which Badger 4.9.6 refuses to open
// ("while opening fid: N err: Create a new file"), so the store would never open again. An
// empty log holds no entry: nothing is lost with it.
func removeEmptyMemtables(dir string) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return fmt.Errorf("storage: list the memtable logs of %s: %w", dir, err)
	}
	for _, path := range mems {
		info, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("storage: memtable log %s: %w", path, err)
		}
		if info.Mode().IsRegular() && info.Size() == 0 {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("storage: remove the empty memtable log %s left by a crash: %w", path, err)
			}
		}
	}
	return nil
}
