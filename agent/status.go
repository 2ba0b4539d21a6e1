package agent

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The status snapshot: what an operator sees at a glance (`ssanet status`, GET /v1/status on
// the control API, and the status page on the metrics address, statuspage.go). It is read
// from what the agent keeps anyway; only two things are its own: the flow meter, which
// samples the records counted per SSA every second to turn them into rates, and the last
// verdict of every requested SSA in force, assessed again every verdictEvery while the status
// is being read (within statusWatch of the last read).

// Status is the agent at one moment: its peers, its agreements with their phase and verdict,
// the records flowing per SSA and its sinks.
type Status struct {
	Peer string    `json:"peer"` // this agent's peer ID
	Time time.Time `json:"time"`
	// Peers are the peers the agent knows (see Peers), their addresses the direct ones (no
	// relay).
	Peers []PeerView `json:"peers"`
	// Agreements are the negotiations not over: under negotiation, in force, or being
	// revised or cancelled. Ended counts those over (rejected, expired, annulled, failed,
	// withdrawn), which are not listed.
	Agreements []AgreementStatus `json:"agreements"`
	Ended      int               `json:"ended"`
	// Flows are the SSAs in force, with their records in and out.
	Flows []Flow `json:"flows"`
	// WindowSeconds is the span of the flow samples kept: FlowWindow and up to one sample
	// more once the agent has run that long, less before, 0 before its second sample. An
	// SSA put in force within it is measured from its first sample.
	WindowSeconds float64 `json:"window_seconds"`
	// Sinks are the sinks with their position and lag per SSA and their last error.
	Sinks []SinkState `json:"sinks"`
	// Roster is the community roster the agent holds (roster.go); nil outside a community.
	Roster *RosterStatus `json:"roster,omitempty"`
}

// RosterStatus is the community roster in a status snapshot.
type RosterStatus struct {
	Community string `json:"community"`
	Version   uint64 `json:"version"`
	Expires   string `json:"expires"`
	Expired   bool   `json:"expired"`
	Members   int    `json:"members"`
}

// AgreementStatus is one negotiation in a status snapshot.
type AgreementStatus struct {
	SSAID string `json:"ssa_id"`
	Peer  string `json:"peer"`
	Role  string `json:"role"`
	State string `json:"state"`
	Phase Phase  `json:"phase"`
	// Verdict is the last assessment of an SSA this agent requested and that is in force
	// (steps ⑫–⑭, as `ssanet monitor`), with its reasons and time; "" until the first one,
	// and for an SSA this agent provides (the requester judges it).
	Verdict    Verdict   `json:"verdict,omitempty"`
	Reasons    []string  `json:"reasons,omitempty"`
	AssessedAt time.Time `json:"assessed_at,omitzero"`
	// AssessError says why the last assessment could not be made.
	AssessError string `json:"assess_error,omitempty"`
}

// Flow is the records of one SSA in force. On the provider, In counts the raw records handed
// to the SSA's enforcement point and Out the records the requester acknowledged; on the
// requester, In counts the records received and stored and Out the records written to the
// sinks (a record written to two sinks counts twice). The totals are the store's (In and Out
// of the provider; In of the requester) or since the agent started (Out of the requester);
// the rates are records per second over the status's window.
type Flow struct {
	SSAID   string  `json:"ssa_id"`
	Role    string  `json:"role"`
	In      uint64  `json:"in"`
	Out     uint64  `json:"out"`
	InRate  float64 `json:"in_per_second"`
	OutRate float64 `json:"out_per_second"`
}

// Flow meter and verdict refresh: how often, and over what span.
const (
	flowEvery = time.Second
	// FlowWindow is the span over which Status measures the rates of the flows.
	FlowWindow = 10 * time.Second
	// verdictEvery is how often a requested SSA in force is assessed again for the status: each
	// assessment asks its provider for a report.
	verdictEvery = 15 * time.Second
	// statusWatch is how long after a status is read the verdicts are kept fresh: when nobody
	// looks, no provider is asked for a report for the status.
	statusWatch = 2 * time.Minute
)

// Status is a snapshot of the agent: peers, agreements, flows and sinks.
func (a *Agent) Status() (*Status, error) {
	a.status.read()
	st := &Status{Peer: a.ID().String(), Time: a.neg.now().UTC()}
	var err error
	if st.Peers, err = a.Peers(); err != nil {
		return nil, err
	}
	for i := range st.Peers {
		st.Peers[i].Addrs = slices.DeleteFunc(st.Peers[i].Addrs, relayed)
	}
	if st.Agreements, st.Ended, err = a.agreementsStatus(); err != nil {
		return nil, err
	}
	st.Flows, st.WindowSeconds = a.status.flows()
	if st.Sinks, err = a.sinks.states(); err != nil {
		return nil, err
	}
	if v, err := a.Community(); err == nil {
		st.Roster = &RosterStatus{Community: v.Community, Version: v.Version, Expires: v.Expires, Expired: v.Expired, Members: len(v.Members)}
	}
	return st, nil
}

// runsInForce are the SSAs in force, both roles.
func (m *manager) runsInForce() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.runs))
}

