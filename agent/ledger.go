package agent

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The ledger of outcomes (issue 13 item 2): every raw record that enters a provider ends, for
// each SSA in force that shares its format, in exactly one counted outcome, and every record
// a requester receives is counted as stored or quarantined, then as expired by retention.
// The counts go to Prometheus (ssanet_provider_records_total, ssanet_requester_records_total),
// to the provider's signed fulfilment report (protocol.Report.Outcomes) and to the log, at
// most one line per outcome kind per ledgerLogEvery.

// outcome is what became of a raw record at the provider, for one SSA.
type outcome int

// Provider outcomes. Their sum, per SSA, is the raw records its enforcement point was handed.
const (
	outShared      outcome = iota // refined and queued for delivery
	outNotQueued                  // refined, not queued: the requester's queue was full
	outFiltered                   // excluded by a filter
	outFilterError                // excluded because a filter could not be evaluated on it
	outSummarised                 // counted in a summary
	outUntimed                    // under a summarisation, without @timestamp: no window takes it
	outMalformed                  // could not be cut out of the input or parsed
	outOutside                    // reached the provider outside the SSA's schedule
	numOutcomes
)

// outcomeNames are the outcomes as the metric labels, the report and the log name them.
var outcomeNames = [numOutcomes]string{"shared", "not_queued", "filtered", "filter_error", "summarised", "untimed",
	"malformed", "outside_schedule"}

func (o outcome) String() string { return outcomeNames[o] }

// Outcomes of records that reach no SSA's enforcement point, counted under the SSA label ""
// (one series each, whatever the format): the format is shared by no SSA in force; a syslog
// listener's or a socket's records dropped because a full disk pauses records; or their
// chunk could not be refined or queued (the error is logged).
const (
	outcomeNoSSA      = "no_ssa"
	outcomeDiskFull   = "disk_full"
	outcomeQueueError = "queue_error"
)

// Requester outcomes.
const (
	outStored      = "stored"      // stored, complying with the SSP
	outQuarantined = "quarantined" // stored quarantined, or refused and kept as evidence (finding says why)
	outExpired     = "expired"     // deleted because the SSA's retention ran out
)

// outcomeCounts are the outcomes of one chunk, or of an SSA's life, for one SSA.
type outcomeCounts [numOutcomes]uint64

// providerLedger is what a provider run counted since it was put in force.
type providerLedger struct {
	ingested atomic.Uint64 // raw records handed to the run's enforcement point
	n        [numOutcomes]atomic.Uint64
	since    time.Time // when the run started counting
	// filteredBy splits n[outFiltered] by filter: its index in the SSA's policy.filtering
	// list (at most policy.MaxFilters).
	mu         sync.Mutex
	filteredBy []uint64
}

// addFiltered counts records left out, by the filter that excluded them.
func (l *providerLedger) addFiltered(by []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, v := range by {
		if v <= 0 {
			continue
		}
		for len(l.filteredBy) <= i {
			l.filteredBy = append(l.filteredBy, 0)
		}
		l.filteredBy[i] += uint64(v)
	}
}

// filtered returns the records left out so far by each filter, by its index (nil if none).
func (l *providerLedger) filtered() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.filteredBy)
}

// snapshot returns the ledger's counts by outcome name (outcomes never seen left out) and the
// records ingested.
func (l *providerLedger) snapshot() (map[string]uint64, uint64) {
	m := map[string]uint64{}
	for o := range numOutcomes {
		if v := l.n[o].Load(); v > 0 {
			m[o.String()] = v
		}
	}
	return m, l.ingested.Load()
}

// ledger counts outcomes into the metrics and the rate-limited log. A nil ledger counts
// nothing (parts built alone in tests).
//
// Cardinality: the provider vec has one series per (SSA provided in force, outcome) plus the
// no_ssa, disk_full and queue_error series; the filtered vec one per (SSA provided in force,
// filter that left a record out), at most policy.MaxFilters (16) per SSA; the SSAs in force are bounded by max-agreements-per-peer per requester
// (admission), and an SSA's series are deleted when it stops being in force (forget). The
// requester vec has one series per (SSA requested, outcome, finding code): the finding codes
// are the fixed policy.FindingCode set.
type ledger struct {
	provider, requester *prometheus.CounterVec
	filtered            *prometheus.CounterVec // the provider's filtered outcome, by filter
	log                 *ledgerLog
}

func newLedger(reg prometheus.Registerer, log *slog.Logger, now func() time.Time) *ledger {
	l := &ledger{
		provider: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "provider_records_total",
			Help: "Raw records handed to the provider, by SSA that shares their format and outcome (shared, not_queued, filtered, filter_error, summarised, untimed, malformed, outside_schedule; no_ssa, disk_full, queue_error with ssa=\"\")."},
			[]string{"ssa", "outcome"}),
		requester: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "requester_records_total",
			Help: "Records received by the requester, by SSA and outcome (stored, quarantined with the finding, expired by retention)."},
			[]string{"ssa", "outcome", "finding"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "provider_filtered_total",
			Help: "Raw records the provider's filters left out (outcome filtered), by SSA and filter: its index in the SSA's policy.filtering list, the first filter that excluded the record."},
			[]string{"ssa", "filter"}),
		log: newLedgerLog(log, now),
	}
	reg.MustRegister(l.provider, l.requester, l.filtered)
	return l
}

