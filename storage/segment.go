package storage

import (
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
)

// Segments. The exchange queues' records do not live in Badger. An LSM tree writes a record
// several times (its write-ahead log, a level-0 table, then once per level as compactions move
// it down), compressing it each time: that was half of both agents' CPU under a saturated
// stream (cmd/ssanet-bench, README "Performance"). Instead each queue (an SSA's outbox or
// inbox) appends its records to segment files of its own, in blocks of up to blockRaw bytes,
// compressed (S2) and, in an encrypted store, sealed (AES-GCM). Badger keeps one index entry
// per block (x/ for outboxes, y/ for inboxes, keyed by the block's last sequence number; see
// doc.go), written in the transaction that makes the records visible: the queue's state and
// its index move together, atomically.
//
// Durability. The committer appends the blocks of a group to the files while it applies the
// group, writes and fdatasyncs them before it commits the group's transaction, and rolls the
// files back to their committed ends if the transaction fails. So an index entry never points
// at bytes that are not on the disk, and bytes beyond the last block indexed in a file are
// what a crash cut short: Open truncates each file to its last indexed block and removes the
// files no entry points into (a group that never committed, or a queue deleted whole), once
// the index it reads is on the disk (syncMemtables).
//
// Deletion. Acknowledged (outbox) and expired (inbox) records leave the index in the
// transaction that moves the queue's Head past them; after that transaction, the committer
// removes the files that hold no live block and punches the dead blocks at the start of the
// first live file out of it (fallocate PUNCH_HOLE, Linux), so that the disk is given back at
// once, to the 4 KiB block of the file system that the first live block starts in. Where the
// file system cannot punch holes the bytes stay until the whole file is dead.
//
// A block on the disk:
//
//	magic "ssb1" (4) | CRC-32C (4) of what follows it | first seq (8) | records (4)
//	| raw length (4) | payload length (4) | flags (4) | payload
//
// The payload is the records, each as its length (uvarint) and its bytes, compressed with S2
// when flagCompressed, then sealed when flagSealed: a 12-byte random nonce and AES-GCM with
// the header as additional data, under a key derived from Options.EncryptionKey (HKDF-SHA256).
// The CRC covers the header's fields and the payload as stored.

const (
	// segmentDir is the directory of the segment files, in the store's directory.
	segmentDir = "records"
	// blockRaw bounds the records of a block (at least one record, however large): a reader
	// decodes a whole block to read one of its records.
	blockRaw = 128 << 10
	// blockHeader is the size of a block's header.
	blockHeader = 32
	// punchAlign is the granularity of the holes punched: the file system's block.
	punchAlign = 4096
	// punchBatch is how much an acknowledgement lets the dead start of a file grow before it
	// is punched out: a punch is a journaled change of the file's extents, which the next
	// fdatasync of the file must write, and acknowledgements come several times a second.
	// DropOutbox and retention punch whatever they delete.
	punchBatch = 1 << 20

	flagCompressed = 1
	flagSealed     = 2
)

