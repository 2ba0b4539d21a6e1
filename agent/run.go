package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// latencySamples is how many delivery latencies a run keeps for its fulfilment report.
const latencySamples = 1024

// agreementRun is an SSA in force and the running parts that implement it. The management
// point (manager) makes and ends runs; the enforcement points use them: refine-and-queue
// (refiner) and delivery (deliverer) on the provider, receive-and-verify (receiver) and the
// sinks on the requester.
type agreementRun struct {
	ssa  *protocol.SSA
	role protocol.Role
	peer peer.ID
	ssp  *policy.SSP
	// cancelled is when this agent committed a cancellation of the SSA, sent or received
	// (zero if none; guarded by the manager's mu). From then on the requester refuses the
	// SSA's batches and quarantines them as evidence (see receiver.checkBatch).
	cancelled time.Time
	// refineID is the SSP's RefinementID: runs that share it share each refinement.
	refineID string

	// Provider side.
	// backlog counts the records queued and not yet acknowledged (see Config.MaxQueuedPerPeer).
	backlog atomic.Int64
	// full is set while ingest leaves records out for want of room (logged when it changes).
	full atomic.Bool
	// outside is set while records reach the provider outside the schedule (logged when it
	// changes).
	outside     atomic.Bool
	mu          sync.Mutex // guards enforcers, enqueued and lat
	enforcers   map[string]*policy.Enforcer
	enqueued    []enqueueMark // when each range of sequence numbers was queued
	lat         []time.Duration
	kick        chan struct{}
	sentOutside atomic.Uint64
	// ledger counts what became of the raw records handed to the run (ledger.go).
	ledger providerLedger

	// The delivery loop runs only while it has something to do: deliverer.wake starts it, and
	// it ends when the queue is empty and nothing kicks it, so an idle SSA in force costs no
	// goroutine. loopMu guards the fields below.
	loopMu sync.Mutex
	// ctx ends when the SSA stops being in force (cancel, called by halt): no loop starts
	// after that.
	ctx    context.Context
	cancel context.CancelFunc
	// looping is closed when the running loop ends; nil while none runs.
	looping chan struct{}
	// delivery is what the loop knows between its runs (nil until the first); one loop runs
	// at a time, and only it uses delivery.
	delivery *delivery
}

type enqueueMark struct {
	last uint64
	at   time.Time
}

func newRun(s *protocol.SSA, role protocol.Role, ssp *policy.SSP) (*agreementRun, error) {
	other := s.Participants.Provider
	if role == protocol.RoleProvider {
		other = s.Participants.Requester
	}
	p, err := peerOf(other)
	if err != nil {
		return nil, err
	}
	return &agreementRun{ssa: s, role: role, peer: p, ssp: ssp, refineID: ssp.RefinementID(),
		enforcers: map[string]*policy.Enforcer{}, kick: make(chan struct{}, 1), ledger: providerLedger{since: time.Now()}}, nil
}

func peerOf(p protocol.Participant) (peer.ID, error) {
	id, err := peer.Decode(p.PeerID)
	if err != nil {
		return "", fmt.Errorf("participant %q has no valid peer ID: %w", p.Name, err)
	}
	return id, nil
}

// park ends the delivery loop unless it was kicked meanwhile; it reports whether it did.
func (run *agreementRun) park() bool {
	run.loopMu.Lock()
	defer run.loopMu.Unlock()
	select {
	case <-run.kick:
		return false
	default:
		run.looping = nil
		return true
	}
}

// halt stops the delivery loop for good and returns what to wait on for its end (nil if
// none runs).
func (run *agreementRun) halt() <-chan struct{} {
	run.loopMu.Lock()
	defer run.loopMu.Unlock()
	if run.cancel != nil {
		run.cancel()
	}
	return run.looping
}

// inSchedule reports whether t is inside the SSA's schedule.
func (run *agreementRun) inSchedule(t time.Time) bool {
	return run.ssa.Schedule.Contains(protocol.FromTime(t))
}

// acknowledged records delivery latencies of the ranges now acknowledged.
func (run *agreementRun) acknowledged(last uint64, now time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	i := 0
	for ; i < len(run.enqueued) && run.enqueued[i].last <= last; i++ {
		run.lat = append(run.lat, now.Sub(run.enqueued[i].at))
	}
	run.enqueued = run.enqueued[i:]
	if n := len(run.lat); n > latencySamples {
		run.lat = run.lat[n-latencySamples:]
	}
}

// latencies returns the p50, p95 and p99 delivery latencies in milliseconds.
func (run *agreementRun) latencies() (p50, p95, p99 uint64) {
	run.mu.Lock()
	l := slices.Clone(run.lat)
	run.mu.Unlock()
	if len(l) == 0 {
		return 0, 0, 0
	}
	slices.Sort(l)
	at := func(q float64) uint64 { return uint64(l[int(q*float64(len(l)-1))].Milliseconds()) }
	return at(0.50), at(0.95), at(0.99)
}

