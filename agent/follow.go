package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/storage"
)

// followPoll is how often a followed file is looked at.
const followPoll = 200 * time.Millisecond

// followState is where a followed file was read up to, as versions before the store kept it
// (in HOME/follow/<hash of the path>.json): read once by migrateFollowState.
type followState struct {
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
	// InLongLine says Offset is inside a line longer than followBuffer, skipped up to its
	// newline.
	InLongLine bool `json:"in_long_line,omitempty"`
}

// followBuffer is the most of a followed file read at once. A longer line, far over
// policy.MaxRecordSize, is skipped as malformed.
const followBuffer = 4 << 20

// follow reads complete lines appended to a file, polling it. It keeps the file open, so
// when the file is rotated (another inode appears at the path, or the file shrinks) it
// finishes what was appended to the old file before starting the new one from its beginning.
// Where it got is committed to the store with each chunk of records queued, in the same
// transaction (storage.EnqueueAll), so a restart, even after a kill -9, neither skips nor
// repeats a record.
func (s *sources) follow(ctx context.Context, f FollowConfig) {
	fl := s.newFollower(f)
	defer fl.close()
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for {
		// While the disk is below its reserve the file is not read: it waits where it was.
		err := storage.ErrDiskFull
		if !s.disk.isPaused() {
			err = fl.poll(ctx)
		}
		switch {
		case errors.Is(err, storage.ErrDiskFull):
			s.disk.refused() // logged by the watch, once
		case err != nil && ctx.Err() == nil && !errors.Is(err, os.ErrNotExist):
			s.log.Warn("follow", "path", f.Path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// follower reads one followed file (owned by one goroutine).
type follower struct {
	*sources
	cfg  FollowConfig
	st   storage.FilePos // where the file was read up to, as committed
	file *os.File
	buf  []byte // followBuffer bytes, from the first read on
	// malformed counts the records of the file skipped as malformed since the follower began.
	malformed int64
}

// newFollower returns a follower of f that starts where the store says the last one got to.
func (s *sources) newFollower(f FollowConfig) *follower {
	fl := &follower{sources: s, cfg: f}
	fl.reload()
	return fl
}

// reload makes the position committed in the store where the file was read up to: at the
// start, and after a failed ingest, part of which may have been committed. If the store
// cannot say, the follower goes on from where it was (at the start: the file's start).
func (fl *follower) reload() {
	pos, err := fl.store.FilePos(fl.cfg.Path)
	if errors.Is(err, storage.ErrNotFound) {
		pos, err = fl.migrateFollowState(fl.cfg.Path)
	}
	if err != nil {
		fl.log.Warn("read where the followed file was read up to from the store", "path", fl.cfg.Path, "offset", fl.st.Offset, "err", err)
		fl.st.Path = fl.cfg.Path
		return
	}
	fl.st = pos
}

// migrateFollowState moves the position an earlier version kept in HOME/follow into the store,
// once, and removes its file, so that an upgrade neither repeats nor skips records. Without
// such a file the position is the file's start.
func (s *sources) migrateFollowState(path string) (storage.FilePos, error) {
	pos := storage.FilePos{Path: path}
	sum := sha256.Sum256([]byte(path))
	dir := filepath.Join(s.home, "follow")
	old := filepath.Join(dir, hex.EncodeToString(sum[:8])+".json")
	b, err := os.ReadFile(old)
	if errors.Is(err, os.ErrNotExist) {
		return pos, nil
	}
	var st followState
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		return pos, fmt.Errorf("read the offset an earlier version saved in %s: %w", old, err)
	}
	pos.Inode, pos.Offset, pos.InLongLine = st.Inode, st.Offset, st.InLongLine
	if _, err := s.store.EnqueueAll(nil, &pos); err != nil {
		return pos, fmt.Errorf("store the offset an earlier version saved in %s: %w", old, err)
	}
	// The store has it now and is read first: a file left behind is never read again.
	if err := os.Remove(old); err != nil {
		s.log.Warn("remove the followed file's offset moved to the store; remove it by hand", "file", old, "err", err)
	}
	_ = os.Remove(dir) // once empty; other files of the directory keep it
	s.log.Info("followed file's offset moved to the store", "path", path, "offset", pos.Offset)
	return pos, nil
}

// moveTo makes pos where the file was read up to, and commits it: for a position that no
// record comes before (a new file, a skipped line).
func (fl *follower) moveTo(pos storage.FilePos) {
	pos.Path = fl.cfg.Path
	fl.st = pos
	if _, err := fl.store.EnqueueAll(nil, &pos); err != nil {
		fl.log.Error("save the followed file's offset: a restart will read again what was read since the last save; check the free space and permissions of the agent's home", "path", fl.cfg.Path, "err", err)
	}
}

// advance moves the offset n bytes on, into a line too long to read if inLongLine.
func (fl *follower) advance(n int, inLongLine bool) {
	fl.moveTo(storage.FilePos{Inode: fl.st.Inode, Offset: fl.st.Offset + int64(n), InLongLine: inLongLine})
}

func inodeOf(info os.FileInfo) uint64 {
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		return sys.Ino
	}
	return 0
}

func (fl *follower) close() {
	if fl.file != nil {
		fl.file.Close()
		fl.file = nil
	}
}

// poll reads what was appended to the file since the last poll, and follows a rotation.
func (fl *follower) poll(ctx context.Context) error {
	if fl.file == nil {
		if err := fl.open(); err != nil {
			return err
		}
	}
	if err := fl.drain(ctx); err != nil {
		return err
	}
	info, err := os.Stat(fl.cfg.Path)
	rotated := err == nil && inodeOf(info) != fl.st.Inode
	truncated, err := fl.truncated()
	if err != nil && !rotated { // a rotated file is left whatever its state
		return err
	}
	if !rotated && !truncated {
		return nil
	}
	if rotated {
		if err := fl.drain(ctx); err != nil { // what was written before the rotation
			return err
		}
	}
	fl.close()
	fl.moveTo(storage.FilePos{})
	return nil
}

// truncated reports whether the open file is now shorter than what was read of it.
func (fl *follower) truncated() (bool, error) {
	info, err := fl.file.Stat()
	if err != nil {
		return false, fmt.Errorf("stat the followed file: %w", err)
	}
	return info.Size() < fl.st.Offset, nil
}

// open opens the file at the path; if it is not the file read so far, reading starts at
// its beginning.
func (fl *follower) open() error {
	file, err := os.Open(fl.cfg.Path)
	if err != nil {
		return err
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return err
	}
	if inodeOf(info) != fl.st.Inode || info.Size() < fl.st.Offset {
		fl.moveTo(storage.FilePos{Inode: inodeOf(info)}) // not the file we were reading
	}
	fl.file = file
	return nil
}

// drain ingests the complete lines from the saved offset to the end of the open file.
func (fl *follower) drain(ctx context.Context) error {
	if fl.buf == nil {
		fl.buf = make([]byte, followBuffer)
	}
	buf := fl.buf
	for ctx.Err() == nil {
		n, err := fl.file.ReadAt(buf, fl.st.Offset)
		if n == 0 {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if fl.st.InLongLine {
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
				fl.advance(i+1, false)
			} else {
				fl.advance(n, true)
			}
			continue
		}
		end := bytes.LastIndexByte(buf[:n], '\n') + 1
		switch {
		case end > 0:
			if err := fl.ingest(ctx, buf[:end]); err != nil {
				return err
			}
		case n < len(buf):
			return nil // an incomplete line: read it when it is complete
		default:
			fl.malformed++
			fl.log.Warn("followed file: a line is longer than the read buffer, skipped as malformed; make the sensor write shorter records",
				"path", fl.cfg.Path, "offset", fl.st.Offset, "buffer", followBuffer, "malformed", fl.malformed)
			fl.advance(n, true)
		}
	}
	return ctx.Err()
}

// ingest queues complete lines ingestChunk lines at a time, each chunk committed with the
// offset where it ends. Records of the formats that may span lines (IDMEFv2 pretty-printed,
// IDMEF, IODEF) are handed over in one slice, which a cut between lines cannot split.
func (fl *follower) ingest(ctx context.Context, lines []byte) error {
	perLine := policy.OneRecordPerLine(fl.cfg.Format)
	for len(lines) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := len(lines)
		if perLine {
			end = linesEnd(lines, ingestChunk)
		}
		// A slice is one chunk of Ingest, queued whole once refined: a cancellation seen
		// inside would make Ingest report an error for records it queued.
		st, err := fl.queue.ingest(context.WithoutCancel(ctx), fl.cfg.Format, bytes.NewReader(lines[:end]), &fl.st)
		fl.malformed += st.Malformed
		if err != nil {
			fl.reload()
			return err
		}
		fl.st.Offset += int64(end) // committed with the last chunk
		lines = lines[end:]
	}
	return nil
}

// linesEnd is where the first n lines of b end (all of b's complete lines if fewer).
func linesEnd(b []byte, n int) int {
	end := 0
	for range n {
		i := bytes.IndexByte(b[end:], '\n')
		if i < 0 {
			break
		}
		end += i + 1
	}
	return end
}