var (
	blockMagic = [4]byte{'s', 's', 'b', '1'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// segmentSize is the size past which a queue's next block starts a new file. Files are
	// removed whole once dead; until then the dead blocks at their start are punched out.
	// A variable only so that tests can make files small (before Open: a recordLog keeps
	// the size it opened with).
	segmentSize int64 = 32 << 20
)

// blockRef is an index entry's value: where a block is. Its key is the queue's index prefix
// and the block's last sequence number.
type blockRef struct {
	file  uint64 // the file's ID: the first sequence number it holds
	off   uint64 // the block's offset in the file
	size  uint32 // the block's length, header included
	first uint64 // the block's first sequence number
	last  uint64 // from the key
}

const blockRefLen = 28

func (r blockRef) encode() []byte {
	b := make([]byte, blockRefLen)
	binary.BigEndian.PutUint64(b, r.file)
	binary.BigEndian.PutUint64(b[8:], r.off)
	binary.BigEndian.PutUint32(b[16:], r.size)
	binary.BigEndian.PutUint64(b[20:], r.first)
	return b
}

func decodeBlockRef(k []byte, prefixLen int, v []byte) (blockRef, error) {
	last, ok := parseSeq(k, prefixLen)
	if !ok || len(v) != blockRefLen {
		return blockRef{}, fmt.Errorf("%w: index entry %x of %d bytes", ErrCorrupt, k, len(v))
	}
	r := blockRef{file: binary.BigEndian.Uint64(v), off: binary.BigEndian.Uint64(v[8:]),
		size: binary.BigEndian.Uint32(v[16:]), first: binary.BigEndian.Uint64(v[20:]), last: last}
	// The block's end must be an int64 too: a reader would take it for one before the
	// file's end (TestSegmentCorrupt, "far past the file's end").
	if r.first == 0 || r.first > r.last || r.size <= blockHeader || r.file == 0 || r.file > r.first || r.off > math.MaxInt64-uint64(r.size) {
		return blockRef{}, fmt.Errorf("%w: index entry %x: %+v", ErrCorrupt, k, r)
	}
	return r, nil
}

// position is a place in a queue's files: what lies before it is dead (release).
type position struct{ file, off uint64 }

func (p position) after(q position) bool { return p.file > q.file || p.file == q.file && p.off > q.off }

// heldRelease is a release that waits for the end of the backups under way.
type heldRelease struct {
	at    position
	force bool
}

// recordLog holds the segment files of every queue. The committer alone appends, syncs,
// commits, rolls back and releases; readers read blocks concurrently.
type recordLog struct {
	dir         string
	aead        cipher.AEAD // nil: blocks in clear
	segmentSize int64

	mu     sync.Mutex
	queues map[string]*segQueue // by index prefix
	dirty  []*segment           // appended to in the group being written
	// rel keeps release (which closes and removes files, and punches holes) apart from
	// readers, from before their transaction starts (viewRecords).
	rel sync.RWMutex
	// A backup (backup.go) holds the files: while holds > 0, release gives nothing back and
	// keeps in held what it would have, which the last backup to end gives back. holdMu
	// guards both, and is held by a release while it runs, so that a backup starts only
	// once no release is under way.
	holdMu sync.Mutex
	holds  int
	held   map[string]heldRelease

	// Scratch of the committer's appends, and the last index key the group appended.
	raw, comp []byte
	groupKey  []byte
}

// segQueue is one queue's files, in order; the last is the one appended to.
type segQueue struct {
	name  string // the files' name prefix: a hash of the index prefix
	files []*segment
	// cache is the block read or written last, decoded; pending the blocks of the group
	// being written, which become the cache when it commits.
	cache   *decodedBlock
	pending *decodedBlock
	// dropped: the index entries that end before it are deleted (dropIndex, release).
	dropped uint64
}

// segment is one file.
type segment struct {
	q         *segQueue
	id        uint64
	f         *os.File
	buf       []byte // appended, not written yet (nil once written)
	size      int64  // the end of what is appended (buf included)
	committed int64  // the end of the last block of a committed group
	punched   int64  // bytes from 0 punched out
	created   bool   // created in this group: its directory entry needs a sync
}

// decodedBlock is a block's records, in the clear.
type decodedBlock struct {
	at    position
	first uint64
	n     int
	raw   []byte // the records: uvarint length and bytes each; never changed once made
}

// openRecordLog opens (creating) the segment directory in dir and recovers it against the
// index in db: each file is truncated to its last indexed block, and files no index entry
// points into are removed.
func openRecordLog(dir string, key []byte, db *badger.DB, log *slog.Logger) (*recordLog, error) {
	l := &recordLog{dir: filepath.Join(dir, segmentDir), segmentSize: segmentSize, queues: make(map[string]*segQueue)}
	if len(key) > 0 {
		sub, err := hkdf.Key(sha256.New, key, nil, "ssanet storage records v1", 32)
		if err != nil {
			return nil, fmt.Errorf("storage: derive the records' key: %w", err)
		}
		block, err := aes.NewCipher(sub)
		if err != nil {
			return nil, err
		}
		if l.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", l.dir, err)
	}
	// The directory's own entry, in the store's: sync covers the files' entries in it only,
	// and a power cut that took it would leave the index pointing at files that are gone.
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	if err := syncMemtables(dir); err != nil {
		return nil, err
	}
	// The committed end of every file, from the index.
	ends := make(map[string]map[uint64]int64) // queue name → file ID → end
	byName := make(map[string]string)         // queue name → index prefix
	firsts := make(map[string]blockRef)       // queue name → its first block
	err := db.View(func(txn *badger.Txn) error {
		return eachIndexEntry(txn, func(prefix []byte, ref blockRef) error {
			name := queueFileName(prefix)
			if ends[name] == nil {
				byName[name] = string(prefix)
				ends[name] = make(map[uint64]int64)
				firsts[name] = ref // the index is in order
			}
			ends[name][ref.file] = max(ends[name][ref.file], int64(ref.off)+int64(ref.size))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: read the records' index: %w", err)
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: list %s: %w", l.dir, err)
	}
	removed, removedBytes := 0, int64(0)
	for _, e := range entries {
		name, id, ok := parseSegmentName(e.Name())
		path := filepath.Join(l.dir, e.Name())
		if !ok || !e.Type().IsRegular() {
			// Not the store's: left where it is, and said.
			log.Warn("storage: a file in the records directory is not a segment file; it is left alone", "path", path)
			continue
		}
		end, live := ends[name][id]
		if !live {
			// No live block: a group that never committed, or dead records.
			if info, err := e.Info(); err == nil {
				removedBytes += info.Size()
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, errors.Join(fmt.Errorf("storage: remove %s, which holds no live record: %w", path, err), l.close())
			}
			removed++
			continue
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("storage: open %s: %w", path, err), l.close())
		}
		info, err := f.Stat()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("storage: %s: %w", path, err), f.Close(), l.close())
		}
		if info.Size() < end {
			return nil, errors.Join(fmt.Errorf("%w: %s holds %d bytes, its index %d", ErrCorrupt, path, info.Size(), end), f.Close(), l.close())
		}
		if info.Size() > end {
			if err := f.Truncate(end); err != nil {
				return nil, errors.Join(fmt.Errorf("storage: cut %s back to its last committed block: %w", path, err), f.Close(), l.close())
			}
			if err := fdatasync(f); err != nil {
				return nil, errors.Join(err, f.Close(), l.close())
			}
		}
		q := l.queue(byName[name])
		q.files = append(q.files, &segment{q: q, id: id, f: f, size: end, committed: end})
		delete(ends[name], id)
	}
	// What is left of ends is files the index points into and the directory does not hold:
	// as short as can be (TestSegmentCorrupt).
	var missing []string
	for name, files := range ends {
		for id := range files {
			missing = append(missing, segmentName(name, id))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, errors.Join(fmt.Errorf("%w: %s lacks %s, which the index points into", ErrCorrupt, l.dir, strings.Join(missing, ", ")), l.close())
	}
	for _, q := range l.queues {
		slices.SortFunc(q.files, func(a, b *segment) int { return cmp.Compare(a.id, b.id) })
		// The entries before the first live one are deleted: drops seek past their
		// tombstones (dropIndex; TestDroppedAfterOpen).
		first := firsts[q.name]
		q.dropped = first.last
		// The dead start of the first file: what a crash, or an acknowledgement that punched
		// less than punchBatch, left. A punch that fails is left to the next release.
		if len(q.files) > 0 && q.files[0].id == first.file {
			if to := int64(first.off) &^ (punchAlign - 1); to > 0 && punchHole(q.files[0].f, 0, to) == nil {
				q.files[0].punched = to
			}
		}
	}
	if removed > 0 {
		log.Info("storage: removed the segment files that hold no committed record (a write a crash cut short, or deleted records)",
			"files", removed, "bytes", removedBytes)
		if err := syncDir(l.dir); err != nil {
			return nil, errors.Join(err, l.close())
		}
	}
	return l, nil
}

// syncMemtables fsyncs Badger's memtable logs (*.mem) in dir. Badger replays them on open
// whether their last writes were synced or not: a process killed in a commit, between the
// write of its transaction and the sync, leaves a transaction that the page cache holds and
// the disk may not. Open removes files and punches blocks by the index that it reads, so that
// index must be on the disk first: else a power cut soon after could bring back the index
// entries of a deletion that the killed process never saw commit, pointing at files removed
// (ErrCorrupt: the store would not open) or at holes.
func syncMemtables(dir string) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return fmt.Errorf("storage: list the memtable logs of %s: %w", dir, err)
	}
	for _, path := range mems {
		if err := syncPath(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err // one that is gone was flushed into a table meanwhile, which Badger synced
		}
	}
	return nil
}

