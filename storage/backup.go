package storage

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// A backup file is a header, then Badger's backup stream (every live key at one read
// timestamp, values in clear) cut into chunks, then the exchange records' segment files
// (segment.go), then the SHA-256 of all that came before it. The header says what the file is
// and which record layout it holds:
//
//	"ssanet-backup\n" | format version (1 byte) | schema version (1 byte) |
//	key check: 0 (store in clear) or 1 and SHA-256("ssanet-backup key check\n" | key)
//	chunk: length (4 bytes, big-endian, 1..maxChunk) | bytes
//	end of the stream: length 0
//	file:  index prefix length (4) | the queue's index prefix | file ID (8) | blocks (4)
//	block: offset in the file (8) | the block as it is on the disk (its header gives its length)
//	end of the files: index prefix length 0
//	end:   SHA-256 of the header, every chunk's bytes and the files (32 bytes)
//
// The files hold exactly the blocks that the index entries of the stream's snapshot point at:
// Badger's stream reads in one transaction, and the blocks are read from the files while
// release, which removes files and punches holes, is held off (Store.Backup). Each block is
// as it is on the disk: compressed, and sealed in an encrypted store, so that a backup of an
// encrypted store holds the records under the store's key (the rest of the store,
// negotiations, agreements, evidence, is in clear, as Badger decrypts what it streams). A
// file's blocks come in order of offset, none overlapping the one before. Restore writes each
// block at its offset into the file named as Open expects it (segmentName; the dead blocks
// before the first live one, which the backup leaves out, stay a hole), then checks every
// index entry against the block it points at: a backup that lacks one is refused whole.
//
// Format 1 (the layouts before the records left Badger: schema versions 1 and 2) is the
// header, the chunks, and the end right after the length 0, the SHA-256 of the header and the
// chunks' bytes. Restore reads it still; Open migrates the store it holds.
//
// The end makes a file cut short (a full disk, a copy stopped half way) an error on restore,
// where Badger's stream alone would end cleanly at any of its own boundaries.
const (
	backupMagic         = "ssanet-backup\n"
	backupFormatVersion = 2
	maxChunk            = 1 << 20
	// maxLoadList bounds a list of Badger's stream on restore: Load allocates the length an
	// 8-byte prefix gives before it reads the list, so a crafted file could ask for any
	// amount. Backup writes lists of up to about 116 MiB (Badger's Stream: batches of 16 MiB
	// merged up to 100 MiB, plus one key's versions).
	maxLoadList     = 256 << 20
	keyCheckContext = "ssanet-backup key check\n"
	// maxQueuePrefix bounds an index prefix in the files part: "x/" or "y/", the SSA ID's
	// length (2 bytes) and the ID.
	maxQueuePrefix = len(prefixOutboxIndex) + 2 + 1<<16 - 1
	// maxBlockPayload bounds a block's payload on restore: twice the records a block may
	// hold, which S2's worst case and the seal stay far below.
	maxBlockPayload = 2 * (MaxRecordSize + blockRaw)
)

// keyCheck is what the header holds of an encryption key: a hash that tells the same key
// from another and reveals nothing of a random 16-32 byte key.
func keyCheck(key []byte) []byte {
	h := sha256.Sum256(append([]byte(keyCheckContext), key...))
	return h[:]
}

// Errors of Restore.
var (
	// ErrNotBackup means the file does not start as a backup written by Store.Backup.
	ErrNotBackup = errors.New("storage: not an ssanet backup")
	// ErrBackupNewer means the backup's format or record layout is newer than this program
	// reads: restore it with the version that wrote it, or a later one.
	ErrBackupNewer = errors.New("storage: backup is newer than this program")
	// ErrBackupDamaged means the backup ends before its end chunk or its checksum differs.
	ErrBackupDamaged = errors.New("storage: backup is cut short or damaged")
	// ErrBackupKey means the backup was taken of an encrypted store and Restore was not given
	// the same key: the restored store would be in clear, or under another key.
	ErrBackupKey = errors.New("storage: backup needs the encryption key of the store it was taken of")
	// ErrStoreExists means Restore was asked to write where a store already is.
	ErrStoreExists = errors.New("storage: a store already exists there")
)

