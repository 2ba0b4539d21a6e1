package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The SSA management point (clause 8, Appendix I steps ⑤–⑥): every approved SSA is translated
// into its SSP and put in force as an agreementRun, which the enforcement points use; a
// revision replaces its run, a cancellation or annulment ends it.

// managerConfig is what the management point is told beyond the store and the compiler.
type managerConfig struct {
	Log *slog.Logger
	Now func() time.Time
	// MaxQueuedPerPeer bounds the records queued for one requester over all its SSAs.
	MaxQueuedPerPeer int64
	// Changes counts agreement changes by status.
	Changes *prometheus.CounterVec
	// Deliver makes sure the delivery loop of a provider's run is going (deliverer.wake).
	Deliver func(*agreementRun)
	// Ledger counts records' outcomes: an SSA provided that ends leaves its series.
	Ledger *ledger
}

// manager is the SSA management point: it owns the runs in force and those held for their
// records. Its methods are safe for concurrent use.
type manager struct {
	store    *storage.Store
	compiler *policy.Compiler
	keys     policy.KeySource
	cfg      managerConfig

	mu   sync.Mutex
	runs map[string]*agreementRun
	// held are the SSAs this agent requested that are no longer in force (annulled or
	// superseded) but whose received records it still holds: they are still forwarded to
	// the sinks and deleted when their retention runs out.
	held map[string]*agreementRun
}

// newManager implements every SSA in force in the store (a provider's delivery starts at once
// for records queued before a restart) and holds those requested that ended. keys are the
// provider's masking keys.
func newManager(st *storage.Store, compiler *policy.Compiler, keys policy.KeySource, cfg managerConfig) (*manager, error) {
	m := &manager{store: st, compiler: compiler, keys: keys, cfg: cfg,
		runs: map[string]*agreementRun{}, held: map[string]*agreementRun{}}
	recs, err := st.Negotiations()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if err := m.load(rec); err != nil {
			m.close() // the deliveries it started end with it
			return nil, err
		}
	}
	return m, nil
}

// load puts the SSA of one stored negotiation in force, or holds it, as its state says.
func (m *manager) load(rec *storage.Negotiation) error {
	// An SSA with a cancellation committed is no longer in force, whether or not the
	// annulment was confirmed: a restart does not start its delivery again.
	ended := rec.State == protocol.StateAnnulled || cancelling(rec.State)
	if cancelling(rec.State) && rec.Role == protocol.RoleProvider {
		// The queue may have outlived a crash right after the cancellation's commit.
		if err := m.store.DropOutbox(rec.SSAID); err != nil {
			return fmt.Errorf("drop the queue of cancelled SSA %s: %w", rec.SSAID, err)
		}
	}
	if !inForce(rec.State) && (!ended || rec.Role != protocol.RoleRequester) {
		return nil
	}
	id, err := agreedID(m.store, rec)
	if err != nil {
		return err
	}
	s, err := m.store.Agreement(id)
	if err != nil {
		return fmt.Errorf("load SSA %s: %w", id, err)
	}
	if inForce(rec.State) {
		m.implement(s, rec.Role)
	} else {
		m.hold(s, rec.Updated)
	}
	if rec.Role != protocol.RoleRequester {
		return nil
	}
	for id := s.Supersedes; id != ""; {
		old, err := m.store.Agreement(id)
		if err != nil {
			return fmt.Errorf("load SSA %s: %w", id, err)
		}
		m.hold(old, time.Time{})
		id = old.Supersedes
	}
	return nil
}