// eachIndexEntry calls fn with every entry of the records' index in txn, in key order: its
// queue's index prefix (valid during the call only) and where its block is.
func eachIndexEntry(txn *badger.Txn, fn func(prefix []byte, ref blockRef) error) error {
	for _, p := range []string{prefixOutboxIndex, prefixInboxIndex} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p)})
		err := func() error {
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				n, ok := queuePrefixLen(k)
				if !ok {
					return fmt.Errorf("%w: index key %x", ErrCorrupt, k)
				}
				var ref blockRef
				err := item.Value(func(v []byte) error {
					var err error
					ref, err = decodeBlockRef(k, n, v)
					return err
				})
				if err != nil {
					return err
				}
				if err := fn(k[:n], ref); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

// queuePrefixLen returns the length of the queue prefix (index prefix, SSA ID's length and
// the ID) of an index key, which is followed by 8 bytes of sequence number.
func queuePrefixLen(k []byte) (int, bool) {
	n := len(prefixOutboxIndex) // == len(prefixInboxIndex)
	if len(k) < n+2 {
		return 0, false
	}
	end := n + 2 + int(binary.BigEndian.Uint16(k[n:]))
	return end, len(k) == end+8
}

// queueFileName names a queue's files: a hash of its index prefix, which may be long.
func queueFileName(prefix []byte) string {
	h := sha256.Sum256(prefix)
	return hex.EncodeToString(h[:12])
}

// segmentName names file id of the queue whose files are named name (queueFileName).
func segmentName(name string, id uint64) string {
	return fmt.Sprintf("%s-%016x.seg", name, id)
}

func parseSegmentName(name string) (queue string, id uint64, ok bool) {
	base, found := strings.CutSuffix(name, ".seg")
	queue, num, found2 := strings.Cut(base, "-")
	if !found || !found2 || len(num) != 16 {
		return "", 0, false
	}
	id, err := strconv.ParseUint(num, 16, 64)
	return queue, id, err == nil && id > 0
}

// queue returns the queue of an index prefix, made if new. l.mu or the committer.
func (l *recordLog) queue(prefix string) *segQueue {
	q := l.queues[prefix]
	if q == nil {
		q = &segQueue{name: queueFileName([]byte(prefix))}
		l.queues[prefix] = q
	}
	return q
}

// close closes every file.
func (l *recordLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, q := range l.queues {
		for _, s := range q.files {
			errs = append(errs, s.f.Close())
		}
		q.files = nil
	}
	return errors.Join(errs...)
}

// append adds records, numbered from first, to the queue of the index prefix as blocks, and
// returns their index entries (keys and values) for the group's transaction. The committer
// alone calls it; nothing reaches the disk before sync.
func (l *recordLog) append(prefix []byte, first uint64, records [][]byte) (keys, values [][]byte, err error) {
	if len(records) == 0 {
		return nil, nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue(string(prefix))
	var last decodedBlock
	for i := 0; i < len(records); {
		// The records of one block: at least one, and up to blockRaw bytes.
		l.raw = l.raw[:0]
		j := i
		for ; j < len(records) && (j == i || len(l.raw)+len(records[j])+binary.MaxVarintLen32 <= blockRaw); j++ {
			l.raw = binary.AppendUvarint(l.raw, uint64(len(records[j])))
			l.raw = append(l.raw, records[j]...)
		}
		seq := first + uint64(i)
		s, err := l.tail(q, seq)
		if err != nil {
			return nil, nil, err
		}
		off := s.size
		block := l.encodeBlock(prefix, seq, j-i, l.raw)
		s.buf = append(s.buf, block...)
		s.size += int64(len(block))
		if !slices.Contains(l.dirty, s) {
			l.dirty = append(l.dirty, s)
		}
		ref := blockRef{file: s.id, off: uint64(off), size: uint32(len(block)), first: seq, last: seq + uint64(j-i) - 1}
		keys = append(keys, seqKey(prefix, ref.last))
		values = append(values, ref.encode())
		last = decodedBlock{at: position{s.id, uint64(off)}, first: seq, n: j - i}
		i = j
	}
	// The last block (l.raw holds its records) is the one a reader asks for next.
	last.raw = bytes.Clone(l.raw)
	q.pending = &last
	l.groupKey = keys[len(keys)-1]
	return keys, values, nil
}

// tail returns the file the queue appends to, starting one (ID seq) when there is none or
// the last is full.
func (l *recordLog) tail(q *segQueue, seq uint64) (*segment, error) {
	if n := len(q.files); n > 0 && q.files[n-1].size < l.segmentSize {
		return q.files[n-1], nil
	}
	if n := len(q.files); n > 0 && q.files[n-1].id >= seq {
		return nil, fmt.Errorf("%w: queue file %s ends past record %d", ErrCorrupt, segmentName(q.name, q.files[n-1].id), seq)
	}
	path := filepath.Join(l.dir, segmentName(q.name, seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", path, err)
	}
	s := &segment{q: q, id: seq, f: f, created: true}
	q.files = append(q.files, s)
	return s, nil
}

// encodeBlock returns a block of n records numbered from first, whose payload is raw, for the
// queue of the index prefix.
func (l *recordLog) encodeBlock(prefix []byte, first uint64, n int, raw []byte) []byte {
	l.comp = s2.Encode(l.comp[:cap(l.comp)], raw)
	payload, flags := l.comp, uint32(flagCompressed)
	if len(payload) >= len(raw) {
		payload, flags = raw, 0
	}
	extra := 0
	if l.aead != nil {
		extra = 12 + l.aead.Overhead()
		flags |= flagSealed
	}
	b := make([]byte, blockHeader, blockHeader+len(payload)+extra)
	copy(b, blockMagic[:])
	binary.BigEndian.PutUint64(b[8:], first)
	binary.BigEndian.PutUint32(b[16:], uint32(n))
	binary.BigEndian.PutUint32(b[20:], uint32(len(raw)))
	binary.BigEndian.PutUint32(b[24:], uint32(len(payload)+extra))
	binary.BigEndian.PutUint32(b[28:], flags)
	if l.aead != nil {
		nonce := make([]byte, 12)
		_, _ = rand.Read(nonce) // crypto/rand never fails (Go 1.24)
		b = append(b, nonce...)
		b = l.aead.Seal(b, nonce, payload, sealedWith(prefix, b[8:blockHeader]))
	} else {
		b = append(b, payload...)
	}
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	return b
}

// sync writes what the group appended and fdatasyncs it (and the directory of new files).
func (l *recordLog) sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	created := false
	for _, s := range l.dirty {
		if len(s.buf) > 0 {
			if _, err := s.f.WriteAt(s.buf, s.size-int64(len(s.buf))); err != nil {
				return fmt.Errorf("storage: write records to %s: %w", s.f.Name(), err)
			}
			// Freed, not kept for the next group: a large batch would leave a buffer of its
			// size with every file it went to, for as long as the file lives.
			s.buf = nil
		}
		if err := fdatasync(s.f); err != nil {
			return err
		}
		created = created || s.created
	}
	if created {
		if err := syncDir(l.dir); err != nil {
			return err
		}
		for _, s := range l.dirty {
			s.created = false
		}
	}
	return nil
}

// commit makes what the group appended committed: its transaction is.
func (l *recordLog) commit() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.dirty {
		s.committed = s.size
		if s.q.pending != nil {
			s.q.cache, s.q.pending = s.q.pending, nil
		}
	}
	l.dirty, l.groupKey = l.dirty[:0], nil
}

// groupIndexed reports whether the last index entry the group appended is in db: whether
// a commit that returned an error (a sync that failed after Badger wrote the entries) made
// them visible all the same, so that the group's bytes must stay (commit), not be cut
// (rollback), lest the index point at nothing.
func (l *recordLog) groupIndexed(db *badger.DB) bool {
	l.mu.Lock()
	k := l.groupKey
	l.mu.Unlock()
	if k == nil {
		return false
	}
	return db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(k)
		return err
	}) == nil
}

