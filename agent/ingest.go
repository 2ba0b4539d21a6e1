package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Sources of raw records (Appendix I step ⑦): the security agent hands its detections to the
// provider's enforcement point by `ssanet ingest`, by syslog (UDP and TCP), or by a file the
// agent follows as it grows (Suricata's eve.json), across rotations.

// IngestConfig is the ingest section of config.yaml.
type IngestConfig struct {
	// SyslogUDP and SyslogTCP are host:port addresses to receive syslog messages on.
	SyslogUDP string `yaml:"syslog-udp,omitempty"`
	SyslogTCP string `yaml:"syslog-tcp,omitempty"`
	// Follow lists growing files to read records from.
	Follow []FollowConfig `yaml:"follow,omitempty"`
}

// FollowConfig is one followed file.
type FollowConfig struct {
	Path   string `yaml:"path"`
	Format string `yaml:"format"`
}

// ingestFlush is how long received syslog messages wait to be refined together.
const ingestFlush = 50 * time.Millisecond

// startIngest starts the configured sources; they stop with ctx.
func (a *Agent) startIngest(ctx context.Context, cfg IngestConfig) error {
	if cfg.SyslogUDP != "" {
		pc, err := net.ListenPacket("udp", cfg.SyslogUDP)
		if err != nil {
			return fmt.Errorf("syslog UDP listener: %w", err)
		}
		a.goRun(func() { <-ctx.Done(); pc.Close() })
		a.goRun(func() { a.syslogUDP(ctx, pc) })
	}
	if cfg.SyslogTCP != "" {
		ln, err := net.Listen("tcp", cfg.SyslogTCP)
		if err != nil {
			return fmt.Errorf("syslog TCP listener: %w", err)
		}
		a.goRun(func() { <-ctx.Done(); ln.Close() })
		a.goRun(func() { a.syslogTCP(ctx, ln) })
	}
	for _, f := range cfg.Follow {
		a.goRun(func() { a.follow(ctx, f) })
	}
	return nil
}

// goRun runs f in a goroutine the agent waits for at Close.
func (a *Agent) goRun(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// collector batches records that arrive one at a time.
type collector struct {
	a      *Agent
	format string
	recs   chan []byte
}

func (a *Agent) newCollector(ctx context.Context, format string) *collector {
	c := &collector{a: a, format: format, recs: make(chan []byte, ingestChunk)}
	a.goRun(func() { c.run(ctx) })
	return c
}

func (c *collector) run(ctx context.Context) {
	t := time.NewTicker(ingestFlush)
	defer t.Stop()
	var chunk [][]byte
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		err := storage.ErrDiskFull
		if !c.a.disk.isPaused() { // else dropped unread: a full disk pauses records
			err = c.a.mgr.ingest(c.format, chunk, &IngestStats{})
		}
		if errors.Is(err, storage.ErrDiskFull) {
			c.a.disk.dropped.Add(float64(len(chunk)))
			c.a.disk.refused()
		} else if err != nil {
			c.a.log.Error("ingest", "format", c.format, "err", err)
		}
		chunk = nil
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case r := <-c.recs:
			chunk = append(chunk, r)
			if len(chunk) == ingestChunk {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}

func (a *Agent) syslogUDP(ctx context.Context, pc net.PacketConn) {
	c := a.newCollector(ctx, protocol.FormatSyslog)
	buf := make([]byte, 64<<10)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("syslog UDP", "err", err)
			}
			return
		}
		msg := bytes.TrimRight(buf[:n], "\r\n")
		select {
		case c.recs <- slices.Clone(msg):
		case <-ctx.Done():
			return
		}
	}
}