// agreedID is the ID of the SSA agreed in negotiation rec: its record's, except during a
// revision, when the record is found by the pending revision's ID and the SSA in force is
// the one the last revision of its transcript supersedes.
func agreedID(st *storage.Store, rec *storage.Negotiation) (string, error) {
	if rec.State != protocol.StateRevisionSent && rec.State != protocol.StateRevisionReceived {
		return rec.SSAID, nil
	}
	raw, err := st.Transcript(rec.ID)
	if err != nil {
		return "", fmt.Errorf("load the transcript of SSA %s: %w", rec.SSAID, err)
	}
	for i := len(raw) - 1; i >= 0; i-- {
		e, err := protocol.Open(raw[i])
		if err != nil {
			return "", fmt.Errorf("%w: transcript of SSA %s: %v", storage.ErrCorrupt, rec.SSAID, err)
		}
		if e.Header.Type == protocol.MsgRevision {
			return e.SSA.Supersedes, nil
		}
	}
	return "", fmt.Errorf("%w: SSA %s is %s but its transcript holds no revision", storage.ErrCorrupt, rec.SSAID, rec.State)
}

// cancelling reports whether a negotiation in state st has a cancellation committed and
// awaits, or sends, its confirmation.
func cancelling(st protocol.State) bool {
	return st == protocol.StateCancellationSent || st == protocol.StateCancellationReceived
}

// hold keeps a requested SSA no longer in force for its records (see manager.held);
// cancelled is when it was cancelled (zero if it was superseded).
func (m *manager) hold(s *protocol.SSA, cancelled time.Time) {
	run, err := m.translate(s, protocol.RoleRequester)
	if err != nil {
		m.cfg.Log.Error("SSA records cannot be handled", "ssa", s.ID, "err", err)
		return
	}
	run.cancelled = cancelled
	m.mu.Lock()
	m.held[s.ID] = run
	m.mu.Unlock()
}

// agreementChanged is called by the negotiation point when an SSA is approved, revised or
// annulled (step ⑤): the management point starts, replaces or stops its implementation.
func (m *manager) agreementChanged(s *protocol.SSA, role protocol.Role) {
	m.cfg.Changes.WithLabelValues(s.Status.String()).Inc()
	switch s.Status {
	case protocol.StatusApproval:
		if s.Supersedes != "" {
			m.stop(s.Supersedes)
		}
		m.implement(s, role)
	case protocol.StatusAnnulment:
		m.cancelled(s.ID, m.cfg.Now())
	}
}

// cancelled is called by the negotiation point as soon as a cancellation of an SSA is
// committed, sent or received, and again when its annulment is: stopping is immediate on the
// side that decides, and does not wait for a confirmation that a peer may never send. The
// provider stops delivering and drops the SSA's queue; the requester refuses its batches
// from then on. The confirmed annulment only completes the record.
func (m *manager) cancelled(ssaID string, at time.Time) {
	m.mu.Lock()
	for _, runs := range []map[string]*agreementRun{m.runs, m.held} {
		if run, ok := runs[ssaID]; ok && run.cancelled.IsZero() {
			run.cancelled = at
		}
	}
	m.mu.Unlock()
	m.stop(ssaID)
}

// translate translates an SSA into its SSP (step ⑥). Only the provider masks, so only its
// SSP is given the keys; a requester verifies without them.
func (m *manager) translate(s *protocol.SSA, role protocol.Role) (*agreementRun, error) {
	var keys policy.KeySource
	if role == protocol.RoleProvider {
		keys = m.keys
	}
	ssp, err := m.compiler.Compile(s, keys)
	if err != nil {
		return nil, err
	}
	return newRun(s, role, ssp)
}