// rollback forgets what the group appended: its transaction failed before its commit. A file that cannot be
// cut back keeps the bytes, which no index entry points at (Open cuts them).
//
// A file the group created (nothing committed in it) goes too: it is named after the first
// record of the group's block that started it, and the group that appends next, from a
// record before that one maybe (the failed group began in the file before), must not put
// its blocks in it (TestRollback, "a new file").
func (l *recordLog) rollback() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.groupKey = nil
	var errs []error
	for _, s := range l.dirty {
		s.buf = nil
		s.q.pending = nil
		if s.committed == 0 {
			// Created by tail in this group: the last of its queue's files.
			s.q.files = slices.DeleteFunc(s.q.files, func(f *segment) bool { return f == s })
			if err := errors.Join(s.f.Close(), os.Remove(s.f.Name())); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if s.size != s.committed {
			s.size = s.committed
			errs = append(errs, s.f.Truncate(s.committed))
		}
	}
	l.dirty = l.dirty[:0]
	return errors.Join(errs...)
}

// end returns where the queue's next block goes: what lies before it is written. The
// committer alone calls it.
func (l *recordLog) end(prefix []byte) position {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[string(prefix)]
	if q == nil || len(q.files) == 0 {
		return position{}
	}
	s := q.files[len(q.files)-1]
	return position{s.id, uint64(s.size)}
}

