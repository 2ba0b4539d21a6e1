package agent

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// refusalLogEvery is how often one peer's refusals for one reason are logged at most.
const refusalLogEvery = time.Minute

// refusalLogKeys bounds the peers and reasons remembered; past it, old entries are dropped
// first, then refusals of new keys share one entry per reason (many identities at once).
const refusalLogKeys = 4096

// refusalLog logs refused messages and batches at most once per peer and reason per
// refusalLogEvery, so that a peer sending garbage cannot flood the log (3,511 lines in 1.6 s
// were seen); the next line of a key says how many were left out since its last one.
type refusalLog struct {
	log   *slog.Logger
	now   func() time.Time
	mu    sync.Mutex
	seen  map[refusalKey]*refusalEntry
	every time.Duration
	// counts counts every refused message and batch, logged or not, by protocol and reason.
	counts *prometheus.CounterVec
}

type refusalKey struct {
	peer   peer.ID
	reason string
}

type refusalEntry struct {
	last    time.Time
	skipped int
}

func newRefusalLog(log *slog.Logger, now func() time.Time, counts *prometheus.CounterVec) *refusalLog {
	return &refusalLog{log: log, now: now, seen: map[refusalKey]*refusalEntry{}, every: refusalLogEvery, counts: counts}
}

// refused counts a message or batch of p refused on proto ("negotiate" or "exchange") for
// err, then logs it as warn does.
func (l *refusalLog) refused(proto string, p peer.ID, msg string, err error, args ...any) {
	l.counts.WithLabelValues(proto, refusalReason(err)).Inc()
	l.warn(p, msg, err, args...)
}

// warn logs msg for a refusal of p's message for err, unless the same peer and reason were
// logged less than every ago.
func (l *refusalLog) warn(p peer.ID, msg string, err error, args ...any) {
	now := l.now()
	key := refusalKey{p, reason(err)}
	l.mu.Lock()
	e := l.entry(key, now)
	if !e.last.IsZero() && now.Sub(e.last) < l.every {
		e.skipped++
		l.mu.Unlock()
		return
	}
	skipped := e.skipped
	e.last, e.skipped = now, 0
	l.mu.Unlock()
	args = append(args, "peer", p, "err", err)
	if skipped > 0 {
		args = append(args, "refusals_not_logged", skipped)
	}
	l.log.Warn(msg, args...)
}

// entry finds or makes key's entry; the caller holds l.mu.
func (l *refusalLog) entry(key refusalKey, now time.Time) *refusalEntry {
	if e, ok := l.seen[key]; ok {
		return e
	}
	if len(l.seen) >= refusalLogKeys {
		for k, e := range l.seen {
			if now.Sub(e.last) >= l.every && e.skipped == 0 {
				delete(l.seen, k)
			}
		}
	}
	if len(l.seen) >= refusalLogKeys {
		key.peer = "" // too many peers at once: one entry per reason for the rest
		if e, ok := l.seen[key]; ok {
			return e
		}
	}
	e := &refusalEntry{}
	l.seen[key] = e
	return e
}

// reason is what an error says at its root: the sentinel or first cause it wraps, without the
// details (IDs, sizes) that differ from one message to the next.
func reason(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
