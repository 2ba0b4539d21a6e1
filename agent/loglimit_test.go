package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingHandler keeps the records it is given, as "LEVEL msg k=v ..." lines, attributes of
// WithAttrs first.
type recordingHandler struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func newRecordingHandler() *recordingHandler {
	return &recordingHandler{mu: &sync.Mutex{}, lines: &[]string{}}
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message + h.attrs
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.lines = append(*h.lines, line)
	return nil
}

func (h *recordingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, a := range attrs {
		c.attrs += " " + a.String()
	}
	return &c
}

func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

func (h *recordingHandler) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := *h.lines
	*h.lines = nil
	return out
}

// TestLogLimiter drives a limiter of 2 lines per minute with a fake clock: each step logs, or
// moves the clock and sweeps, and shows the lines written.
func TestLogLimiter(t *testing.T) {
	type step struct {
		log   func(l *slog.Logger) // nil: advance and sweep
		after time.Duration        // the clock moves by this first
		want  []string
	}
	warn := func(msg string, args ...any) func(*slog.Logger) { return func(l *slog.Logger) { l.Warn(msg, args...) } }
	times := func(n int, f func(*slog.Logger)) func(*slog.Logger) {
		return func(l *slog.Logger) {
			for range n {
				f(l)
			}
		}
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"a burst passes, the rest is summarised once the interval ends", []step{
			{log: times(5, warn("sink write failed", "sink", "a", "n", 1)), want: []string{
				"WARN sink write failed sink=a n=1", "WARN sink write failed sink=a n=1"}},
			{after: 30 * time.Second, want: nil},
			{after: 30 * time.Second, want: []string{"WARN sink write failed sink=a n=1 log_suppressed=3 log_interval=1m0s"}},
			{log: warn("sink write failed", "sink", "a", "n", 2), want: []string{"WARN sink write failed sink=a n=2"}},
		}},
		{"the next record after the interval brings the summary", []step{
			{log: times(3, warn("x")), want: []string{"WARN x", "WARN x"}},
			{log: warn("x", "n", 3), after: time.Minute, want: []string{"WARN x log_suppressed=1 log_interval=1m0s", "WARN x n=3"}},
		}},
		{"info and debug are never limited", []step{
			{log: times(4, func(l *slog.Logger) { l.Info("listening") }), want: slices.Repeat([]string{"INFO listening"}, 4)},
		}},
		{"key attributes part warnings, others do not", []step{
			{log: func(l *slog.Logger) {
				for i := range 3 {
					l.Warn("sink write failed", "sink", "a", "err", fmt.Sprint("e", i))
					l.Warn("sink write failed", "sink", "b", "err", fmt.Sprint("e", i))
				}
			}, want: []string{"WARN sink write failed sink=a err=e0", "WARN sink write failed sink=b err=e0",
				"WARN sink write failed sink=a err=e1", "WARN sink write failed sink=b err=e1"}},
			{after: time.Minute, want: []string{"WARN sink write failed sink=a err=e2 log_suppressed=1 log_interval=1m0s",
				"WARN sink write failed sink=b err=e2 log_suppressed=1 log_interval=1m0s"}},
		}},
		{"key attributes of With part warnings", []step{
			{log: func(l *slog.Logger) {
				a, b := l.With("sink", "a"), l.With("sink", "b")
				for range 3 {
					a.Warn("failing")
					b.Warn("failing")
				}
			}, want: []string{"WARN failing sink=a", "WARN failing sink=b", "WARN failing sink=a", "WARN failing sink=b"}},
			{after: time.Minute, want: []string{"WARN failing sink=a log_suppressed=1 log_interval=1m0s", "WARN failing sink=b log_suppressed=1 log_interval=1m0s"}},
		}},
		{"errors and warnings are apart", []step{
			{log: func(l *slog.Logger) {
				for range 3 {
					l.Warn("m")
					l.Error("m")
				}
			}, want: []string{"WARN m", "ERROR m", "WARN m", "ERROR m"}},
		}},
		{"more keys than remembered share one entry per message", []step{
			{log: func(l *slog.Logger) {
				for i := range logLimitKeys + 3 {
					l.Warn("refused", "peer", i)
				}
			}, want: nil}, // checked below by count
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			rec := newRecordingHandler()
			lim := newLogLimiter(rec, 2, time.Minute, func() time.Time { return now })
			log := slog.New(lim)
			for i, s := range tc.steps {
				now = now.Add(s.after)
				if s.log != nil {
					s.log(log)
				} else {
					lim.st.sweep(now, false)
				}
				got := rec.take()
				if strings.HasPrefix(tc.name, "more keys") {
					// Every peer's first two pass until the map is full; the 3 beyond share
					// one entry, of which 2 pass.
					if len(got) != logLimitKeys+2 {
						t.Fatalf("%d lines for %d peers, want %d", len(got), logLimitKeys+3, logLimitKeys+2)
					}
					lim.Close()
					if got := rec.take(); len(got) != 1 || !strings.HasSuffix(got[0], "log_suppressed=1 log_interval=1m0s") {
						t.Fatalf("summary at Close: %q", got)
					}
					continue
				}
				if !slices.Equal(got, s.want) {
					t.Fatalf("step %d: wrote\n%q\nwant\n%q", i, got, s.want)
				}
			}
		})
	}
}

// TestLogLimiterClose: Close stops the sweeper and writes what was left out; after it, no one
// would write a summary, so every record passes.
func TestLogLimiterClose(t *testing.T) {
	rec := newRecordingHandler()
	lim := NewLogLimiter(rec, 1, time.Hour)
	log := slog.New(lim)
	for range 4 {
		log.Warn("disk low", "path", "/var/lib/ssanet")
	}
	lim.Close()
	lim.Close()
	want := []string{"WARN disk low path=/var/lib/ssanet", "WARN disk low path=/var/lib/ssanet log_suppressed=3 log_interval=1h0m0s"}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("wrote %q, want %q", got, want)
	}
	for range 3 {
		log.Warn("disk low", "path", "/var/lib/ssanet")
	}
	if got := rec.take(); len(got) != 3 {
		t.Fatalf("after Close wrote %q, want all 3", got)
	}
}