// release gives the disk of the blocks that d took out of the queue's index back: it removes
// the files wholly before d.first and punches the start of d.first's file out, by punchBatch
// at least unless force. The committer calls it after the transaction of d commits; while a
// backup runs, the disk waits for the backup's end (hold).
func (l *recordLog) release(prefix []byte, d indexDrop, force bool) error {
	if d.through > 0 {
		l.mu.Lock()
		q := l.queue(string(prefix))
		q.dropped = max(q.dropped, d.through+1)
		l.mu.Unlock()
	}
	return l.giveBack(prefix, d.first, force)
}

// giveBack is release's part that gives the disk of the queue's blocks before at back.
func (l *recordLog) giveBack(prefix []byte, at position, force bool) error {
	if at.file == 0 {
		return nil
	}
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	if l.holds > 0 {
		if l.held == nil {
			l.held = make(map[string]heldRelease)
		}
		h := l.held[string(prefix)]
		if at.after(h.at) {
			h.at = at
		}
		h.force = h.force || force
		l.held[string(prefix)] = h
		return nil
	}
	// Readers wait while it gives back, and the committer for them: only when there is
	// something to give back, not at every acknowledgement (TestAckBesideRead).
	if !l.due(prefix, at, force) {
		return nil
	}
	l.rel.Lock()
	defer l.rel.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[string(prefix)]
	if q == nil {
		return nil
	}
	var errs []error
	keep := q.files[:0]
	removed := false
	for i, s := range q.files {
		switch {
		case q.dead(i, at):
			errs = append(errs, s.f.Close(), os.Remove(s.f.Name()))
			removed = true
			continue
		case s.id == at.file:
			if to := s.punchTo(at, force); to > s.punched {
				switch err := punchHole(s.f, s.punched, to-s.punched); {
				case err == nil, errors.Is(err, errNoPunch):
					// Where holes cannot be punched, the bytes wait for the file's removal:
					// counted as punched, so that the next acknowledgements do not try again.
					s.punched = to
				default:
					errs = append(errs, fmt.Errorf("storage: give back the disk of deleted records in %s: %w", s.f.Name(), err))
				}
			}
		}
		keep = append(keep, s)
	}
	clear(q.files[len(keep):])
	q.files = keep
	if removed {
		errs = append(errs, syncDir(l.dir))
	}
	return errors.Join(errs...)
}

