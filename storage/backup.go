package storage

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/dgraph-io/badger/v4"
)

// A backup file is a header, then Badger's backup stream (DB.Backup: every live key at one
// read timestamp, values in clear) cut into chunks, then an end chunk holding the SHA-256 of
// what came before it. The header says what the file is and which record layout it holds:
//
//	"ssanet-backup\n" | format version (1 byte) | schema version (1 byte) |
//	key check: 0 (store in clear) or 1 and SHA-256("ssanet-backup key check\n" | key)
//	chunk: length (4 bytes, big-endian, 1..maxChunk) | bytes
//	end:   length 0 | SHA-256 of the header and every chunk's bytes (32 bytes)
//
// The end chunk makes a file cut short (a full disk, a copy stopped half way) an error on
// restore, where Badger's stream alone would end cleanly at any of its own boundaries.
const (
	backupMagic         = "ssanet-backup\n"
	backupFormatVersion = 1
	maxChunk            = 1 << 20
	// maxLoadList bounds a list of Badger's stream on restore: Load allocates the length an
	// 8-byte prefix gives before it reads the list, so a crafted file could ask for any
	// amount. Backup writes lists of up to about 116 MiB (Badger's Stream: batches of 16 MiB
	// merged up to 100 MiB, plus one key's versions).
	maxLoadList     = 256 << 20
	keyCheckContext = "ssanet-backup key check\n"
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
// committed at the moment Backup starts, nothing written after. The values are in clear
// even when the store is encrypted (Badger decrypts what it streams): keep the file as
// secret as the store's key. The header keeps a hash of the key, so that Restore encrypts
// the copy with the same key or refuses. A large Enqueue or Receive under way may leave its invisible
// records in the copy; Open deletes them after Restore, as after a crash.
func (s *Store) Backup(w io.Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	cw := &chunkWriter{w: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
	if err := cw.header(s.key); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if _, err := s.db.Backup(cw, 0); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
	}
	if err := cw.end(); err != nil {
		return fmt.Errorf("storage: backup: %w", err)
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
	if err := db.Load(&listGuard{r: cr}, 16); err != nil {
		return errors.Join(fmt.Errorf("storage: restore: %w", err), db.Close())
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	// Open checks the schema and deletes the invisible records of a batch the copy cut.
	s, err := Open(dir, opts)
	if err != nil {
		return fmt.Errorf("storage: open the restored store: %w", err)
	}
	return s.Close()
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

// chunkWriter writes the backup framing around Badger's stream.
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

func (c *chunkWriter) end() error {
	if _, err := c.w.Write([]byte{0, 0, 0, 0}); err != nil {
		return err
	}
	if _, err := c.w.Write(c.sum.Sum(nil)); err != nil {
		return err
	}
	return c.w.Flush()
}

// chunkReader reads what chunkWriter wrote, giving Load Badger's stream and io.EOF only
// after a valid end chunk.
type chunkReader struct {
	r    *bufio.Reader
	sum  hash.Hash
	left int // bytes left in the current chunk
	done bool
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
			want := make([]byte, sha256.Size)
			if _, err := io.ReadFull(c.r, want); err != nil {
				return 0, fmt.Errorf("%w: %v", ErrBackupDamaged, err)
			}
			if string(want) != string(c.sum.Sum(nil)) {
				return 0, fmt.Errorf("%w: checksum differs", ErrBackupDamaged)
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