// Backup writes a consistent copy of the store to w while the store stays in use: what was
// committed at the moment Backup starts, nothing written after. Badger's part is in clear
// even when the store is encrypted (Badger decrypts what it streams): keep the file as secret
// as the store's key. The exchange records stay as they are on the disk, sealed in an
// encrypted store. The header keeps a hash of the key, so that Restore encrypts the copy with
// the same key or refuses. A backup of a store of schema version 2 (format 1) may hold the
// invisible records of a large batch under way; Open deletes them after Restore, as after a
// crash.
//
// Until the records are copied, the disk of deleted records is not given back: a deletion
// (Ack, DropOutbox, retention) committed meanwhile leaves its files and blocks where they
// are, and the end of the backup gives them back (recordLog.hold); writes and reads go on.
// Backup keeps where every block to copy is in memory, about 60 bytes per block of up to 128
// KiB of records.
func (s *Store) Backup(w io.Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	// Release runs after the transaction that took blocks out of the index: held off, it
	// leaves every block that the stream's snapshot indexes where that entry says.
	s.recs.hold()
	defer func() {
		if err := s.recs.unhold(); err != nil {
			s.log.Warn("storage: give back the disk of records deleted during a backup (the next deletion in each queue tries again)", "err", err)
		}
	}()
	cw := &chunkWriter{w: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
	if err := cw.header(s.key); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	var idx backupIndex
	stream := s.db.NewStream()
	stream.LogPrefix = "storage backup"
	// One goroutine reads the keys: each opens a transaction of its own, and only one
	// makes the stream a snapshot, the snapshot idx sees.
	stream.NumGo = 1
	stream.ChooseKey = idx.choose
	if _, err := stream.Backup(cw, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if idx.err != nil {
		return fmt.Errorf("storage: backup: %w", idx.err)
	}
	if err := cw.endChunks(); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if err := s.recs.backup(cw.files(), idx.blocks); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if err := cw.end(); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	return nil
}

// backupBlock is a block that a backup copies: an index entry of the stream's snapshot.
type backupBlock struct {
	prefix string // the queue's index prefix
	ref    blockRef
}

// backupIndex collects the index entries of the backup stream's snapshot, as the stream
// reads them.
type backupIndex struct {
	blocks []backupBlock
	err    error
}

// choose is the stream's ChooseKey: it notes item, the newest version of its key at the
// snapshot, if it is an index entry, and chooses every key.
func (b *backupIndex) choose(item *badger.Item) bool {
	k := item.Key()
	if b.err != nil || item.IsDeletedOrExpired() ||
		!bytes.HasPrefix(k, []byte(prefixOutboxIndex)) && !bytes.HasPrefix(k, []byte(prefixInboxIndex)) {
		return true
	}
	n, ok := queuePrefixLen(k)
	if !ok {
		b.err = fmt.Errorf("%w: index key %x", ErrCorrupt, k)
		return true
	}
	var bb backupBlock
	if last := len(b.blocks) - 1; last >= 0 && b.blocks[last].prefix == string(k[:n]) {
		bb.prefix = b.blocks[last].prefix // one string per queue (mostly)
	} else {
		bb.prefix = string(k[:n])
	}
	b.err = item.Value(func(v []byte) error {
		var err error
		bb.ref, err = decodeBlockRef(k, n, v)
		return err
	})
	b.blocks = append(b.blocks, bb)
	return true
}

// backup writes the files of a backup (see its format above) to w: the blocks, each checked
// as it is copied. The caller holds the files (hold), so that no block is released.
func (l *recordLog) backup(w io.Writer, blocks []backupBlock) error {
	slices.SortFunc(blocks, func(a, b backupBlock) int {
		if c := strings.Compare(a.prefix, b.prefix); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ref.file, b.ref.file); c != 0 {
			return c
		}
		return cmp.Compare(a.ref.off, b.ref.off)
	})
	buf := make([]byte, 32<<10)
	for i := 0; i < len(blocks); {
		b := blocks[i]
		j := i + 1
		for j < len(blocks) && blocks[j].prefix == b.prefix && blocks[j].ref.file == b.ref.file {
			j++
		}
		if err := l.backupFile(w, blocks[i:j], buf); err != nil {
			return err
		}
		i = j
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, 0))
	return err
}

