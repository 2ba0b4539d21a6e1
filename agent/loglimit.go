package agent

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults of the daemon's LogLimiter: of a warning that repeats, the first LogBurst lines
// each LogEvery, then one summary.
const (
	LogBurst = 5
	LogEvery = time.Minute
)

// logLimitKeys bounds the repeating warnings remembered at once; past it, new ones share one
// entry per level and message.
const logLimitKeys = 4096

// logKeyAttrs are the attributes that tell a warning from another with the same message: a
// sink that fails is not silenced by another one failing. Values of peer and ssa are not
// bounded by the configuration, but the number of entries is (logLimitKeys).
var logKeyAttrs = []string{"sink", "source", "path", "proto", "ssa", "peer", "addr"}

// LogLimiter is a slog.Handler that passes records on to another, except warnings and errors
// that repeat: of those with the same level, message and key attributes (logKeyAttrs, also
// those given by Logger.With), it passes the first burst in each interval and counts the
// rest; when the interval ends, it writes the last one counted with log_suppressed (how many
// were left out, that one included) and log_interval. Records below Warn all pass. A
// goroutine writes the summaries of warnings that stopped repeating; Close stops it and
// writes what is left. It is safe for concurrent use.
type LogLimiter struct {
	next slog.Handler
	st   *limitState
	// key holds the key attributes given by WithAttrs; grouped is set after WithGroup,
	// whose attributes are the group's and not keys.
	key     string
	grouped bool
}

type limitState struct {
	burst int
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*limitEntry
	// closed is set by Close: no one would write a summary after it, so everything passes.
	closed bool

	// sweeping is set when the sweeper goroutine runs; stop stops it, and it closes done.
	sweeping bool
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// limitEntry is one repeating warning's current interval.
type limitEntry struct {
	start      time.Time
	n          int // records of the interval
	suppressed int
	last       slog.Record  // the last record suppressed
	h          slog.Handler // the handler it came through
}

// NewLogLimiter wraps next; burst and every at or below 0 take LogBurst and LogEvery.
func NewLogLimiter(next slog.Handler, burst int, every time.Duration) *LogLimiter {
	l := newLogLimiter(next, burst, every, time.Now)
	l.st.sweeping = true
	go l.st.sweeper()
	return l
}

// newLogLimiter is NewLogLimiter with a clock and without the goroutine (tests call sweep).
func newLogLimiter(next slog.Handler, burst int, every time.Duration, now func() time.Time) *LogLimiter {
	if burst <= 0 {
		burst = LogBurst
	}
	if every <= 0 {
		every = LogEvery
	}
	return &LogLimiter{next: next, st: &limitState{burst: burst, every: every, now: now, seen: map[string]*limitEntry{},
		stop: make(chan struct{}), done: make(chan struct{})}}
}

// Close stops the goroutine and writes the summaries of the warnings left out so far. It is
// idempotent; records handled after it all pass (no one would write their summary).
func (l *LogLimiter) Close() {
	l.st.once.Do(func() {
		l.st.mu.Lock()
		l.st.closed = true
		l.st.mu.Unlock()
		close(l.st.stop)
		if l.st.sweeping {
			<-l.st.done
		}
		l.st.sweep(time.Time{}, true)
	})
}

func (l *LogLimiter) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Enabled(ctx, level)
}

func (l *LogLimiter) WithAttrs(attrs []slog.Attr) slog.Handler {
	key := l.key
	if !l.grouped {
		key += keyAttrs(attrs)
	}
	return &LogLimiter{next: l.next.WithAttrs(attrs), st: l.st, key: key, grouped: l.grouped}
}

func (l *LogLimiter) WithGroup(name string) slog.Handler {
	if name == "" {
		return l
	}
	return &LogLimiter{next: l.next.WithGroup(name), st: l.st, key: l.key, grouped: true}
}

func (l *LogLimiter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return l.next.Handle(ctx, r)
	}
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	b.WriteByte(0)
	b.WriteString(l.key)
	if !l.grouped {
		r.Attrs(func(a slog.Attr) bool {
			if slices.Contains(logKeyAttrs, a.Key) {
				writeKeyAttr(&b, a)
			}
			return true
		})
	}
	pass, summary, sh := l.st.count(b.String(), r, l.next)
	if summary != nil {
		if err := sh.Handle(ctx, *summary); err != nil {
			return err
		}
	}
	if !pass {
		return nil
	}
	return l.next.Handle(ctx, r)
}

func keyAttrs(attrs []slog.Attr) string {
	var b strings.Builder
	for _, a := range attrs {
		if slices.Contains(logKeyAttrs, a.Key) {
			writeKeyAttr(&b, a)
		}
	}
	return b.String()
}

func writeKeyAttr(b *strings.Builder, a slog.Attr) {
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(a.Value.String())
	b.WriteByte(0)
}

// count records r under key and says whether it passes; when r ends an interval in which
// records were left out, it also returns their summary and the handler to write it with.
func (st *limitState) count(key string, r slog.Record, h slog.Handler) (pass bool, summary *slog.Record, sh slog.Handler) {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return true, nil, nil
	}
	e, ok := st.seen[key]
	if !ok {
		if len(st.seen) >= logLimitKeys {
			key = r.Level.String() + "\x00" + r.Message + "\x00(more keys than remembered)"
			e = st.seen[key]
		}
		if e == nil {
			e = &limitEntry{}
			st.seen[key] = e
		}
	}
	if e.n > 0 && now.Sub(e.start) >= st.every {
		summary, sh = e.summary(st.every)
		e.n = 0
	}
	if e.n == 0 {
		e.start = now
	}
	e.n++
	if e.n <= st.burst {
		return true, summary, sh
	}
	e.suppressed++
	e.last, e.h = r.Clone(), h
	return false, summary, sh
}

// summary returns the summary of e's interval (nil if nothing was left out) and resets its
// count.
func (e *limitEntry) summary(every time.Duration) (*slog.Record, slog.Handler) {
	if e.suppressed == 0 {
		return nil, nil
	}
	r := e.last.Clone()
	r.AddAttrs(slog.Int("log_suppressed", e.suppressed), slog.Duration("log_interval", every))
	h := e.h
	e.suppressed, e.last, e.h = 0, slog.Record{}, nil
	return &r, h
}

// sweep writes the summaries of the intervals ended at now (all, with force) and forgets the
// warnings whose interval ended.
func (st *limitState) sweep(now time.Time, force bool) {
	type out struct {
		key string
		r   *slog.Record
		h   slog.Handler
	}
	var outs []out
	st.mu.Lock()
	for key, e := range st.seen {
		if force || now.Sub(e.start) >= st.every {
			if r, h := e.summary(st.every); r != nil {
				outs = append(outs, out{key, r, h})
			}
			delete(st.seen, key)
		}
	}
	st.mu.Unlock()
	slices.SortFunc(outs, func(a, b out) int {
		if c := a.r.Time.Compare(b.r.Time); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	for _, o := range outs {
		_ = o.h.Handle(context.Background(), *o.r) // a log that cannot be written has no one to tell
	}
}

// sweeper sweeps every interval until Close.
func (st *limitState) sweeper() {
	defer close(st.done)
	t := time.NewTicker(st.every)
	defer t.Stop()
	for {
		select {
		case <-st.stop:
			return
		case <-t.C:
			st.sweep(st.now(), false)
		}
	}
}