// due reports whether giveBack has files of the queue to remove or a hole to punch, the
// queue's first live block being at. Only giveBack (holding holdMu) changes that.
func (l *recordLog) due(prefix []byte, at position, force bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[string(prefix)]
	if q == nil {
		return false
	}
	for i, s := range q.files {
		if q.dead(i, at) || s.id == at.file && s.punchTo(at, force) > s.punched {
			return true
		}
	}
	return false
}

// dead reports whether the queue's file i holds no live block, the first live block being
// at: a file before at's, but never the one appended to.
func (q *segQueue) dead(i int, at position) bool {
	return q.files[i].id < at.file && i < len(q.files)-1
}

// punchTo returns where giveBack punches the file up to, the queue's first live block being
// at, in the file: s.punched while the dead start has grown by less than punchBatch, unless
// force.
func (s *segment) punchTo(at position, force bool) int64 {
	if to := int64(at.off) &^ (punchAlign - 1); to > s.punched && (force || to-s.punched >= punchBatch) {
		return to
	}
	return s.punched
}

// hold keeps every file and block as it is until unhold: no file is removed, no hole
// punched. It waits for a release under way.
func (l *recordLog) hold() {
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	l.holds++
}

// unhold ends a hold; the last one gives back what the releases meanwhile would have.
func (l *recordLog) unhold() error {
	l.holdMu.Lock()
	l.holds--
	var held map[string]heldRelease
	if l.holds == 0 {
		held, l.held = l.held, nil
	}
	l.holdMu.Unlock()
	var errs []error
	for prefix, h := range held {
		errs = append(errs, l.giveBack([]byte(prefix), h.at, h.force))
	}
	return errors.Join(errs...)
}

// read returns the decoded block that ref points at in the queue of the index prefix.
func (l *recordLog) read(prefix []byte, ref blockRef) (*decodedBlock, error) {
	at := position{ref.file, ref.off}
	l.mu.Lock()
	q := l.queues[string(prefix)]
	var s *segment
	var written int64 // the end of what is written to s: a block the index holds is there
	if q != nil {
		if c := q.cache; c != nil && c.at == at {
			l.mu.Unlock()
			return c, nil
		}
		for _, f := range q.files {
			if f.id == ref.file {
				s, written = f, f.size-int64(len(f.buf))
				break
			}
		}
	}
	l.mu.Unlock()
	if s == nil || int64(ref.off)+int64(ref.size) > written {
		return nil, fmt.Errorf("%w: records %d to %d: no file holds block %d:%d", ErrCorrupt, ref.first, ref.last, ref.file, ref.off)
	}
	b := make([]byte, ref.size)
	if _, err := s.f.ReadAt(b, int64(ref.off)); err != nil {
		return nil, fmt.Errorf("storage: read records %d to %d from %s: %w", ref.first, ref.last, s.f.Name(), err)
	}
	d, err := l.decodeBlock(prefix, b, ref)
	if err != nil {
		return nil, fmt.Errorf("%s at %d: %w", s.f.Name(), ref.off, err)
	}
	d.at = at
	l.mu.Lock()
	q.cache = d
	l.mu.Unlock()
	return d, nil
}

// sealedWith is the additional data a sealed block is authenticated with: its queue's index
// prefix, so that a block moved to another queue's file does not open, and its header.
func sealedWith(prefix, header []byte) []byte {
	return append(bytes.Clone(prefix), header...)
}