// backupFile writes one file's blocks, in order of offset.
func (l *recordLog) backupFile(w io.Writer, blocks []backupBlock, buf []byte) error {
	prefix, id := blocks[0].prefix, blocks[0].ref.file
	h := binary.BigEndian.AppendUint32(nil, uint32(len(prefix)))
	h = append(h, prefix...)
	h = binary.BigEndian.AppendUint64(h, id)
	h = binary.BigEndian.AppendUint32(h, uint32(len(blocks)))
	if _, err := w.Write(h); err != nil {
		return err
	}
	path := filepath.Join(l.dir, segmentName(queueFileName([]byte(prefix)), id))
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: records %d to %d: %w", ErrCorrupt, blocks[0].ref.first, blocks[len(blocks)-1].ref.last, err)
	}
	defer f.Close()
	for _, b := range blocks {
		if _, err := w.Write(binary.BigEndian.AppendUint64(nil, b.ref.off)); err != nil {
			return err
		}
		check := func(h []byte) error { return checkBlockHeader(h, b.ref) }
		if _, err := copyBlock(w, io.NewSectionReader(f, int64(b.ref.off), int64(b.ref.size)), check, buf); err != nil {
			return fmt.Errorf("copy records %d to %d from %s at %d: %w", b.ref.first, b.ref.last, path, b.ref.off, err)
		}
	}
	return nil
}

// copyBlock copies a block from src to dst through buf and returns its header: the header,
// which check (if not nil) accepts before anything is written, then as many bytes as it
// says, checked against its CRC as they pass. A block that is not one is ErrCorrupt.
func copyBlock(dst io.Writer, src io.Reader, check func(h []byte) error, buf []byte) ([]byte, error) {
	h := make([]byte, blockHeader)
	if _, err := io.ReadFull(src, h); err != nil {
		return nil, err
	}
	plen := binary.BigEndian.Uint32(h[24:])
	if !bytes.Equal(h[:4], blockMagic[:]) || plen > maxBlockPayload {
		return nil, fmt.Errorf("%w: no block header", ErrCorrupt)
	}
	if check != nil {
		if err := check(h); err != nil {
			return nil, err
		}
	}
	crc := crc32.New(castagnoli)
	crc.Write(h[8:])
	if _, err := dst.Write(h); err != nil {
		return nil, err
	}
	if _, err := io.CopyBuffer(io.MultiWriter(dst, crc), io.LimitReader(src, int64(plen)), buf); err != nil {
		return nil, err
	}
	// A source that ends early gives CopyBuffer no error: the CRC, of fewer bytes, differs.
	if crc.Sum32() != binary.BigEndian.Uint32(h[4:]) {
		return nil, fmt.Errorf("%w: block checksum mismatch", ErrCorrupt)
	}
	return h, nil
}

// checkBlockHeader checks that the block whose header is h is the block ref points at.
func checkBlockHeader(h []byte, ref blockRef) error {
	first, n := binary.BigEndian.Uint64(h[8:]), uint64(binary.BigEndian.Uint32(h[16:]))
	size := blockHeader + uint64(binary.BigEndian.Uint32(h[24:]))
	if !bytes.Equal(h[:4], blockMagic[:]) || first != ref.first || n == 0 || first+n-1 != ref.last || size != uint64(ref.size) {
		return fmt.Errorf("%w: block of records %d+%d, %d bytes, where the index says %d to %d, %d bytes", ErrCorrupt, first, n, size, ref.first, ref.last, ref.size)
	}
	return nil
}

