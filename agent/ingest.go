package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/policy"
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
	// SyslogTLS is a syslog listener over TLS (RFC 5425).
	SyslogTLS *SyslogTLSConfig `yaml:"syslog-tls,omitempty"`
	// Unix lists Unix sockets that take records, such as Suricata's unix_stream and
	// unix_dgram eve-log outputs (unixsource.go).
	Unix []UnixSourceConfig `yaml:"unix,omitempty"`
	// Follow lists growing files to read records from.
	Follow []FollowConfig `yaml:"follow,omitempty"`
}

// SyslogTLSConfig is the syslog listener over TLS (RFC 5425): a host:port, the listener's
// certificate and key (PEM files) and, optionally, the CA (PEM) that client certificates must
// chain to; with it, a client without such a certificate is refused.
type SyslogTLSConfig struct {
	Address  string `yaml:"address"`
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client-ca,omitempty"`
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
	// FilteredBy splits, per SSA, the records Filtered that a filter left out (not those it
	// could not be evaluated on) by filter: its index in the SSA's policy.filtering list, the
	// first filter that excluded the record.
	FilteredBy map[string][]int64 `json:"filtered_by,omitempty"`
	// FilterErrors counts, per SSA, the records of Filtered that a filter could not be
	// evaluated on.
	FilterErrors map[string]int64 `json:"filter_errors,omitempty"`
	Summarised   map[string]int64 `json:"summarised,omitempty"`
	// Untimed counts, per SSA that summarises, the records without a timestamp: no summary
	// window takes them.
	Untimed map[string]int64 `json:"untimed,omitempty"`
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
		add(&st.FilterErrors, run.ssa.ID, n.filterErrors)
		if slices.ContainsFunc(n.filteredBy, func(v int64) bool { return v > 0 }) {
			if st.FilteredBy == nil {
				st.FilteredBy = map[string][]int64{}
			}
			by := st.FilteredBy[run.ssa.ID]
			for len(by) < len(n.filteredBy) {
				by = append(by, 0)
			}
			for i, v := range n.filteredBy {
				by[i] += v
			}
			st.FilteredBy[run.ssa.ID] = by
		}
		add(&st.Summarised, run.ssa.ID, n.summarised)
		add(&st.Untimed, run.ssa.ID, n.untimed)
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

// ingestFlush is how long received records wait to be refined together: syslog messages and
// records of sockets, and those of `ssanet ingest` when no further one is ready.
const ingestFlush = 50 * time.Millisecond

// queue is what the sources need of refine-and-queue (refiner).
type queue interface {
	// ingest refines and queues the records read from r; from, if not nil, is where r
	// starts in a followed file, committed with each chunk.
	ingest(ctx context.Context, format string, r io.Reader, from *storage.FilePos) (IngestStats, error)
	// queueChunk refines and queues records cut out already.
	queueChunk(format string, raws [][]byte) error
	// notTaken counts n records of format that queueChunk did not take (err says why).
	notTaken(format string, n int, err error)
}

// sources runs the configured sources of raw records until their context ends.
type sources struct {
	queue queue
	store *storage.Store // where followed files were read up to
	disk  *diskWatch     // a full disk pauses them
	home  string         // where an earlier version kept followed files' offsets
	log   *slog.Logger
	// malformed counts the frames of the listeners and sockets that were no record: over
	// maxFrame, a bad octet count, a truncated datagram.
	malformed prometheus.Counter
	warned    atomic.Int64 // unix ms of the last warning about malformed frames
	wg        sync.WaitGroup

	// base is the context the sources run under, set by start (the agent's lifetime, as
	// net/http's Server.BaseContext): those a reload starts run under it too.
	base context.Context
	// running are the sources started by start and reload, by sourceSpec key; each runs its
	// goroutines in a sources of its own, so that a reload stops one and waits for it alone.
	mu      sync.Mutex
	running map[string]*runningSource
}

// runningSource is one started source: its config (compared at a reload), its goroutines and
// what stops them.
type runningSource struct {
	spec   sourceSpec
	sub    *sources
	cancel context.CancelFunc
}

func newSources(q queue, st *storage.Store, disk *diskWatch, home string, log *slog.Logger, reg prometheus.Registerer) *sources {
	malformed := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "source_frames_malformed_total",
		Help: "Frames received by the syslog listeners and Unix sockets that held no record (too long, bad octet count, truncated datagram)."})
	reg.MustRegister(malformed)
	return &sources{queue: q, store: st, disk: disk, home: home, log: log, malformed: malformed}
}