// requestedInForce are the IDs of the SSAs this agent requested that are in force, sorted.
func (m *manager) requestedInForce() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, r := range runsOf(m.runs, protocol.RoleRequester) {
		ids = append(ids, r.ssa.ID)
	}
	slices.Sort(ids)
	return ids
}

// relayed reports whether a multiaddr goes through a relay.
func relayed(addr string) bool { return strings.Contains(addr, "/p2p-circuit") }

// agreementsStatus lists the negotiations not over, with the last verdict of each SSA
// requested in force, and counts those over.
func (a *Agent) agreementsStatus() ([]AgreementStatus, int, error) {
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, 0, err
	}
	out := []AgreementStatus{}
	ended := 0
	for _, rec := range recs {
		if rec.State.Ended() {
			ended++
			continue
		}
		v, err := a.view(rec)
		if err != nil {
			return nil, 0, err
		}
		as := AgreementStatus{SSAID: v.SSAID, Peer: v.Peer, Role: v.Role, State: v.State, Phase: v.Phase}
		id := v.SSAID
		if v.SSA != nil && inForce(rec.State) {
			id = v.SSA.ID // the version in force, which is the one assessed
		}
		if vd, ok := a.status.verdict(id); ok {
			as.Verdict, as.Reasons, as.AssessedAt, as.AssessError = vd.Verdict, vd.Reasons, vd.At, vd.Err
		}
		out = append(out, as)
	}
	return out, ended, nil
}

// flowCount is the records of one SSA in force in and out, at one sample.
type flowCount struct {
	role    protocol.Role
	in, out uint64
}

// flowSample is the counts of every SSA in force at one moment.
type flowSample struct {
	at     time.Time
	counts map[string]flowCount
}

// verdictEntry is the last assessment of a requested SSA for the status.
type verdictEntry struct {
	Verdict Verdict
	Reasons []string
	At      time.Time
	Err     string
}

// statusKeeper keeps what a status snapshot cannot read at once: the flow samples of the
// last FlowWindow and the last verdict of each requested SSA in force.
type statusKeeper struct {
	// count reads the records in and out of every SSA in force.
	count func() (map[string]flowCount, error)
	// assess judges a requested SSA (monitor.assess); requested lists those in force.
	assess    func(ctx context.Context, ssaID string) (*Assessment, error)
	requested func() []string
	now       func() time.Time
	log       *slog.Logger

	readAt atomic.Int64 // when the status was last read (Unix nanoseconds; 0: never)

	mu       sync.Mutex
	samples  []flowSample // oldest first, spanning at most FlowWindow
	verdicts map[string]verdictEntry
}

// statusSources are what the status keeper reads.
type statusSources struct {
	runs      func() []*agreementRun // the SSAs in force, both roles
	store     *storage.Store
	sinks     func() ([]SinkState, error)
	assess    func(ctx context.Context, ssaID string) (*Assessment, error)
	requested func() []string
	now       func() time.Time
	log       *slog.Logger
}

func newStatusKeeper(src statusSources) *statusKeeper {
	return &statusKeeper{
		count:     func() (map[string]flowCount, error) { return countFlows(src.runs(), src.store, src.sinks) },
		assess:    src.assess,
		requested: src.requested,
		now:       src.now,
		log:       src.log,
		verdicts:  map[string]verdictEntry{},
	}
}

// countFlows reads the records in and out of each SSA in force (see Flow).
func countFlows(runs []*agreementRun, st *storage.Store, sinks func() ([]SinkState, error)) (map[string]flowCount, error) {
	out := make(map[string]flowCount, len(runs))
	var states []SinkState
	for _, run := range runs {
		id := run.ssa.ID
		switch run.role {
		case protocol.RoleProvider:
			ob, err := st.OutboxState(id)
			if err != nil {
				return nil, err
			}
			out[id] = flowCount{role: run.role, in: ob.Ingested, out: ob.Acked}
		case protocol.RoleRequester:
			in, err := st.InboxState(id)
			if err != nil {
				return nil, err
			}
			if states == nil {
				if states, err = sinks(); err != nil {
					return nil, err
				}
			}
			var fwd uint64
			for _, s := range states {
				fwd += s.SSAs[id].Records.Forwarded
			}
			out[id] = flowCount{role: run.role, in: in.Last, out: fwd}
		}
	}
	return out, nil
}