// syslogTCP accepts newline-delimited syslog (RFC 6587 non-transparent framing).
func (a *Agent) syslogTCP(ctx context.Context, ln net.Listener) {
	c := a.newCollector(ctx, protocol.FormatSyslog)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("syslog TCP", "err", err)
			}
			return
		}
		a.goRun(func() {
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			sc := bufio.NewScanner(conn)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				if len(sc.Bytes()) == 0 {
					continue
				}
				select {
				case c.recs <- slices.Clone(sc.Bytes()):
				case <-ctx.Done():
					return
				}
			}
		})
	}
}

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
func (a *Agent) follow(ctx context.Context, f FollowConfig) {
	fl := a.newFollower(f)
	defer fl.close()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		// While the disk is below its reserve the file is not read: it waits where it was.
		err := storage.ErrDiskFull
		if !a.disk.isPaused() {
			err = fl.poll(ctx)
		}
		switch {
		case errors.Is(err, storage.ErrDiskFull):
			a.disk.refused() // logged by the watch, once
		case err != nil && ctx.Err() == nil && !errors.Is(err, os.ErrNotExist):
			a.log.Warn("follow", "path", f.Path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type follower struct {
	a    *Agent
	cfg  FollowConfig
	st   storage.FilePos // where the file was read up to, as committed
	file *os.File
	buf  []byte // followBuffer bytes, from the first read on
	// malformed counts the records of the file skipped as malformed since the follower began.
	malformed int64
}

// newFollower returns a follower of f that starts where the store says the last one got to.
func (a *Agent) newFollower(f FollowConfig) *follower {
	fl := &follower{a: a, cfg: f}
	fl.reload()
	return fl
}

// reload makes the position committed in the store where the file was read up to: at the
// start, and after a failed ingest, part of which may have been committed. If the store
// cannot say, the follower goes on from where it was (at the start: the file's start).
func (fl *follower) reload() {
	pos, err := fl.a.store.FilePos(fl.cfg.Path)
	if errors.Is(err, storage.ErrNotFound) {
		pos, err = fl.a.migrateFollowState(fl.cfg.Path)
	}
	if err != nil {
		fl.a.log.Warn("read where the followed file was read up to from the store", "path", fl.cfg.Path, "offset", fl.st.Offset, "err", err)
		fl.st.Path = fl.cfg.Path
		return
	}
	fl.st = pos
}

// migrateFollowState moves the position an earlier version kept in HOME/follow into the store,
// once, and removes its file, so that an upgrade neither repeats nor skips records. Without
// such a file the position is the file's start.
func (a *Agent) migrateFollowState(path string) (storage.FilePos, error) {
	pos := storage.FilePos{Path: path}
	sum := sha256.Sum256([]byte(path))
	dir := filepath.Join(a.home, "follow")
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
	if _, err := a.store.EnqueueAll(nil, &pos); err != nil {
		return pos, fmt.Errorf("store the offset an earlier version saved in %s: %w", old, err)
	}
	// The store has it now and is read first: a file left behind is never read again.
	if err := os.Remove(old); err != nil {
		a.log.Warn("remove the followed file's offset moved to the store; remove it by hand", "file", old, "err", err)
	}
	os.Remove(dir) // once empty
	a.log.Info("followed file's offset moved to the store", "path", path, "offset", pos.Offset)
	return pos, nil
}

// moveTo makes pos where the file was read up to, and commits it: for a position that no
// record comes before (a new file, a skipped line).
func (fl *follower) moveTo(pos storage.FilePos) {
	pos.Path = fl.cfg.Path
	fl.st = pos
	if _, err := fl.a.store.EnqueueAll(nil, &pos); err != nil {
		fl.a.log.Error("save the followed file's offset: a restart will read again what was read since the last save; check the free space and permissions of the agent's home", "path", fl.cfg.Path, "err", err)
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

func (fl *follower) poll(ctx context.Context) error {
	if fl.file == nil {
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
	}
	if err := fl.drain(ctx); err != nil {
		return err
	}
	info, err := os.Stat(fl.cfg.Path)
	cur, _ := fl.file.Stat()
	rotated := err == nil && inodeOf(info) != fl.st.Inode
	truncated := cur != nil && cur.Size() < fl.st.Offset
	if rotated || truncated {
		if rotated {
			if err := fl.drain(ctx); err != nil { // what was written before the rotation
				return err
			}
		}
		fl.close()
		fl.moveTo(storage.FilePos{})
	}
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
			fl.a.log.Warn("followed file: a line is longer than the read buffer, skipped as malformed; make the sensor write shorter records",
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
			end = 0
			for range ingestChunk {
				i := bytes.IndexByte(lines[end:], '\n')
				if i < 0 {
					break
				}
				end += i + 1
			}
		}
		// A slice is one chunk of Ingest, queued whole once refined: a cancellation seen
		// inside would make Ingest report an error for records it queued.
		st, err := fl.a.ingest(context.WithoutCancel(ctx), fl.cfg.Format, bytes.NewReader(lines[:end]), &fl.st)
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