// badFrame counts a frame that held no record, and says so in the log at most once a minute.
func (s *sources) badFrame(source, remote string, err error) {
	s.malformed.Inc()
	now := time.Now().UnixMilli()
	if last := s.warned.Load(); now-last >= time.Minute.Milliseconds() && s.warned.CompareAndSwap(last, now) {
		s.log.Warn("malformed frames skipped (counted in ssanet_source_frames_malformed_total; this line at most once a minute)",
			"source", source, "remote", remote, "err", err)
	}
}

// start opens the configured listeners and starts every source; they stop with ctx (wait
// waits for them).
func (s *sources) start(ctx context.Context, cfg IngestConfig) error {
	s.mu.Lock()
	s.base = ctx
	s.mu.Unlock()
	_, err := s.reload(cfg)
	return err
}

// sourceSpec is one source of the ingest config: key names it (its kind and address or path),
// cfg is what a reload compares to tell a changed source, run starts it in sub.
type sourceSpec struct {
	key string
	cfg any
	run func(ctx context.Context, sub *sources) error
}

// sourceSpecs are the sources of cfg, in config order.
func sourceSpecs(cfg IngestConfig) []sourceSpec {
	var out []sourceSpec
	if a := cfg.SyslogUDP; a != "" {
		out = append(out, sourceSpec{key: "syslog-udp " + a, cfg: a, run: func(ctx context.Context, sub *sources) error {
			pc, err := net.ListenPacket("udp", a)
			if err != nil {
				return fmt.Errorf("syslog UDP listener: %w", err)
			}
			sub.goRun(func() { <-ctx.Done(); pc.Close() })
			sub.goRun(func() { sub.syslogUDP(ctx, pc) })
			return nil
		}})
	}
	if a := cfg.SyslogTCP; a != "" {
		out = append(out, sourceSpec{key: "syslog-tcp " + a, cfg: a, run: func(ctx context.Context, sub *sources) error {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return fmt.Errorf("syslog TCP listener: %w", err)
			}
			sub.goRun(func() { <-ctx.Done(); ln.Close() })
			sub.goRun(func() { sub.syslogTCP(ctx, ln, "syslog TCP") })
			return nil
		}})
	}
	if t := cfg.SyslogTLS; t != nil {
		c := *t
		// The files' contents count as config: a reload after a certificate was renewed in
		// place restarts the listener with the new one.
		var files []string
		for _, f := range []string{c.Cert, c.Key, c.ClientCA} {
			b, _ := os.ReadFile(f) // unreadable: tlsConfig says so when the listener starts
			files = append(files, string(b))
		}
		out = append(out, sourceSpec{key: "syslog-tls " + c.Address, cfg: []any{c, files}, run: func(ctx context.Context, sub *sources) error {
			tc, err := c.tlsConfig()
			if err != nil {
				return err
			}
			ln, err := tls.Listen("tcp", c.Address, tc)
			if err != nil {
				return fmt.Errorf("syslog TLS listener: %w", err)
			}
			sub.goRun(func() { <-ctx.Done(); ln.Close() })
			sub.goRun(func() { sub.syslogTCP(ctx, ln, "syslog TLS") })
			return nil
		}})
	}
	for _, u := range cfg.Unix {
		out = append(out, sourceSpec{key: "unix " + u.Path, cfg: u, run: func(ctx context.Context, sub *sources) error {
			return sub.startUnix(ctx, u)
		}})
	}
	for _, f := range cfg.Follow {
		out = append(out, sourceSpec{key: "follow " + f.Path, cfg: f, run: func(ctx context.Context, sub *sources) error {
			sub.goRun(func() { sub.follow(ctx, f) })
			return nil
		}})
	}
	return out
}