// Restore creates the store in dir from a backup read from r. dir must hold no store (it
// may be missing or empty). A backup of an encrypted store is restored only with the same
// key in opts.EncryptionKey (ErrBackupKey), one of a store in clear only in clear. On error
// nothing is left in dir.
func Restore(dir string, r io.Reader, opts Options) (err error) {
	if err := opts.Validate(); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%w in %s: restore into a new home, or move that store away first", ErrStoreExists, dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: restore into %s: %w", dir, err)
	}
	cr := &chunkReader{r: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
	if err := cr.header(opts.EncryptionKey); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("storage: create %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, removeContents(dir))
		}
	}()
	db, err := badger.Open(badgerOptions(dir, opts, true))
	if err != nil {
		return fmt.Errorf("storage: restore into %s: %w", dir, err)
	}
	if err := restoreInto(db, dir, cr); err != nil {
		return errors.Join(fmt.Errorf("storage: restore: %w", err), db.Close())
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	// Open checks the schema, migrates an older store (which deletes the invisible records
	// of a batch the copy of a version 2 store cut) and cuts the segment files back to their
	// index.
	s, err := Open(dir, opts)
	if err != nil {
		return fmt.Errorf("storage: open the restored store: %w", err)
	}
	return s.Close()
}

// restoreInto loads the backup that cr reads, after its header, into db, of the store in
// dir.
func restoreInto(db *badger.DB, dir string, cr *chunkReader) error {
	if err := db.Load(&listGuard{r: cr}, 16); err != nil {
		return err
	}
	if cr.format == 1 {
		return nil // the chunk reader checked the end
	}
	if err := restoreFiles(filepath.Join(dir, segmentDir), filesReader{cr}); err != nil {
		return err
	}
	if err := cr.end(); err != nil {
		return err
	}
	return checkRestoredIndex(db, filepath.Join(dir, segmentDir))
}

// restoreFiles writes the files part of a backup, which r reads, into the segment directory
// dir.
func restoreFiles(dir string, r io.Reader) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var n [8]byte
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(r, n[:4]); err != nil {
			return err
		}
		plen := binary.BigEndian.Uint32(n[:4])
		if plen == 0 { // the files and the directory made for them stay
			return errors.Join(syncDir(dir), syncDir(filepath.Dir(dir)))
		}
		if plen > uint32(maxQueuePrefix) {
			return fmt.Errorf("%w: index prefix of %d bytes", ErrBackupDamaged, plen)
		}
		prefix := make([]byte, plen)
		if _, err := io.ReadFull(r, prefix); err != nil {
			return err
		}
		if m, ok := queuePrefixLen(seqKey(prefix, 0)); !ok || m != len(prefix) ||
			!bytes.HasPrefix(prefix, []byte(prefixOutboxIndex)) && !bytes.HasPrefix(prefix, []byte(prefixInboxIndex)) {
			return fmt.Errorf("%w: index prefix %x", ErrBackupDamaged, prefix)
		}
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return err
		}
		id := binary.BigEndian.Uint64(n[:])
		if _, err := io.ReadFull(r, n[:4]); err != nil {
			return err
		}
		if id == 0 {
			return fmt.Errorf("%w: file ID 0", ErrBackupDamaged)
		}
		path := filepath.Join(dir, segmentName(queueFileName(prefix), id))
		if err := restoreFile(path, r, binary.BigEndian.Uint32(n[:4]), buf); err != nil {
			return err
		}
	}
}

// restoreFile writes a file of blocks blocks, which r reads, to path, and syncs it.
func restoreFile(path string, r io.Reader, blocks uint32, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s twice", ErrBackupDamaged, filepath.Base(path))
	}
	if err != nil {
		return err
	}
	var end int64 // of the last block written
	var n [8]byte
	for range blocks {
		if _, err = io.ReadFull(r, n[:]); err != nil {
			break
		}
		off := binary.BigEndian.Uint64(n[:])
		if off < uint64(end) || off > math.MaxInt64/2 {
			err = fmt.Errorf("%w: block at %d in %s: the one before ends at %d", ErrBackupDamaged, off, filepath.Base(path), end)
			break
		}
		var h []byte
		if h, err = copyBlock(io.NewOffsetWriter(f, int64(off)), r, nil, buf); err != nil {
			if errors.Is(err, ErrCorrupt) {
				err = fmt.Errorf("%w: %s at %d: %w", ErrBackupDamaged, filepath.Base(path), off, err)
			}
			break
		}
		end = int64(off) + blockHeader + int64(binary.BigEndian.Uint32(h[24:]))
	}
	if err == nil {
		err = fdatasync(f)
	}
	return errors.Join(err, f.Close())
}

