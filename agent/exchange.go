package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The SSA management point and the SSP enforcement points (clause 8, Appendix I steps ⑤–⑪):
// every approved SSA is translated into its SSP; on the provider, raw records from the
// security agent are refined under each matching SSP, queued durably and delivered in signed,
// numbered batches over /ssanet/exchange/1.0.0; on the requester, every batch is verified
// against the SSP, stored exactly once and forwarded to the security management server.

// Stream protocols of the exchange and monitoring.
const (
	ProtocolExchange = "/ssanet/exchange/1.0.0"
	ProtocolMonitor  = "/ssanet/monitor/1.0.0"
)

// Delivery tuning.
const (
	batchRecords  = 2048
	batchBytes    = 2 << 20
	ingestChunk   = 2048
	retryDelivery = time.Second
	// maxScheduleWait is the longest a delivery loop sleeps waiting for its schedule's start.
	maxScheduleWait = time.Minute
	latencySamples  = 1024
)

// agreementRun is an SSA in force and the running parts that implement it.
type agreementRun struct {
	ssa  *protocol.SSA
	role protocol.Role
	peer peer.ID
	ssp  *policy.SSP
	// cancelled is when this agent committed a cancellation of the SSA, sent or received
	// (zero if none; guarded by the manager's mu). From then on the requester refuses the
	// SSA's batches and quarantines them as evidence (see checkBatch).
	cancelled time.Time
	// refineID is the SSP's RefinementID: runs that share it share each refinement.
	refineID string

	// Provider side.
	// backlog counts the records queued and not yet acknowledged (see Config.MaxQueuedPerPeer).
	backlog atomic.Int64
	// full is set while ingest leaves records out for want of room (logged when it changes).
	full        atomic.Bool
	mu          sync.Mutex // guards enforcers, enqueued and lat
	enforcers   map[string]*policy.Enforcer
	enqueued    []enqueueMark // when each range of sequence numbers was queued
	lat         []time.Duration
	kick        chan struct{}
	sentOutside atomic.Uint64

	// The delivery loop runs only while it has something to do: wake starts it, and it ends
	// when the queue is empty and nothing kicks it, so an idle SSA in force costs no
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

// manager is the SSA management point.
type manager struct {
	a    *Agent
	keys policy.KeySource

	mu   sync.Mutex
	runs map[string]*agreementRun
	// held are the SSAs this agent requested that are no longer in force (annulled or
	// superseded) but whose received records it still holds: they are still forwarded to
	// the sinks and deleted when their retention runs out.
	held map[string]*agreementRun
	wg   sync.WaitGroup
}

// newManager loads the key of the agent's masking secrets (created on first use) and
// implements every SSA in force.
func newManager(a *Agent) (*manager, error) {
	secret, err := loadOrCreateSecret(filepath.Join(a.home, PolicyKeyFile))
	if err != nil {
		return nil, err
	}
	m := &manager{a: a, keys: maskKeys(a.home, secret), runs: map[string]*agreementRun{}, held: map[string]*agreementRun{}}
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		// An SSA with a cancellation committed is no longer in force, whether or not the
		// annulment was confirmed: a restart does not start its delivery again.
		ended := rec.State == protocol.StateAnnulled || cancelling(rec.State)
		if cancelling(rec.State) && rec.Role == protocol.RoleProvider {
			// The queue may have outlived a crash right after the cancellation's commit.
			if err := a.store.DropOutbox(rec.SSAID); err != nil {
				return nil, fmt.Errorf("drop the queue of cancelled SSA %s: %w", rec.SSAID, err)
			}
		}
		if rec.State != protocol.StateApproved && (!ended || rec.Role != protocol.RoleRequester) {
			continue
		}
		s, err := a.store.Agreement(rec.SSAID)
		if err != nil {
			return nil, fmt.Errorf("load SSA %s: %w", rec.SSAID, err)
		}
		if rec.State == protocol.StateApproved {
			m.implement(s, rec.Role)
		} else {
			m.hold(s, rec.Updated)
		}
		for id := s.Supersedes; id != "" && rec.Role == protocol.RoleRequester; {
			old, err := a.store.Agreement(id)
			if err != nil {
				return nil, fmt.Errorf("load SSA %s: %w", id, err)
			}
			m.hold(old, time.Time{})
			id = old.Supersedes
		}
	}
	return m, nil
}