// ErrSourceReload means a source of a reloaded config could not be started (a listener's
// address is taken): the sources stay as they were, but for those the error names.
var ErrSourceReload = errors.New("agent: ingest source not started")

// reload makes the running sources those of cfg, and says what it changed: it starts the new
// sources first, and if one of them cannot start, stops those it started and changes nothing
// else; then it restarts those whose config changed (their listener or socket closed first)
// and stops those cfg no longer has. A stopped source hands what it read to refine-and-queue
// before it returns (a followed file's position is in the store), so a reload loses no record
// a source took.
func (s *sources) reload(cfg IngestConfig) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == nil {
		s.running = map[string]*runningSource{}
	}
	specs := sourceSpecs(cfg)
	want := map[string]bool{}
	var added []string
	for _, sp := range specs {
		want[sp.key] = true
		if s.running[sp.key] != nil {
			continue
		}
		if err := s.startSource(sp); err != nil {
			for _, k := range added {
				s.stopSource(k)
			}
			return nil, fmt.Errorf("%w: %w", ErrSourceReload, err)
		}
		added = append(added, sp.key)
	}
	changes := make([]string, 0, len(added))
	for _, k := range added {
		changes = append(changes, "ingest "+k+" added")
	}
	var errs []error
	for _, sp := range specs {
		old := s.running[sp.key]
		if slices.Contains(added, sp.key) || reflect.DeepEqual(old.spec.cfg, sp.cfg) {
			continue
		}
		s.stopSource(sp.key)
		if err := s.startSource(sp); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrSourceReload, err))
			if rerr := s.startSource(old.spec); rerr != nil {
				s.log.Error("ingest source stopped: neither its new nor its old config starts; fix config.yaml and reload", "source", sp.key, "err", rerr)
			}
			continue
		}
		changes = append(changes, "ingest "+sp.key+" changed")
	}
	for _, k := range slices.Sorted(maps.Keys(s.running)) {
		if !want[k] {
			s.stopSource(k)
			changes = append(changes, "ingest "+k+" removed")
		}
	}
	return changes, errors.Join(errs...)
}

// startSource starts sp under s.base (with s.mu held).
func (s *sources) startSource(sp sourceSpec) error {
	ctx, cancel := context.WithCancel(s.base)
	sub := &sources{queue: s.queue, store: s.store, disk: s.disk, home: s.home, log: s.log, malformed: s.malformed}
	if err := sp.run(ctx, sub); err != nil {
		cancel()
		sub.wait()
		return err
	}
	s.running[sp.key] = &runningSource{spec: sp, sub: sub, cancel: cancel}
	return nil
}

// stopSource stops the source of key and waits for it (with s.mu held).
func (s *sources) stopSource(key string) {
	r := s.running[key]
	r.cancel()
	r.sub.wait()
	delete(s.running, key)
}

// tlsConfig loads the listener's certificate and the client CA.
func (c *SyslogTLSConfig) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("syslog TLS listener: load ingest.syslog-tls cert %s and key %s: %w", c.Cert, c.Key, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("syslog TLS listener: read ingest.syslog-tls client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("syslog TLS listener: ingest.syslog-tls client-ca %s holds no PEM certificate", c.ClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// wait waits for every source to stop.
func (s *sources) wait() {
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.running {
		r.sub.wait()
	}
}

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
			// the records the sources handed over but not yet taken are queued too: else up
			// to a chunk of them is lost at shutdown without a count.
			for {
				select {
				case r := <-c.recs:
					if chunk = append(chunk, r); len(chunk) == ingestChunk {
						chunk = c.flush(chunk)
					}
				default:
					c.flush(chunk)
					return
				}
			}
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
	if err != nil {
		c.queue.notTaken(c.format, len(chunk), err)
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

// syslogTCP accepts syslog over TCP (or TLS) connections on ln.
func (s *sources) syslogTCP(ctx context.Context, ln net.Listener, source string) {
	c := s.newCollector(ctx, protocol.FormatSyslog)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error(source, "err", err)
			}
			return
		}
		s.goRun(func() { c.readFrames(ctx, conn, source) })
	}
}