// sampleFlows counts the flows and keeps the sample, dropping those older than FlowWindow.
func (k *statusKeeper) sampleFlows() {
	counts, err := k.count()
	if err != nil {
		k.log.Debug("flows not counted for the status", "err", err)
		return
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.samples = append(k.samples, flowSample{at: now, counts: counts})
	// Keep the newest sample at least FlowWindow old, the start of the window.
	for len(k.samples) > 1 && now.Sub(k.samples[1].at) >= FlowWindow {
		k.samples = k.samples[1:]
	}
}

// flows are the SSAs in force at the last sample, sorted by ID, with their rates since the
// oldest sample kept that counts them (an SSA put in force within the window is measured
// from its first sample), and the span of the samples kept, in seconds.
func (k *statusKeeper) flows() ([]Flow, float64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := []Flow{}
	if len(k.samples) == 0 {
		return out, 0
	}
	last := k.samples[len(k.samples)-1]
	for id, c := range last.counts {
		f := Flow{SSAID: id, Role: c.role.String(), In: c.in, Out: c.out}
		for _, s := range k.samples[:len(k.samples)-1] {
			if o, ok := s.counts[id]; ok {
				span := last.at.Sub(s.at).Seconds()
				f.InRate, f.OutRate = perSecond(o.in, c.in, span), perSecond(o.out, c.out, span)
				break
			}
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Flow) int { return strings.Compare(a.SSAID, b.SSAID) })
	return out, last.at.Sub(k.samples[0].at).Seconds()
}

// perSecond is the records per second from count a to count b over span seconds; a count that
// went down (the sinks' counts start again with the agent) is no flow.
func perSecond(a, b uint64, span float64) float64 {
	if b < a || span <= 0 {
		return 0
	}
	return float64(b-a) / span
}

// verdict is the last verdict of SSA ssaID, if it was assessed.
func (k *statusKeeper) verdict(ssaID string) (verdictEntry, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.verdicts[ssaID]
	return v, ok
}

// refreshVerdicts assesses each requested SSA in force not assessed in the last verdictEvery
// (a new one at once), one at a time, and forgets the SSAs no longer in force.
func (k *statusKeeper) refreshVerdicts(ctx context.Context) {
	ids := k.requested()
	k.mu.Lock()
	for id := range k.verdicts {
		if !slices.Contains(ids, id) {
			delete(k.verdicts, id)
		}
	}
	k.mu.Unlock()
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if v, ok := k.verdict(id); ok && k.now().Sub(v.At) < verdictEvery {
			continue
		}
		e := verdictEntry{At: k.now()}
		if as, err := k.assess(ctx, id); err != nil {
			e.Err = err.Error()
		} else {
			e.Verdict, e.Reasons = as.Verdict, as.Reasons
		}
		k.mu.Lock()
		k.verdicts[id] = e
		k.mu.Unlock()
	}
}

// runFlows samples the flows every flowEvery until ctx ends.
func (k *statusKeeper) runFlows(ctx context.Context) {
	tickEvery(ctx, flowEvery, k.sampleFlows)
}

// read notes that the status is being read: the verdicts are kept fresh for statusWatch.
func (k *statusKeeper) read() { k.readAt.Store(k.now().UnixNano()) }

// watched says whether the status was read within the last statusWatch.
func (k *statusKeeper) watched() bool {
	at := k.readAt.Load()
	return at != 0 && k.now().Sub(time.Unix(0, at)) < statusWatch
}

// runVerdicts refreshes the verdicts every second while the status is being read (see
// refreshVerdicts and watched), and otherwise forgets them, which would grow stale, until ctx
// ends. The first status read after a while shows no verdict; the next, a second later, does.
func (k *statusKeeper) runVerdicts(ctx context.Context) {
	tickEvery(ctx, time.Second, func() {
		if k.watched() {
			k.refreshVerdicts(ctx)
			return
		}
		k.mu.Lock()
		clear(k.verdicts)
		k.mu.Unlock()
	})
}

// tickEvery calls f at once and then every d until ctx ends.
func tickEvery(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