// cancelling reports whether a negotiation in state st has a cancellation committed and
// awaits, or sends, its confirmation.
func cancelling(st protocol.State) bool {
	return st == protocol.StateCancellationSent || st == protocol.StateCancellationReceived
}

// hold keeps a requested SSA no longer in force for its records (see manager.held);
// cancelled is when it was cancelled (zero if it was superseded).
func (m *manager) hold(s *protocol.SSA, cancelled time.Time) {
	run, err := m.newRun(s, protocol.RoleRequester)
	if err != nil {
		m.a.log.Error("SSA records cannot be handled", "ssa", s.ID, "err", err)
		return
	}
	run.cancelled = cancelled
	m.mu.Lock()
	m.held[s.ID] = run
	m.mu.Unlock()
}

// PolicyKeyFile holds the secret from which each SSA's CryptoPAn and HMAC keys are derived.
const PolicyKeyFile = "policy.key"

func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("masking secret %s: unreadable or not 32 bytes", path)
	}
	b = make([]byte, 32)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write masking secret: %w", err)
	}
	return b, nil
}

// agreementChanged is called by the negotiation point when an SSA is approved, revised or
// annulled (step ⑤): the management point starts, replaces or stops its implementation.
func (m *manager) agreementChanged(s *protocol.SSA, role protocol.Role) {
	m.a.m.agreements.WithLabelValues(s.Status.String()).Inc()
	switch s.Status {
	case protocol.StatusApproval:
		if s.Supersedes != "" {
			m.stop(s.Supersedes)
		}
		m.implement(s, role)
	case protocol.StatusAnnulment:
		m.cancelled(s.ID, time.Now())
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

// newRun translates an SSA into its SSP (step ⑥). Only the provider masks, so only its SSP
// is given the keys; a requester verifies without them.
func (m *manager) newRun(s *protocol.SSA, role protocol.Role) (*agreementRun, error) {
	var keys policy.KeySource
	if role == protocol.RoleProvider {
		keys = m.keys
	}
	ssp, err := m.a.compiler.Compile(s, keys)
	if err != nil {
		return nil, err
	}
	other := s.Participants.Provider
	if role == protocol.RoleProvider {
		other = s.Participants.Requester
	}
	p, err := peerOf(other)
	if err != nil {
		return nil, err
	}
	return &agreementRun{ssa: s, role: role, peer: p, ssp: ssp, refineID: ssp.RefinementID(),
		enforcers: map[string]*policy.Enforcer{}, kick: make(chan struct{}, 1)}, nil
}

// implement puts an SSA in force (step ⑥) and, on the provider, starts delivery.
func (m *manager) implement(s *protocol.SSA, role protocol.Role) {
	run, err := m.newRun(s, role)
	if err != nil {
		m.a.log.Error("SSA cannot be implemented", "ssa", s.ID, "err", err)
		return
	}
	ssp := run.ssp
	if role == protocol.RoleProvider {
		st, err := m.a.store.OutboxState(s.ID)
		if err != nil {
			m.a.log.Error("SSA cannot be implemented: its queue is unreadable", "ssa", s.ID, "err", err)
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
		m.wake(run) // records queued before a restart go out now
	}
	m.a.log.Info("SSA implemented", "ssa", s.ID, "role", role.String(), "ssp", ssp.Hash())
}

// wake makes sure the delivery loop of a provider's run is going: it kicks the running loop,
// or starts one.
func (m *manager) wake(run *agreementRun) {
	run.loopMu.Lock()
	defer run.loopMu.Unlock()
	switch {
	case run.ctx.Err() != nil:
	case run.looping != nil:
		select {
		case run.kick <- struct{}{}:
		default:
		}
	default:
		done := make(chan struct{})
		run.looping = done
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.deliverLoop(run.ctx, run)
			run.loopMu.Lock()
			if run.looping == done { // not parked: it failed or was halted
				run.looping = nil
			}
			run.loopMu.Unlock()
			close(done)
		}()
	}
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

func peerOf(p protocol.Participant) (peer.ID, error) {
	id, err := peer.Decode(p.PeerID)
	if err != nil {
		return "", fmt.Errorf("participant %q has no valid peer ID: %w", p.Name, err)
	}
	return id, nil
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
		if err := m.a.store.DropOutbox(ssaID); err != nil {
			m.a.log.Error("drop the queue of an SSA no longer in force", "ssa", ssaID, "err", err)
		}
	}
	m.a.log.Info("SSA no longer in force", "ssa", ssaID)
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

func (m *manager) providerRuns() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := runsOf(m.runs, protocol.RoleProvider)
	slices.SortFunc(out, func(a, b *agreementRun) int { return strings.Compare(a.ssa.ID, b.ssa.ID) })
	return out
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

// close stops every delivery loop.
func (m *manager) close() {
	m.mu.Lock()
	for _, r := range m.runs {
		r.halt()
	}
	m.mu.Unlock()
	m.wg.Wait()
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
	return a.ingest(ctx, format, r, nil)
}

// ingest is Ingest, and when from is not nil, r is a followed file read from there: each
// chunk is queued in one commit with the position where it ends in the file (the last one
// with the position of the end of r), so that a crash at any point neither repeats nor skips
// a record of the file.
func (a *Agent) ingest(ctx context.Context, format string, r io.Reader, from *storage.FilePos) (IngestStats, error) {
	st := IngestStats{Queued: map[string]int64{}}
	rr, err := policy.NewRecordReader(r, format)
	if err != nil {
		return st, err
	}
	refined := make(chan refinedChunk, 1)
	queueErr := make(chan error, 1)
	go func() { // the queueing stage, owned by this call: it ends when refined is closed
		var err error
		for c := range refined {
			if err == nil {
				err = a.mgr.enqueue(c, &st)
			}
		}
		queueErr <- err
	}()
	readErr := a.readChunks(ctx, format, rr, &st, func(chunk [][]byte, end int64) {
		c := a.mgr.refine(format, chunk)
		st.Malformed += c.malformed
		if from != nil {
			c.pos = &storage.FilePos{Path: from.Path, Inode: from.Inode, Offset: from.Offset + end}
		}
		refined <- c
	})
	close(refined)
	return st, errors.Join(readErr, <-queueErr)
}

// readChunks cuts records out of rr and hands them to refine in chunks, with the offset in
// rr's input where each chunk ends (malformed records before it included). The last chunk,
// at the end of the input, ends there, and is handed over even when it is empty.
func (a *Agent) readChunks(ctx context.Context, format string, rr *policy.RecordReader, st *IngestStats, refine func(chunk [][]byte, end int64)) error {
	chunk := make([][]byte, 0, ingestChunk)
	end := int64(0) // where the last record read ends
	for {
		rec, err := rr.Next()
		var bad *policy.BadRecord
		switch {
		case errors.Is(err, io.EOF):
			refine(chunk, rr.Offset())
			return nil
		case errors.As(err, &bad):
			st.Malformed++
			end = rr.Offset()
			a.log.Debug("malformed record skipped", "format", format, "line", bad.Line, "err", bad.Err)
			continue
		case err != nil:
			if len(chunk) > 0 {
				refine(chunk, end)
			}
			return err
		}
		st.Records++
		end = rr.Offset()
		chunk = append(chunk, slices.Clone(rec))
		if len(chunk) == ingestChunk {
			refine(chunk, end)
			chunk = make([][]byte, 0, ingestChunk)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
}

// refinedChunk is a chunk of raw records refined for every SSA that shares its format.
type refinedChunk struct {
	raws      int
	malformed int64 // raw records an enforcement point could not parse
	runs      []*agreementRun
	refined   [][][]byte
	err       error
	pos       *storage.FilePos // where the chunk ends in a followed file, committed with it
}

// ingest refines a chunk of raw records and queues the results.
func (m *manager) ingest(format string, raws [][]byte, st *IngestStats) error {
	return m.enqueue(m.refine(format, raws), st)
}

// refine runs the enforcement points of the provider SSAs that share format over raws:
// once for each distinct refinement (policy.SSP.RefinementID), whose records every SSA that
// shares it gets (the same slice, or a copy where its format's tag differs).
func (m *manager) refine(format string, raws [][]byte) refinedChunk {
	c := refinedChunk{raws: len(raws)}
	if len(raws) == 0 {
		return c
	}
	first := map[string]int{} // the first run of each refinement, by its index in c.runs
	for _, run := range m.providerRuns() {
		if !slices.Contains(run.ssp.Formats(), format) {
			continue
		}
		var out [][]byte
		if i, ok := first[run.refineID]; ok {
			out = c.refined[i]
			if tag := run.formatTag(format); c.runs[i].formatTag(format) != tag {
				out = retag(out, tag)
			}
		} else {
			var malformed int64
			var err error
			if out, malformed, err = run.refine(format, raws); err != nil {
				c.err = err
				return c
			}
			// Parsing does not depend on the SSP: a record one enforcement point cannot
			// parse, the others cannot either.
			c.malformed = max(c.malformed, malformed)
			first[run.refineID] = len(c.runs)
		}
		c.runs, c.refined = append(c.runs, run), append(c.refined, out)
	}
	return c
}

// retag copies tagged records with another format tag.
func retag(recs [][]byte, tag byte) [][]byte {
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = append([]byte{tag}, r[1:]...)
	}
	return out
}

// enqueue queues a refined chunk durably, for every SSA (and with its position in a followed
// file) in one commit, and wakes the delivery loops. A requester whose queued records reach
// max-queued-per-peer gets no more until it acknowledges some: what is left out is counted
// in st and in a metric, and logged when a queue fills.
func (m *manager) enqueue(c refinedChunk, st *IngestStats) error {
	if c.err != nil {
		return c.err
	}
	m.a.m.ingested.Add(float64(c.raws))
	room := m.reserve(c)
	batches := make([]storage.Batch, len(c.runs))
	for i, run := range c.runs {
		refined := c.refined[i]
		n := room[i]
		if full := n < len(refined); full {
			m.a.m.overflow.Add(float64(len(refined) - n))
			if !run.full.Swap(true) {
				m.a.log.Warn("records not queued until the requester acknowledges some: its queue is full", "ssa", run.ssa.ID,
					"peer", run.peer, "max-queued-per-peer", m.a.cfg.MaxQueuedPerPeer)
			}
		} else if len(refined) > 0 && run.full.Swap(false) {
			m.a.log.Info("records queued again: the requester acknowledged some", "ssa", run.ssa.ID, "peer", run.peer)
		}
		batches[i] = storage.Batch{SSAID: run.ssa.ID, Records: refined[:n], Ingested: uint64(c.raws), Dropped: uint64(c.raws - len(refined))}
	}
	if len(batches) == 0 && c.pos == nil {
		return nil
	}
	now := time.Now()
	lasts, err := m.a.store.EnqueueAll(batches, c.pos)
	if err != nil {
		for i, run := range c.runs {
			run.backlog.Add(-int64(room[i]))
		}
		return fmt.Errorf("queue records: %w", err)
	}
	for i, run := range c.runs {
		refined, last := batches[i].Records, lasts[i]
		st.count(run.ssa.ID, len(refined), len(c.refined[i])-len(refined))
		m.a.m.queued.Add(float64(len(refined)))
		if len(refined) > 0 {
			run.mu.Lock()
			run.enqueued = append(run.enqueued, enqueueMark{last: last, at: now})
			run.mu.Unlock()
			m.wake(run)
		}
	}
	return nil
}

// reserve takes room in the queues of the requesters for the records of c, run by run, and
// says how many of each run's it got: what the backlogs of each requester's SSAs leave under
// max-queued-per-peer.
func (m *manager) reserve(c refinedChunk) []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	queued := map[peer.ID]int64{}
	for _, r := range m.runs {
		if r.role == protocol.RoleProvider {
			queued[r.peer] += r.backlog.Load()
		}
	}
	room := make([]int, len(c.runs))
	for i, run := range c.runs {
		n := max(0, min(int64(len(c.refined[i])), m.a.cfg.MaxQueuedPerPeer-queued[run.peer]))
		queued[run.peer] += n
		run.backlog.Add(n)
		room[i] = int(n)
	}
	return room
}

// Records are kept, on both sides, behind one byte: the index of their format in the SSA's
// information list (unknownFormat for a format the SSA does not name), so that a batch never
// mixes formats and a forwarded record says what it is.
// The requester sets quarantineBit in the tag of a record that does not comply with the SSA
// (policy.Verify found something, or its whole batch is at fault): it is kept, shown by
// Records, and never forwarded to a sink. A record of a format the SSA does not name
// (unknownFormat) never complies.
const (
	unknownFormat = 0x7f
	quarantineBit = 0x80
)

func (run *agreementRun) formatTag(format string) byte {
	if i := slices.IndexFunc(run.ssa.Information, func(in protocol.Information) bool { return in.Format == format }); i >= 0 && i < unknownFormat {
		return byte(i)
	}
	return unknownFormat
}

// untag splits a kept record into its format ("" if unknown) and its bytes.
func (run *agreementRun) untag(data []byte) (string, []byte) {
	if len(data) == 0 || int(data[0]&^quarantineBit) >= len(run.ssa.Information) {
		return "", data[min(len(data), 1):]
	}
	return run.ssa.Information[data[0]&^quarantineBit].Format, data[1:]
}

// quarantined reports whether a kept record does not comply with the SSA.
func quarantined(data []byte) bool { return len(data) > 0 && data[0]&quarantineBit != 0 }

// refine runs the SSP enforcement point of run over raws (step ⑧), tagging each refined
// record with its format. It counts the records the enforcement point could not parse.
func (run *agreementRun) refine(format string, raws [][]byte) (out [][]byte, malformed int64, err error) {
	tag := run.formatTag(format)
	run.mu.Lock()
	defer run.mu.Unlock()
	e, ok := run.enforcers[format]
	if !ok {
		var err error
		if e, err = policy.NewEnforcer(run.ssp, format, policy.Config{Year: time.Now().Year()}); err != nil {
			return nil, 0, err
		}
		run.enforcers[format] = e
	}
	var buf []byte
	for _, raw := range raws {
		buf, err = e.Refine(buf[:0], raw)
		if err != nil {
			malformed++
			continue
		}
		if len(buf) == 0 {
			continue // not to be shared
		}
		out = append(out, append([]byte{tag}, buf[:len(buf)-1]...))
	}
	return out, malformed, nil
}

// deliverLoop is step ⑨ for one SSA: it sends the queued records in order, in signed
// batches over one stream, with at most deliveryWindow batches awaiting acknowledgement (so a
// slow requester holds back the provider's disk queue, not its memory), only inside the
// schedule. After a failure it starts again from the last acknowledged record; the requester
// skips what it already holds. It ends when the SSA stops being in force, or when there is
// nothing to send and nothing to wait for (wake starts it again).
func (m *manager) deliverLoop(ctx context.Context, run *agreementRun) {
	d := run.delivery
	if d == nil {
		st, err := m.a.store.OutboxState(run.ssa.ID)
		if err != nil {
			m.a.log.Error("read delivery state", "ssa", run.ssa.ID, "err", err)
			return // the next wake tries again
		}
		d = &delivery{m: m, run: run, acked: st.Acked}
		run.delivery = d
	}
	for ctx.Err() == nil {
		err := d.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.a.log.Debug("delivery interrupted; will resume", "ssa", run.ssa.ID, "err", err)
		}
		if dur := d.retry(err); dur > 0 {
			if !d.wait(ctx, dur) {
				return
			}
		} else if run.park() {
			return
		}
	}
}

// retry is how long the loop waits, after a session that ended with err, before it tries
// again without new records: retryDelivery after a failure, until the schedule starts
// (maxScheduleWait at most, so that a change of the wall clock is seen) before it does;
// otherwise 0: it waits for new records only, without a goroutine, so an idle SSA costs
// nothing.
func (d *delivery) retry(err error) time.Duration {
	now := time.Now()
	switch start := d.run.ssa.Schedule.Start; {
	case err != nil:
		return retryDelivery
	case start != 0 && now.Before(start.Std()):
		return min(start.Std().Sub(now), maxScheduleWait)
	}
	return 0
}

// deliveryWindow is how many batches may await acknowledgement.
const deliveryWindow = 4

// delivery is the state of one SSA's delivery loop (owned by its goroutine).
type delivery struct {
	m     *manager
	run   *agreementRun
	acked uint64
}

// wait waits for new records (a kick) or for dur; it reports false when ctx ends.
func (d *delivery) wait(ctx context.Context, dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-d.run.kick:
	case <-t.C:
	}
	return true
}

// session delivers over one stream until there is nothing to send for a while, the stream
// fails, or ctx ends.
func (d *delivery) session(ctx context.Context) error {
	id := d.run.ssa.ID
	if !d.run.ssa.Schedule.Contains(protocol.FromTime(time.Now())) {
		return nil
	}
	if recs, err := d.m.a.store.Pending(id, d.acked, 1, 1); err != nil || len(recs) == 0 {
		return err
	}
	timeout := time.Duration(d.m.a.cfg.MessageTimeout)
	octx, cancel := context.WithTimeout(ctx, timeout)
	d.m.a.findAddrs(octx, d.run.peer)
	st, err := d.m.a.host.NewStream(octx, d.run.peer, ProtocolExchange)
	cancel()
	if err != nil {
		return fmt.Errorf("open exchange stream: %w", err)
	}
	acks := make(chan *protocol.BatchAck, deliveryWindow)
	readErr := make(chan error, 1)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // the acknowledgement reader, owned by this session
		defer close(done)
		r := bufio.NewReader(st)
		for {
			raw, err := readFrame(r, protocol.MaxMessageSize)
			var ack *protocol.BatchAck
			if err == nil {
				ack, err = protocol.DecodeBatchAck(raw)
			}
			if err != nil {
				readErr <- err
				return
			}
			select {
			case acks <- ack:
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		st.Reset() // ends the reader's read
		<-done
	}()
	sent := d.acked
	var inflight []uint64 // last record of each unacknowledged batch
	idle := time.NewTimer(10 * time.Second)
	defer idle.Stop()
	for {
		for len(inflight) < deliveryWindow && d.run.ssa.Schedule.Contains(protocol.FromTime(time.Now())) {
			recs, err := d.m.a.store.Pending(id, sent, batchRecords, batchBytes)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				break
			}
			last, err := d.send(st, recs)
			if err != nil {
				return err
			}
			inflight, sent = append(inflight, last), last
		}
		st.SetReadDeadline(time.Now().Add(timeout))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return fmt.Errorf("read acknowledgement: %w", err)
		case ack := <-acks:
			if ack.Error != "" {
				return fmt.Errorf("the requester refused the batch: %s", ack.Error)
			}
			if err := d.acknowledge(ack.Last); err != nil {
				return err
			}
			for len(inflight) > 0 && inflight[0] <= ack.Last {
				inflight = inflight[1:]
			}
			if ack.Last < sent && len(inflight) == 0 {
				sent = ack.Last // the requester lacks records: send again from there
			}
		case <-d.run.kick:
		case <-idle.C:
			if len(inflight) == 0 {
				return nil // nothing to send for a while: let the stream go
			}
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(10 * time.Second)
	}
}

// send signs recs (up to a change of format) as one batch and writes it.
func (d *delivery) send(st network.Stream, recs []storage.QueuedRecord) (uint64, error) {
	run := d.run
	tag := recs[0].Data[0]
	b := &protocol.Batch{SSAID: run.ssa.ID, SSPHash: run.ssp.Hash(), First: recs[0].Seq, Sent: time.Now().UnixMilli()}
	b.Format, _ = run.untag(recs[0].Data)
	mark := run.ssp.Marking()
	b.TLP, b.Marking = mark.TLP, mark.MarkingRef
	for _, r := range recs {
		if r.Data[0] != tag {
			break // the next batch carries the next format
		}
		_, rec := run.untag(r.Data)
		b.Records = append(b.Records, rec)
	}
	raw, err := protocol.SealBatch(d.m.a.self, b)
	if err != nil {
		return 0, err
	}
	st.SetWriteDeadline(time.Now().Add(time.Duration(d.m.a.cfg.MessageTimeout)))
	if err := writeFrame(st, raw); err != nil {
		return 0, err
	}
	if !run.ssa.Schedule.Contains(protocol.FromTime(time.Now())) {
		run.sentOutside.Add(1)
	}
	if err := d.m.a.store.MarkSent(run.ssa.ID, b.Last()); err != nil {
		d.m.a.log.Debug("record sent counter", "ssa", run.ssa.ID, "err", err)
	}
	return b.Last(), nil
}

// acknowledge records durably that the requester holds every record up to last.
func (d *delivery) acknowledge(last uint64) error {
	if last <= d.acked {
		return nil
	}
	if err := d.m.a.store.Ack(d.run.ssa.ID, last); err != nil {
		return fmt.Errorf("record acknowledgement: %w", err)
	}
	d.run.acknowledged(last, time.Now())
	d.run.backlog.Add(-int64(last - d.acked))
	d.m.a.m.delivered.Add(float64(last - d.acked))
	d.acked = last
	return nil
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

// handleExchange is steps ⑩–⑪ on the requester: each batch is verified, stored exactly once
// and acknowledged, in order. Verifying a batch overlaps with storing the previous one.
func (m *manager) handleExchange(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if !m.providedBy(remote) {
		// Nothing of a stranger's is read: batches are up to protocol.MaxBatchSize.
		m.a.log.Debug("exchange stream refused: no SSA in force with this provider", "peer", remote)
		st.Reset()
		return
	}
	r := bufio.NewReader(st)
	timeout := time.Duration(m.a.cfg.MessageTimeout)
	checked := make(chan *checkedBatch, 1)
	done := make(chan struct{})
	go func() { // the storing stage, owned by this handler: it ends when checked is closed
		defer close(done)
		failed := false
		for c := range checked {
			if failed {
				continue
			}
			ack, err := m.storeBatch(c, remote)
			var b []byte
			if err == nil {
				b, err = ack.Encode()
			}
			if err == nil {
				st.SetWriteDeadline(time.Now().Add(timeout))
				err = writeFrame(st, b)
			}
			if err != nil {
				if errors.Is(err, storage.ErrDiskFull) {
					m.a.disk.refused() // not acknowledged: sent again later; logged once
				} else {
					m.a.log.Warn("batch not stored", "peer", remote, "err", err)
				}
				st.Reset()
				failed = true
			}
		}
	}()
	defer func() {
		close(checked)
		<-done
	}()
	for {
		st.SetReadDeadline(time.Now().Add(timeout))
		raw, err := readFrame(r, protocol.MaxBatchSize)
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
			} else {
				st.Reset()
			}
			return
		}
		c, err := m.checkBatch(raw, remote)
		if err != nil {
			m.a.refusals.warn(remote, "batch refused", err, "proto", ProtocolExchange)
			st.Reset()
			return
		}
		checked <- c
	}
}