// decodeBlock checks and opens the block b of the queue of the index prefix, which ref
// points at.
func (l *recordLog) decodeBlock(prefix, b []byte, ref blockRef) (*decodedBlock, error) {
	if len(b) < blockHeader || !bytes.Equal(b[:4], blockMagic[:]) {
		return nil, fmt.Errorf("%w: no block header", ErrCorrupt)
	}
	if crc32.Checksum(b[8:], castagnoli) != binary.BigEndian.Uint32(b[4:]) {
		return nil, fmt.Errorf("%w: block checksum mismatch", ErrCorrupt)
	}
	first, n := binary.BigEndian.Uint64(b[8:]), uint64(binary.BigEndian.Uint32(b[16:]))
	rawLen, plen, flags := binary.BigEndian.Uint32(b[20:]), binary.BigEndian.Uint32(b[24:]), binary.BigEndian.Uint32(b[28:])
	if flags&^(flagCompressed|flagSealed) != 0 {
		// A flag this version does not know: it could not read the block right.
		return nil, fmt.Errorf("%w: block with unknown flags %#x", ErrCorrupt, flags)
	}
	if first != ref.first || n == 0 || first+n-1 != ref.last || int(plen) != len(b)-blockHeader || rawLen > MaxRecordSize+blockRaw {
		return nil, fmt.Errorf("%w: block of records %d+%d where the index says %d to %d", ErrCorrupt, first, n, ref.first, ref.last)
	}
	payload := b[blockHeader:]
	if flags&flagSealed != 0 {
		if l.aead == nil || len(payload) < 12+l.aead.Overhead() {
			return nil, fmt.Errorf("%w: sealed block, and no key to open it", ErrCorrupt)
		}
		var err error
		if payload, err = l.aead.Open(payload[12:12], payload[:12], payload[12:], sealedWith(prefix, b[8:blockHeader])); err != nil {
			return nil, fmt.Errorf("%w: sealed block does not open with the store's key", ErrCorrupt)
		}
	} else if l.aead != nil {
		return nil, fmt.Errorf("%w: block in clear in an encrypted store", ErrCorrupt)
	}
	raw := payload
	if flags&flagCompressed != 0 {
		if dl, err := s2.DecodedLen(payload); err != nil || dl != int(rawLen) {
			return nil, fmt.Errorf("%w: compressed block of the wrong length", ErrCorrupt)
		}
		var err error
		if raw, err = s2.Decode(nil, payload); err != nil {
			return nil, fmt.Errorf("%w: block does not decompress: %v", ErrCorrupt, err)
		}
	} else if len(raw) != int(rawLen) {
		return nil, fmt.Errorf("%w: block of the wrong length", ErrCorrupt)
	}
	d := &decodedBlock{first: first, n: int(n), raw: raw}
	// Check the framing once, so that readers can trust it.
	count := 0
	for rest := raw; len(rest) > 0; count++ {
		size, k := binary.Uvarint(rest)
		if k <= 0 || size > uint64(len(rest)-k) {
			return nil, fmt.Errorf("%w: record %d of the block is cut", ErrCorrupt, first+uint64(count))
		}
		rest = rest[k+int(size):]
	}
	if count != d.n {
		return nil, fmt.Errorf("%w: block holds %d records, its header says %d", ErrCorrupt, count, d.n)
	}
	return d, nil
}

// each calls fn with the block's records from seq on, in order, until fn returns false.
// The records are the block's: they must not be changed.
func (d *decodedBlock) each(seq uint64, fn func(seq uint64, rec []byte) bool) {
	rest := d.raw
	for s := d.first; len(rest) > 0; s++ {
		size, k := binary.Uvarint(rest)
		rec := rest[k : k+int(size) : k+int(size)]
		rest = rest[k+int(size):]
		if s >= seq && !fn(s, rec) {
			return
		}
	}
}

// viewRecords is Store.view for the readers of records (scanRecords). It holds l.rel from
// before the transaction starts until it ends, so that release cannot give back the disk of
// blocks that the transaction still sees in the index: the committer releases after the
// transaction that took them out of the index commits, and a transaction that started
// before that commit reads the index as it was (TestReadBesideRelease). Taken in the scan
// only, l.rel let the committer commit and release between the snapshot and the scan, and
// the scan read the holes or the removed files as ErrCorrupt. s.mu comes first, as in
// Store.view: a reader waiting for s.mu (Close waits for it) must not hold l.rel, which the
// committer, that the callers holding s.mu wait for, may be waiting for.
func (s *Store) viewRecords(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.recs.rel.RLock()
	defer s.recs.rel.RUnlock()
	return s.db.View(fn)
}