// checkRestoredIndex checks that every index entry in db points at a block in the segment
// directory dir, the block it says: a backup whose files miss a block that the index needs is
// damaged, and refused whole.
func checkRestoredIndex(db *badger.DB, dir string) error {
	var f *os.File // the file of the last entry
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	h := make([]byte, blockHeader)
	err := db.View(func(txn *badger.Txn) error {
		return eachIndexEntry(txn, func(prefix []byte, ref blockRef) error {
			path := filepath.Join(dir, segmentName(queueFileName(prefix), ref.file))
			if f == nil || f.Name() != path {
				if f != nil {
					f.Close()
				}
				var err error
				if f, err = os.Open(path); err != nil {
					return fmt.Errorf("%w: records %d to %d: no file holds them: %w", ErrBackupDamaged, ref.first, ref.last, err)
				}
			}
			if _, err := f.ReadAt(h, int64(ref.off)); err != nil {
				return fmt.Errorf("%w: records %d to %d: no block at %d in %s: %w", ErrBackupDamaged, ref.first, ref.last, ref.off, path, err)
			}
			if err := checkBlockHeader(h, ref); err != nil {
				return fmt.Errorf("%w: %s at %d: %w", ErrBackupDamaged, path, ref.off, err)
			}
			return nil
		})
	})
	if errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBackupDamaged) {
		return fmt.Errorf("%w: %w", ErrBackupDamaged, err) // an index entry that does not parse
	}
	return err
}

// removeContents deletes what is in dir, leaving dir itself.
func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(dir+string(os.PathSeparator)+e.Name()))
	}
	return errors.Join(errs...)
}

// chunkWriter writes the backup framing around Badger's stream, and the files after it.
type chunkWriter struct {
	w   *bufio.Writer
	sum hash.Hash
}

func (c *chunkWriter) header(key []byte) error {
	h := append([]byte(backupMagic), backupFormatVersion, schemaVersion, 0)
	if len(key) > 0 {
		h[len(h)-1] = 1
		h = append(h, keyCheck(key)...)
	}
	c.sum.Write(h)
	_, err := c.w.Write(h)
	return err
}

// Write writes p as chunks of Badger's stream.
func (c *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 { // bounded: each round takes up to maxChunk bytes
		k := min(len(p), maxChunk)
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(k))
		if _, err := c.w.Write(l[:]); err != nil {
			return n, err
		}
		if _, err := c.w.Write(p[:k]); err != nil {
			return n, err
		}
		c.sum.Write(p[:k])
		n += k
		p = p[k:]
	}
	return n, nil
}

// endChunks ends Badger's stream.
func (c *chunkWriter) endChunks() error {
	_, err := c.w.Write([]byte{0, 0, 0, 0})
	return err
}

// files returns the writer of what follows Badger's stream.
func (c *chunkWriter) files() io.Writer { return io.MultiWriter(c.w, c.sum) }

// end writes the checksum of all that came before it.
func (c *chunkWriter) end() error {
	if _, err := c.w.Write(c.sum.Sum(nil)); err != nil {
		return err
	}
	return c.w.Flush()
}

// chunkReader reads what chunkWriter wrote, giving Load Badger's stream and io.EOF at its
// end (in format 1 only after a valid end).
type chunkReader struct {
	r      *bufio.Reader
	sum    hash.Hash
	format byte // the backup's, from its header
	left   int  // bytes left in the current chunk
	done   bool
}