// checkedBatch is a batch verified against its SSA and SSP, ready to be stored.
type checkedBatch struct {
	raw        []byte
	b          *protocol.Batch
	run        *agreementRun
	refused    string // why the batch cannot be taken at all
	findings   []RecordFinding
	violations uint64
	bad        []bool // the records that do not comply; violations counts them
}

// checkBatch verifies a batch's signature, that it belongs to an SSA in force with its
// sender, and every record against the SSP.
func (m *manager) checkBatch(raw []byte, remote peer.ID) (*checkedBatch, error) {
	b, err := protocol.OpenBatch(raw, remote)
	if err != nil {
		return nil, err
	}
	c := &checkedBatch{raw: raw, b: b}
	if held := m.requested(b.SSAID); held != nil && held.peer == remote {
		if at := m.cancelledAt(held); !at.IsZero() {
			// Refused, so not stored, forwarded nor acknowledged; kept as evidence only.
			c.refused = fmt.Sprintf("SSA %s was cancelled at %s: no record of it is taken", b.SSAID, at.UTC().Format(time.RFC3339))
			c.run = held
			c.findings = []RecordFinding{{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingOutsideSchedule,
				Text: fmt.Sprintf("the batch, sent at %s, arrived after this agent had cancelled the SSA or received its cancellation (at %s): refused",
					time.UnixMilli(b.Sent).UTC().Format(time.RFC3339Nano), at.UTC().Format(time.RFC3339Nano))}}}}
			return c, nil
		}
	}
	run := m.run(b.SSAID)
	if run == nil || run.role != protocol.RoleRequester || run.peer != remote {
		c.refused = "no SSA " + b.SSAID + " in force with this provider"
		return c, nil
	}
	c.run = run
	if b.SSPHash != run.ssp.Hash() {
		c.findings = append(c.findings, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingWrongFormat,
			Text: "the batch was refined under SSP " + b.SSPHash + ", not the agreed " + run.ssp.Hash()}}})
	}
	// The provider signs when it sent the batch; that time must be within the schedule, and
	// near enough to when the batch arrives (protocol.MaxSkew, as for negotiation messages)
	// that a batch sent after the schedule's end cannot claim an earlier time.
	sent, now := time.UnixMilli(b.Sent), time.Now()
	switch {
	case !run.ssa.Schedule.Contains(protocol.FromTime(sent)):
		c.findings = append(c.findings, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingOutsideSchedule,
			Text: "the batch was sent outside the SSA's schedule"}}})
	case sent.Sub(now).Abs() > protocol.MaxSkew:
		c.findings = append(c.findings, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingOutsideSchedule,
			Text: fmt.Sprintf("the batch says it was sent at %s but arrived at %s: more than %v apart, so its time cannot show it was sent within the schedule",
				sent.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), protocol.MaxSkew)}}})
	}
	batchFault := len(c.findings) > 0 // then every record is at fault, whatever it holds
	c.bad = make([]bool, len(b.Records))
	for i, rec := range b.Records {
		f := policy.Verify(run.ssp, b.Format, rec)
		if len(f) > 0 {
			c.findings = append(c.findings, RecordFinding{Seq: b.First + uint64(i), Findings: f})
		}
		if c.bad[i] = batchFault || len(f) > 0; c.bad[i] {
			c.violations++
		}
	}
	return c, nil
}