// refineCounts are what an enforcement point did with the raw records of a chunk, besides
// refining them.
type refineCounts struct {
	malformed  int64 // could not be parsed
	outside    int64 // reached the provider outside the SSA's schedule: not shared
	filtered   int64 // excluded by a filter, or a filter could not be evaluated on them
	summarised int64 // counted in a summary
	// Of filtered, those a filter could not be evaluated on; records without @timestamp under
	// a summarisation (no window takes them); raw records refined into a record of their own.
	filterErrors, untimed, refined int64
	badIndex                       int // 1 + the index of the first malformed record (0: none)
	// filteredBy splits filtered - filterErrors by the filter that excluded the records, by
	// its index in the SSA's policy.filtering list (nil if the SSA has no filter).
	filteredBy []int64
}

// outcomes are the counts as the ledger's outcomes, the refined records split by room: of
// out refined records (summaries included), room were queued.
func (n refineCounts) outcomes(out, room int) outcomeCounts {
	var c outcomeCounts
	notQueued := min(n.refined, int64(out-room)) // summaries left out are not raw records
	c[outShared] = uint64(n.refined - notQueued)
	c[outNotQueued] = uint64(notQueued)
	c[outFiltered] = uint64(n.filtered - n.filterErrors)
	c[outFilterError] = uint64(n.filterErrors)
	c[outSummarised] = uint64(n.summarised)
	c[outUntimed] = uint64(n.untimed)
	c[outMalformed] = uint64(n.malformed)
	c[outOutside] = uint64(n.outside)
	return c
}

// refine runs the SSP enforcement point of run over raws (step ⑧), tagging each refined
// record with its format, and counts what became of the others. year completes the
// timestamps of formats that carry none (syslog), and now is the clock the schedule is
// checked against (records that reach the provider outside it are not shared), when the
// format's enforcer is made.
func (run *agreementRun) refine(format string, raws [][]byte, year int, now func() time.Time) (out [][]byte, n refineCounts, err error) {
	tag := run.formatTag(format)
	run.mu.Lock()
	defer run.mu.Unlock()
	e, ok := run.enforcers[format]
	if !ok {
		var err error
		if e, err = policy.NewEnforcer(run.ssp, format, policy.Config{Year: year, Now: now}); err != nil {
			return nil, n, err
		}
		run.enforcers[format] = e
	}
	before := e.Stats()
	// The refined records share buffers, each record capped at its own length: buf holds
	// room for the raw records, tagged, and is replaced by a larger one if they grow.
	size := len(raws)
	for _, raw := range raws {
		size += len(raw)
	}
	buf := make([]byte, 0, size)
	for i, raw := range raws {
		start := len(buf)
		if buf, err = e.Refine(append(buf, tag), raw); err != nil {
			if n.malformed++; n.badIndex == 0 {
				n.badIndex = i + 1
			}
			buf = buf[:start]
			continue
		}
		if len(buf) == start+1 {
			buf = buf[:start]
			continue // not to be shared
		}
		end := len(buf) - 1 // the newline
		out = append(out, buf[start:end:end])
		buf = buf[:end]
	}
	after := e.Stats()
	n.outside = after.OutsideSchedule - before.OutsideSchedule
	n.filtered = after.Filtered + after.FilterErrors - before.Filtered - before.FilterErrors
	n.filterErrors = after.FilterErrors - before.FilterErrors
	if len(after.FilteredBy) > 0 {
		n.filteredBy = make([]int64, len(after.FilteredBy))
		for i, v := range after.FilteredBy {
			n.filteredBy[i] = v - before.FilteredBy[i]
		}
	}
	n.untimed = after.Untimed - before.Untimed
	n.refined = after.Refined - before.Refined
	// What is left was counted in a summary.
	n.summarised = after.Records - before.Records - n.refined - n.malformed - n.outside - n.filtered - n.untimed
	return out, n, nil
}

// noteSchedule logs, when it changes, that records reach the provider outside the SSA's
// schedule (outside of the total of a chunk) and are not shared.
func (run *agreementRun) noteSchedule(log *slog.Logger, outside, total int64) {
	switch {
	case outside > 0 && !run.outside.Swap(true):
		bound := func(t protocol.Time) string {
			if t == 0 {
				return "open"
			}
			return t.String()
		}
		log.Warn("records not shared: they reach the provider outside the SSA's schedule (counted as outside the schedule)",
			"ssa", run.ssa.ID, "schedule-start", bound(run.ssa.Schedule.Start), "schedule-end", bound(run.ssa.Schedule.End))
	case outside < total && run.outside.Swap(false):
		log.Info("records shared again: the SSA's schedule is open", "ssa", run.ssa.ID)
	}
}