// scanRecords calls fn with the records of the queue whose index prefix is prefix from start
// on, n of them (all must be there: a gap is ErrCorrupt): it stops before the record that
// would take the total over maxBytes, but always gives the first. fn gets a copy, each in
// one buffer and capped at its own length, which stays valid: the decoded blocks are the
// store's cache. txn must be a viewRecords transaction.
func (s *Store) scanRecords(txn *badger.Txn, prefix []byte, start uint64, n, maxBytes int, fn func(seq uint64, data []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	seq, end := start, start+uint64(n)
	var buf []byte
	var ferr error
	for it.Seek(seqKey(prefix, start)); it.Valid() && seq < end; it.Next() {
		item := it.Item()
		var ref blockRef
		err := item.Value(func(v []byte) error {
			var err error
			ref, err = decodeBlockRef(item.Key(), len(prefix), v)
			return err
		})
		if err != nil {
			return err
		}
		if ref.first > seq {
			return fmt.Errorf("%w: record %d missing", ErrCorrupt, seq)
		}
		d, err := s.recs.read(prefix, ref)
		if err != nil {
			return err
		}
		full := false
		d.each(seq, func(sq uint64, rec []byte) bool {
			if sq >= end {
				full = true
				return false
			}
			if sq > start && len(buf)+len(rec) > maxBytes {
				full = true
				return false
			}
			if buf == nil {
				// Room for n records like the first, but no more than maxBytes or 4 MiB (and
				// at least the first): the buffer grows from there if need be.
				buf = make([]byte, 0, max(min(len(rec)*n, maxBytes, 4<<20), len(rec)))
			}
			i := len(buf)
			buf = append(buf, rec...)
			if ferr = fn(sq, buf[i:len(buf):len(buf)]); ferr != nil {
				return false
			}
			seq = sq + 1
			return true
		})
		if ferr != nil {
			return ferr
		}
		if full {
			return nil
		}
	}
	if seq < end {
		return fmt.Errorf("%w: record %d missing", ErrCorrupt, seq)
	}
	return nil
}

// indexDrop is what dropIndex took out of a queue's index.
type indexDrop struct {
	more    bool     // entries that end at or before head are left
	first   position // what lies before it is dead once the transaction commits
	through uint64   // the last record of the last entry deleted, 0 for none
}

// dropIndex deletes, in txn, the index entries of the queue whose blocks end at or before
// head, at most max of them, in order from the first. The committer alone calls it.
//
// It seeks past the entries that earlier drops deleted (segQueue.dropped): Badger keeps
// their tombstones until a compaction meets them, and an iterator from the queue's first key
// would walk them all, at every acknowledgement.
func (s *Store) dropIndex(txn *badger.Txn, prefix []byte, head uint64, max int) (d indexDrop, err error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	var dead [][]byte
	found := false
	for it.Seek(seqKey(prefix, s.recs.dropped(prefix))); it.Valid(); it.Next() {
		item := it.Item()
		last, ok := parseSeq(item.Key(), len(prefix))
		if !ok {
			it.Close()
			return indexDrop{}, fmt.Errorf("%w: index key %x", ErrCorrupt, item.Key())
		}
		if last > head || len(dead) == max {
			err := item.Value(func(v []byte) error {
				ref, err := decodeBlockRef(item.Key(), len(prefix), v)
				d.first = position{ref.file, ref.off}
				return err
			})
			if err != nil {
				it.Close()
				return indexDrop{}, err
			}
			d.more, found = last <= head, true
			break
		}
		dead = append(dead, item.KeyCopy(nil))
		d.through = last
	}
	it.Close()
	for _, k := range dead {
		if err := txn.Delete(k); err != nil {
			return indexDrop{}, err
		}
	}
	if !found {
		d.first = s.recs.end(prefix)
	}
	return d, nil
}

// dropped returns the record from which the queue's index may hold entries: those that end
// before it are deleted. 0 (all of it) until a drop since Open.
func (l *recordLog) dropped(prefix []byte) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q := l.queues[string(prefix)]; q != nil {
		return q.dropped
	}
	return 0
}

// deadIndexed reports whether the queue's index still holds a block that ends at or before
// head: one that dropIndex has yet to take out. It seeks past the entries deleted before, as
// dropIndex does.
func (s *Store) deadIndexed(txn *badger.Txn, prefix []byte, head uint64) (bool, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	if it.Seek(seqKey(prefix, s.recs.dropped(prefix))); !it.Valid() {
		return false, nil
	}
	last, ok := parseSeq(it.Item().Key(), len(prefix))
	if !ok {
		return false, fmt.Errorf("%w: index key %x", ErrCorrupt, it.Item().Key())
	}
	return last <= head, nil
}

// syncDir fsyncs a directory, so that the files created or removed in it stay so.
func syncDir(dir string) error { return syncPath(dir) }

// syncPath fsyncs the file or directory at path.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("storage: open %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storage: sync %s: %w", path, err)
	}
	return nil
}