// maxFrame is the longest frame a listener or socket takes: a longer one is counted malformed.
const maxFrame = policy.MaxRecordSize

// maxCountDigits bounds the octet count of RFC 6587 §3.4.1 (maxFrame has 7 digits).
const maxCountDigits = 9

// errFrame is a frame that holds no record.
var errFrame = errors.New("agent: malformed frame")

// readFrames hands each syslog message of conn to the collector until conn or ctx ends. The
// framing is told from the connection's first byte (RFC 6587 §3.4): a digit starts an octet
// count (§3.4.1, "LEN SP MSG"), anything else starts newline-delimited messages (§3.4.2). A
// message over maxFrame is counted malformed and skipped (an octet-counted one by its count,
// a line up to its newline); an octet count that is not one closes the connection, which
// cannot be resynchronised.
func (c *collector) readFrames(ctx context.Context, conn net.Conn, source string) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c.readStream(ctx, conn, source, true)
}

// readStream reads records from a stream until it ends: octet-counted frames if counted is
// allowed and the first byte is a digit, else lines.
func (c *collector) readStream(ctx context.Context, conn net.Conn, source string, counted bool) {
	remote := conn.RemoteAddr().String()
	br := bufio.NewReaderSize(conn, 64<<10)
	next := c.nextLine
	if first, err := br.Peek(1); err == nil && counted && first[0] >= '0' && first[0] <= '9' {
		next = c.nextCounted
	}
	for {
		rec, err := next(br)
		switch {
		case errors.Is(err, errFrame):
			c.badFrame(source, remote, err)
			continue
		case errors.Is(err, errFrameFatal):
			c.badFrame(source, remote, err)
			return
		case err != nil:
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				c.log.Debug(source+" connection", "remote", remote, "err", err)
			}
			return
		case len(rec) == 0:
			continue
		}
		select {
		case c.recs <- rec:
		case <-ctx.Done():
			return
		}
	}
}

// errFrameFatal is a frame after which the stream cannot be read on.
var errFrameFatal = errors.New("agent: malformed octet count; connection closed")

// nextLine reads one line (its newline and a \r before it cut off), at most maxFrame long: a
// longer one is read up to its newline and returned as errFrame.
func (c *collector) nextLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	over := false
	for {
		part, err := br.ReadSlice('\n')
		if !over {
			if len(line)+len(part) > maxFrame+1 { // +1: the newline
				over, line = true, nil
			} else {
				line = append(line, part...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil && (over || len(line) > 0) && errors.Is(err, io.EOF):
			// the last line, without its newline
		case err != nil:
			return nil, err
		}
		if over {
			return nil, fmt.Errorf("%w: a line over %d bytes", errFrame, maxFrame)
		}
		return bytes.TrimRight(line, "\r\n"), nil
	}
}

// nextCounted reads one octet-counted frame, "LEN SP MSG" (RFC 6587 §3.4.1); newlines
// between frames, which some senders add, are skipped.
func (c *collector) nextCounted(br *bufio.Reader) ([]byte, error) {
	var n int
	digits := 0
count:
	for {
		b, err := br.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch {
		case digits == 0 && (b == '\n' || b == '\r'):
			continue
		case b >= '0' && b <= '9' && digits < maxCountDigits:
			n, digits = n*10+int(b-'0'), digits+1
			continue
		case b == ' ' && digits > 0:
			break count
		default:
			return nil, fmt.Errorf("%w (byte %q after %d digits)", errFrameFatal, b, digits)
		}
	}
	if n > maxFrame {
		if _, err := br.Discard(n); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: an octet count of %d, over %d", errFrame, n, maxFrame)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(br, msg); err != nil {
		return nil, err
	}
	return bytes.TrimRight(msg, "\r\n"), nil
}
