package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Sources of raw records (Appendix I step ⑦): the security agent hands its detections to the
// provider's enforcement point by `ssanet ingest` (Agent.Ingest), by syslog (UDP and TCP), or
// by a file the agent follows as it grows (Suricata's eve.json), across rotations (follow.go).

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

// IngestStats counts what one ingestion did.
type IngestStats struct {
	Records int64 `json:"records"` // records handed to the enforcement points
	// Malformed counts the records that could not be cut out of the input, and those that an
	// SSA's enforcement point could not parse (not those a filter or the schedule left out).
	Malformed int64            `json:"malformed"`
	Queued    map[string]int64 `json:"queued"` // refined records queued, per SSA
	// NotQueued counts, per SSA, the refined records left out because the requester's
	// queue had reached max-queued-per-peer.
	NotQueued map[string]int64 `json:"not_queued,omitempty"`
	// What else became of the records, per SSA that shares their format: not shared because
	// they reached the provider before the start or from the end of its schedule; excluded
	// by a filter (or one that could not be evaluated); counted in a summary.
	OutsideSchedule map[string]int64 `json:"outside_schedule,omitempty"`
	Filtered        map[string]int64 `json:"filtered,omitempty"`
	Summarised      map[string]int64 `json:"summarised,omitempty"`
	// SSAs is the number of SSAs in force that share the format (0: the records went to
	// none).
	SSAs int `json:"ssas"`
}

// countOutcomes adds what a refined chunk's enforcement points did with its records.
func (st *IngestStats) countOutcomes(c refinedChunk) {
	add := func(m *map[string]int64, id string, n int64) {
		if n > 0 {
			if *m == nil {
				*m = map[string]int64{}
			}
			(*m)[id] += n
		}
	}
	for i, run := range c.runs {
		n := c.counts[i]
		add(&st.OutsideSchedule, run.ssa.ID, n.outside)
		add(&st.Filtered, run.ssa.ID, n.filtered)
		add(&st.Summarised, run.ssa.ID, n.summarised)
	}
	st.SSAs = max(st.SSAs, len(c.runs))
}

// count adds what one chunk queued, and left out, for an SSA.
func (st *IngestStats) count(ssaID string, queued, notQueued int) {
	if queued > 0 {
		if st.Queued == nil {
			st.Queued = map[string]int64{}
		}
		st.Queued[ssaID] += int64(queued)
	}
	if notQueued > 0 {
		if st.NotQueued == nil {
			st.NotQueued = map[string]int64{}
		}
		st.NotQueued[ssaID] += int64(notQueued)
	}
}

// Ingest is Appendix I steps ⑦–⑧: raw records of format from the security agent go to every
// SSA in force that shares that format, are refined under its SSP and queued durably for
// delivery. A malformed record is counted and skipped. Refining a chunk overlaps with
// queueing the previous one. Each chunk is queued for every SSA at once, or for none.
func (a *Agent) Ingest(ctx context.Context, format string, r io.Reader) (IngestStats, error) {
	return a.refiner.ingest(ctx, format, r, nil)
}

// ingestFlush is how long received syslog messages wait to be refined together.
const ingestFlush = 50 * time.Millisecond

// queue is what the sources need of refine-and-queue (refiner).
type queue interface {
	// ingest refines and queues the records read from r; from, if not nil, is where r
	// starts in a followed file, committed with each chunk.
	ingest(ctx context.Context, format string, r io.Reader, from *storage.FilePos) (IngestStats, error)
	// queueChunk refines and queues records cut out already.
	queueChunk(format string, raws [][]byte) error
}

// sources runs the configured sources of raw records until their context ends.
type sources struct {
	queue queue
	store *storage.Store // where followed files were read up to
	disk  *diskWatch     // a full disk pauses them
	home  string         // where an earlier version kept followed files' offsets
	log   *slog.Logger
	wg    sync.WaitGroup
}

func newSources(q queue, st *storage.Store, disk *diskWatch, home string, log *slog.Logger) *sources {
	return &sources{queue: q, store: st, disk: disk, home: home, log: log}
}

// start opens the configured listeners and starts every source; they stop with ctx (wait
// waits for them).
func (s *sources) start(ctx context.Context, cfg IngestConfig) error {
	if cfg.SyslogUDP != "" {
		pc, err := net.ListenPacket("udp", cfg.SyslogUDP)
		if err != nil {
			return fmt.Errorf("syslog UDP listener: %w", err)
		}
		s.goRun(func() { <-ctx.Done(); pc.Close() })
		s.goRun(func() { s.syslogUDP(ctx, pc) })
	}
	if cfg.SyslogTCP != "" {
		ln, err := net.Listen("tcp", cfg.SyslogTCP)
		if err != nil {
			return fmt.Errorf("syslog TCP listener: %w", err)
		}
		s.goRun(func() { <-ctx.Done(); ln.Close() })
		s.goRun(func() { s.syslogTCP(ctx, ln) })
	}
	for _, f := range cfg.Follow {
		s.goRun(func() { s.follow(ctx, f) })
	}
	return nil
}

// wait waits for every source to stop.
func (s *sources) wait() { s.wg.Wait() }

func (s *sources) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// collector batches records that arrive one at a time.
type collector struct {
	*sources
	format string
	recs   chan []byte
}

func (s *sources) newCollector(ctx context.Context, format string) *collector {
	c := &collector{sources: s, format: format, recs: make(chan []byte, ingestChunk)}
	s.goRun(func() { c.run(ctx) })
	return c
}

func (c *collector) run(ctx context.Context) {
	t := time.NewTicker(ingestFlush)
	defer t.Stop()
	var chunk [][]byte
	for {
		select {
		case <-ctx.Done():
			c.flush(chunk)
			return
		case r := <-c.recs:
			if chunk = append(chunk, r); len(chunk) == ingestChunk {
				chunk = c.flush(chunk)
			}
		case <-t.C:
			chunk = c.flush(chunk)
		}
	}
}

// flush queues chunk and returns an empty one.
func (c *collector) flush(chunk [][]byte) [][]byte {
	if len(chunk) == 0 {
		return chunk
	}
	err := storage.ErrDiskFull
	if !c.disk.isPaused() { // else dropped unread: a full disk pauses records
		err = c.queue.queueChunk(c.format, chunk)
	}
	if errors.Is(err, storage.ErrDiskFull) {
		c.disk.dropped.Add(float64(len(chunk)))
		c.disk.refused()
	} else if err != nil {
		c.log.Error("ingest", "format", c.format, "err", err)
	}
	return nil
}

func (s *sources) syslogUDP(ctx context.Context, pc net.PacketConn) {
	c := s.newCollector(ctx, protocol.FormatSyslog)
	buf := make([]byte, 64<<10)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("syslog UDP", "err", err)
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
func (s *sources) syslogTCP(ctx context.Context, ln net.Listener) {
	c := s.newCollector(ctx, protocol.FormatSyslog)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("syslog TCP", "err", err)
			}
			return
		}
		s.goRun(func() { c.readLines(ctx, conn) })
	}
}

// readLines hands each non-empty line of conn to the collector until conn or ctx ends.
func (c *collector) readLines(ctx context.Context, conn net.Conn) {
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
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		c.log.Debug("syslog TCP connection", "remote", conn.RemoteAddr().String(), "err", err)
	}
}