// provided counts, for run, raws records handed to its enforcement point and what became
// of them, the filtered ones split by filter in filteredBy (by index in the SSA's
// policy.filtering list); malformedAt says where a malformed one was in the input ("" if
// unknown).
func (l *ledger) provided(run *agreementRun, raws uint64, c *outcomeCounts, filteredBy []int64, malformedAt string) {
	run.ledger.ingested.Add(raws)
	run.ledger.addFiltered(filteredBy)
	if l != nil {
		for i, v := range filteredBy {
			if v > 0 {
				l.filtered.WithLabelValues(run.ssa.ID, strconv.Itoa(i)).Add(float64(v))
			}
		}
	}
	for o, v := range c {
		if v == 0 {
			continue
		}
		run.ledger.n[o].Add(v)
		if l != nil {
			l.provider.WithLabelValues(run.ssa.ID, outcome(o).String()).Add(float64(v))
			at := ""
			if outcome(o) == outMalformed {
				at = malformedAt
			}
			l.log.add("provider", outcome(o).String(), run.ssa.ID, v, at)
		}
	}
}

// noSSA counts n records of format that no SSA in force shares.
func (l *ledger) noSSA(format string, n uint64) { l.unshared(format, outcomeNoSSA, n) }

// unshared counts n records of format that reached no SSA's enforcement point, with the
// outcome that says why.
func (l *ledger) unshared(format, outcome string, n uint64) {
	if l == nil || n == 0 {
		return
	}
	l.provider.WithLabelValues("", outcome).Add(float64(n))
	l.log.add("provider", outcome, "format "+format, n, "")
}

// received counts n records of an SSA requested with an outcome (finding: the code of the
// finding that quarantined them, else "").
func (l *ledger) received(ssaID, outcome, finding string, n uint64) {
	if l == nil || n == 0 {
		return
	}
	l.requester.WithLabelValues(ssaID, outcome, finding).Add(float64(n))
	what := outcome
	if finding != "" {
		what += " (" + finding + ")"
	}
	l.log.add("requester", what, ssaID, n, "")
}

// forgetProvided deletes the provider series of an SSA no longer in force.
func (l *ledger) forgetProvided(ssaID string) {
	if l != nil {
		l.provider.DeletePartialMatch(prometheus.Labels{"ssa": ssaID})
		l.filtered.DeletePartialMatch(prometheus.Labels{"ssa": ssaID})
	}
}

// ledgerLogEvery is how often one outcome kind is logged at most.
const ledgerLogEvery = time.Minute

// ledgerLogSSAs bounds the SSAs one line names; the others are summed under "others".
const ledgerLogSSAs = 16

// ledgerLog logs the ledger's outcomes as summaries: at most one line per side and outcome
// kind per ledgerLogEvery, with the records counted since that kind's last line, per SSA. A
// count added within the interval waits for the next add of its kind (the metrics have it
// at once).
type ledgerLog struct {
	log   *slog.Logger
	now   func() time.Time
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*ledgerPending // by side and outcome: a fixed, small set
}

type ledgerPending struct {
	last  time.Time
	total uint64
	bySSA map[string]uint64
	at    string // where the last record counted was, if known (malformed records)
}

func newLedgerLog(log *slog.Logger, now func() time.Time) *ledgerLog {
	return &ledgerLog{log: log, now: now, every: ledgerLogEvery, kinds: map[string]*ledgerPending{}}
}

// add counts n records of side's outcome for ssa (the last of them at at in its input, if
// known), and logs the kind's summary if its last line is at least every old.
func (l *ledgerLog) add(side, outcome, ssa string, n uint64, at string) {
	now := l.now()
	key := side + "/" + outcome
	l.mu.Lock()
	p := l.kinds[key]
	if p == nil {
		p = &ledgerPending{bySSA: map[string]uint64{}}
		l.kinds[key] = p
	}
	p.total += n
	if at != "" {
		p.at = at
	}
	if _, ok := p.bySSA[ssa]; ok || len(p.bySSA) < ledgerLogSSAs {
		p.bySSA[ssa] += n
	} else {
		p.bySSA["others"] += n
	}
	if !p.last.IsZero() && now.Sub(p.last) < l.every {
		l.mu.Unlock()
		return
	}
	total, by, since, where := p.total, p.bySSA, p.last, p.at
	p.last, p.total, p.bySSA, p.at = now, 0, map[string]uint64{}, ""
	l.mu.Unlock()
	args := []any{"side", side, "outcome", outcome, "records", total}
	if where != "" {
		args = append(args, "last_at", where)
	}
	if !since.IsZero() {
		args = append(args, "since", since.UTC().Format(time.RFC3339))
	}
	for _, id := range slices.Sorted(maps.Keys(by)) {
		args = append(args, slog.Uint64("ssa:"+id, by[id]))
	}
	level := slog.LevelInfo
	switch outcome {
	case outcomeNoSSA, outcomeDiskFull, outcomeQueueError, outNotQueued.String(), outMalformed.String(), outFilterError.String(), outUntimed.String():
		level = slog.LevelWarn
	}
	if side == "requester" && outcome != outStored && outcome != outExpired {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "records counted (ledger of outcomes; this line at most once a minute per outcome)", args...)
}
