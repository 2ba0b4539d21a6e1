package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/ssanet/ssanet/protocol"
)

// FilePos is where the agent read a followed file up to: a source of raw records that grows
// (Suricata's eve.json). It is committed with the records read before it (EnqueueAll), so
// that a restart goes on from exactly where the queued records end.
type FilePos struct {
	Path   string // the followed file, as configured: the key, at most maxPathLen bytes
	Inode  uint64 // the file read (a rotation puts another at Path)
	Offset int64  // the first byte not read
	// InLongLine says Offset is inside a line too long to read, skipped up to its newline.
	InLongLine bool
}

// maxPathLen bounds a followed file's path, which becomes a key: Linux's PATH_MAX.
const maxPathLen = 4096

func checkFilePos(pos *FilePos) error {
	if pos.Path == "" || len(pos.Path) > maxPathLen {
		return fmt.Errorf("storage: followed file's path of %d bytes: want 1 to %d", len(pos.Path), maxPathLen)
	}
	if pos.Offset < 0 {
		return fmt.Errorf("storage: followed file %q: negative offset %d", pos.Path, pos.Offset)
	}
	return nil
}

// FilePos returns where the followed file path was read up to; ErrNotFound (with the zero
// position: the file's start) when no position was ever committed for it.
func (s *Store) FilePos(path string) (FilePos, error) {
	pos := FilePos{Path: path}
	if err := checkFilePos(&pos); err != nil {
		return pos, err
	}
	err := s.view(func(txn *badger.Txn) error {
		b, err := get(txn, filePosKey(path))
		if err != nil {
			return err
		}
		var rec filePosRecord
		if err := protocol.Unmarshal(b, &rec); err != nil || rec.Offset < 0 {
			return fmt.Errorf("%w: position of the followed file %q: %+v %v", ErrCorrupt, path, rec, err)
		}
		pos.Inode, pos.Offset, pos.InLongLine = rec.Inode, rec.Offset, rec.InLongLine
		return nil
	})
	if err != nil {
		return FilePos{Path: path}, fmt.Errorf("storage: read where the followed file %q was read up to: %w", path, err)
	}
	return pos, nil
}

// filePosRecord is a FilePos as stored under f/<path>. Integer keys are never renumbered or
// reused.
type filePosRecord struct {
	Inode      uint64 `cbor:"1,keyasint,omitempty"`
	Offset     int64  `cbor:"2,keyasint,omitempty"`
	InLongLine bool   `cbor:"3,keyasint,omitempty"`
}

func putFilePos(txn *badger.Txn, pos *FilePos) error {
	b, err := protocol.Marshal(filePosRecord{Inode: pos.Inode, Offset: pos.Offset, InLongLine: pos.InLongLine})
	if err != nil {
		return err
	}
	return txn.Set(filePosKey(pos.Path), b)
}

func filePosKey(path string) []byte { return []byte(prefixFilePos + path) }