// maxFindingsKept is how many records' findings the evidence of one batch keeps (the first;
// the batch itself holds every record).
const maxFindingsKept = 1000

// storeBatch stores a checked batch exactly once, keeps any violation as evidence (the
// provider's signed batch with the findings) and returns the acknowledgement.
func (m *manager) storeBatch(c *checkedBatch, remote peer.ID) (*protocol.BatchAck, error) {
	b := c.b
	if c.refused != "" {
		if c.run != nil { // a batch of a cancelled SSA: quarantined
			m.a.m.quarantined.Add(float64(len(b.Records)))
			if err := m.a.store.PutEvidence(storage.Evidence{SSAID: b.SSAID, First: b.First, Batch: c.raw,
				Findings: mustJSON(c.findings), ReceivedAt: time.Now()}); err != nil {
				m.a.log.Debug("evidence not kept", "ssa", b.SSAID, "err", err)
			}
			m.a.log.Warn("batch of a cancelled SSA refused: evidence kept", "ssa", b.SSAID, "peer", remote, "records", len(b.Records))
		}
		return &protocol.BatchAck{SSAID: b.SSAID, Error: c.refused}, nil
	}
	now := time.Now()
	tag := c.run.formatTag(b.Format)
	kept := make([][]byte, len(b.Records))
	for i, r := range b.Records {
		t := tag
		if c.bad[i] {
			t |= quarantineBit
		}
		kept[i] = append([]byte{t}, r...)
	}
	stored, last, err := m.a.store.Receive(b.SSAID, b.First, kept, now, c.violations)
	if errors.Is(err, storage.ErrGap) {
		st, serr := m.a.store.InboxState(b.SSAID)
		if serr != nil {
			return nil, serr
		}
		return &protocol.BatchAck{SSAID: b.SSAID, Last: st.Last}, nil
	}
	if err != nil {
		return nil, err
	}
	m.a.m.received.Add(float64(stored))
	if len(c.findings) > 0 {
		m.a.m.violations.Add(float64(c.violations))
		m.a.log.Warn("SSA violated: evidence kept", "ssa", b.SSAID, "peer", remote, "records", c.violations)
		// The records are stored and counted: evidence that cannot be kept (the SSA keeps
		// its first batches only) must not hold back the acknowledgement, or the provider
		// would send the batch again and again.
		findings := c.findings[:min(len(c.findings), maxFindingsKept)]
		if err := m.a.store.PutEvidence(storage.Evidence{SSAID: b.SSAID, First: b.First, Batch: c.raw,
			Findings: mustJSON(findings), ReceivedAt: now}); err != nil {
			m.a.log.Warn("evidence not kept", "ssa", b.SSAID, "err", err)
		}
	}
	m.a.sinks.kick()
	return &protocol.BatchAck{SSAID: b.SSAID, Last: last}, nil
}

// RecordFinding is what verification found wrong with one delivered record.
type RecordFinding struct {
	Seq      uint64           `json:"seq"`
	Findings []policy.Finding `json:"findings"`
}