func (c *chunkReader) header(key []byte) error {
	h := make([]byte, len(backupMagic)+3)
	if _, err := io.ReadFull(c.r, h); err != nil || string(h[:len(backupMagic)]) != backupMagic {
		return fmt.Errorf("%w: the file does not start with %q; give a file written by ssanet backup", ErrNotBackup, backupMagic[:len(backupMagic)-1])
	}
	format, schema := h[len(backupMagic)], h[len(backupMagic)+1]
	if format > backupFormatVersion {
		return fmt.Errorf("%w: backup format %d, this program reads up to %d", ErrBackupNewer, format, backupFormatVersion)
	}
	if format == 0 {
		return fmt.Errorf("%w: backup format 0", ErrNotBackup)
	}
	if schema > schemaVersion {
		return fmt.Errorf("%w: store schema version %d, this program reads up to %d", ErrBackupNewer, schema, schemaVersion)
	}
	c.format = format
	c.sum.Write(h)
	var check []byte
	switch h[len(backupMagic)+2] {
	case 0:
	case 1:
		check = make([]byte, sha256.Size)
		if _, err := io.ReadFull(c.r, check); err != nil {
			return fmt.Errorf("%w: %v", ErrBackupDamaged, err)
		}
		c.sum.Write(check)
	default:
		return fmt.Errorf("%w: key check kind %d", ErrNotBackup, h[len(backupMagic)+2])
	}
	switch {
	case check == nil && len(key) > 0:
		return fmt.Errorf("%w: the backup is of a store in clear; restore it without an encryption key (no encryption-key-file in the new home's config, no SSANET_STORAGE_KEY)", ErrBackupKey)
	case check != nil && len(key) == 0:
		return fmt.Errorf("%w: the store was encrypted; give its key (encryption-key-file in the new home's config, or SSANET_STORAGE_KEY)", ErrBackupKey)
	case check != nil && string(check) != string(keyCheck(key)):
		return fmt.Errorf("%w: the key given is another one; give the key of the store the backup was taken of", ErrBackupKey)
	}
	return nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		var l [4]byte
		if _, err := io.ReadFull(c.r, l[:]); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBackupDamaged, err)
		}
		n := binary.BigEndian.Uint32(l[:])
		if n == 0 {
			if c.format == 1 {
				if err := c.end(); err != nil {
					return 0, err
				}
			}
			c.done = true
			return 0, io.EOF
		}
		if n > maxChunk {
			return 0, fmt.Errorf("%w: chunk of %d bytes, at most %d", ErrBackupDamaged, n, maxChunk)
		}
		c.left = int(n)
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.sum.Write(p[:n])
	c.left -= n
	if errors.Is(err, io.EOF) {
		if c.left > 0 {
			return n, fmt.Errorf("%w: %v", ErrBackupDamaged, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

// end reads the checksum and compares it with what came before it.
func (c *chunkReader) end() error {
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c.r, want); err != nil {
		return fmt.Errorf("%w: %v", ErrBackupDamaged, err)
	}
	if string(want) != string(c.sum.Sum(nil)) {
		return fmt.Errorf("%w: checksum differs", ErrBackupDamaged)
	}
	return nil
}

// filesReader reads what follows Badger's stream: every byte counts in the checksum, and the
// file ends only after it (any end before is ErrBackupDamaged).
type filesReader struct{ c *chunkReader }

func (f filesReader) Read(p []byte) (int, error) {
	n, err := f.c.r.Read(p)
	f.c.sum.Write(p[:n])
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("%w: %w", ErrBackupDamaged, err)
	}
	return n, nil
}

// listGuard passes Badger's backup stream (lists, each after its length: 8 bytes, little
// endian) to Load, and stops it at a list longer than maxLoadList, before Load allocates it.
type listGuard struct {
	r    io.Reader
	hdr  [8]byte
	nhdr int    // bytes of the current length seen
	left uint64 // bytes left of the current list
}

func (g *listGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	for i := 0; i < n; {
		if g.left > 0 {
			k := min(uint64(n-i), g.left)
			i += int(k)
			g.left -= k
			continue
		}
		g.hdr[g.nhdr] = p[i]
		g.nhdr++
		i++
		if g.nhdr == len(g.hdr) {
			g.nhdr = 0
			g.left = binary.LittleEndian.Uint64(g.hdr[:])
			if g.left > maxLoadList {
				return 0, fmt.Errorf("%w: a list of %d bytes in Badger's stream, at most %d", ErrBackupDamaged, g.left, maxLoadList)
			}
		}
	}
	return n, err
}