// implement puts an SSA in force (step ⑥) and, on the provider, starts delivery.
func (m *manager) implement(s *protocol.SSA, role protocol.Role) {
	run, err := m.translate(s, role)
	if err != nil {
		m.cfg.Log.Error("SSA cannot be implemented", "ssa", s.ID, "err", err)
		return
	}
	if role == protocol.RoleProvider {
		st, err := m.store.OutboxState(s.ID)
		if err != nil {
			m.cfg.Log.Error("SSA cannot be implemented: its queue is unreadable", "ssa", s.ID, "err", err)
			return
		}
		run.backlog.Store(int64(st.Refined - min(st.Acked, st.Refined)))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.runs[s.ID]; ok {
		return
	}
	m.runs[s.ID] = run
	if role == protocol.RoleProvider {
		run.ctx, run.cancel = context.WithCancel(context.Background())
		m.cfg.Deliver(run) // records queued before a restart go out now
	}
	m.cfg.Log.Info("SSA implemented", "ssa", s.ID, "role", role.String(), "ssp", run.ssp.Hash())
}

// stop ends the implementation of an SSA at once: delivery stops and its queue is dropped.
func (m *manager) stop(ssaID string) {
	m.mu.Lock()
	run, ok := m.runs[ssaID]
	delete(m.runs, ssaID)
	if ok && run.role == protocol.RoleRequester {
		m.held[ssaID] = run
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	if run.role == protocol.RoleProvider {
		if done := run.halt(); done != nil {
			<-done
		}
		if err := m.store.DropOutbox(ssaID); err != nil {
			m.cfg.Log.Error("drop the queue of an SSA no longer in force", "ssa", ssaID, "err", err)
		}
		m.cfg.Ledger.forgetProvided(ssaID)
	}
	m.cfg.Log.Info("SSA no longer in force", "ssa", ssaID)
}

// cancelledAt is when run's SSA was cancelled, or zero.
func (m *manager) cancelledAt(run *agreementRun) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return run.cancelled
}

// run is the SSA in force with this ID, or nil.
func (m *manager) run(ssaID string) *agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs[ssaID]
}

// providedBy reports whether an SSA this agent requested from p is in force, or was
// cancelled and is still held (its batches are read to be refused and quarantined).
func (m *manager) providedBy(p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.runs {
		if r.role == protocol.RoleRequester && r.peer == p {
			return true
		}
	}
	for _, r := range m.held {
		if !r.cancelled.IsZero() && r.peer == p {
			return true
		}
	}
	return false
}

// requested is the SSA this agent requested with this ID, in force or held, or nil.
func (m *manager) requested(ssaID string) *agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.runs[ssaID]; ok && r.role == protocol.RoleRequester {
		return r
	}
	return m.held[ssaID]
}

// providerRuns are the SSAs this agent provides that are in force, by ID.
func (m *manager) providerRuns() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := runsOf(m.runs, protocol.RoleProvider)
	slices.SortFunc(out, func(a, b *agreementRun) int { return strings.Compare(a.ssa.ID, b.ssa.ID) })
	return out
}

// requesterRuns are the SSAs this agent requested whose records it holds: those in force
// and those held after they ended.
func (m *manager) requesterRuns() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append(runsOf(m.runs, protocol.RoleRequester), slices.Collect(maps.Values(m.held))...)
}

// runsOf lists the runs of one role.
func runsOf(runs map[string]*agreementRun, role protocol.Role) []*agreementRun {
	var out []*agreementRun
	for _, r := range runs {
		if r.role == role {
			out = append(out, r)
		}
	}
	return out
}

// reserve takes room in the queues of the requesters for want[i] records of runs[i], run by
// run, and says how many of each it got: what the backlogs of each requester's SSAs leave
// under max-queued-per-peer. The caller gives back what it does not queue (backlog.Add).
func (m *manager) reserve(runs []*agreementRun, want []int) []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	queued := map[peer.ID]int64{}
	for _, r := range m.runs {
		if r.role == protocol.RoleProvider {
			queued[r.peer] += r.backlog.Load()
		}
	}
	room := make([]int, len(runs))
	for i, run := range runs {
		n := max(0, min(int64(want[i]), m.cfg.MaxQueuedPerPeer-queued[run.peer]))
		queued[run.peer] += n
		run.backlog.Add(n)
		room[i] = int(n)
	}
	return room
}

// close stops every delivery loop; the deliverer waits for them to end.
func (m *manager) close() {
	m.mu.Lock()
	for _, r := range m.runs {
		r.halt()
	}
	m.mu.Unlock()
}
