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

	"github.com/ssanet/ssanet/protocol"
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
		if err := c.a.mgr.ingest(c.format, chunk, map[string]int64{}); err != nil {
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

// followState is where a followed file was read up to, kept across restarts.
type followState struct {
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// follow reads complete lines appended to a file, polling it. It keeps the file open, so
// when the file is rotated (another inode appears at the path, or the file shrinks) it
// finishes what was appended to the old file before starting the new one from its beginning.
// Where it got is saved in HOME/follow, so a restart neither skips nor repeats records.
func (a *Agent) follow(ctx context.Context, f FollowConfig) {
	sum := sha256.Sum256([]byte(f.Path))
	statePath := filepath.Join(a.home, "follow", hex.EncodeToString(sum[:8])+".json")
	os.MkdirAll(filepath.Dir(statePath), 0o700)
	fl := &follower{a: a, cfg: f}
	if b, err := os.ReadFile(statePath); err == nil {
		json.Unmarshal(b, &fl.st)
	}
	defer fl.close()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if err := fl.poll(ctx); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("follow", "path", f.Path, "err", err)
		}
		if err := writeFileAtomic(statePath, mustJSON(fl.st)); err != nil {
			a.log.Error("save the followed file's offset", "path", f.Path, "err", err)
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
	st   followState
	file *os.File
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
			fl.st = followState{Inode: inodeOf(info)} // not the file we were reading
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
		fl.st = followState{}
	}
	return nil
}

// drain ingests the complete lines from the saved offset to the end of the open file.
func (fl *follower) drain(ctx context.Context) error {
	const chunk = 4 << 20
	buf := make([]byte, chunk)
	for ctx.Err() == nil {
		n, err := fl.file.ReadAt(buf, fl.st.Offset)
		if n == 0 {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		end := bytes.LastIndexByte(buf[:n], '\n') + 1
		if end == 0 {
			return nil // an incomplete line: read it when it is complete
		}
		if _, err := fl.a.Ingest(ctx, fl.cfg.Format, bytes.NewReader(buf[:end])); err != nil {
			return err
		}
		fl.st.Offset += int64(end)
	}
	return ctx.Err()
}
