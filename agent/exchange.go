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
	batchRecords   = 1024
	batchBytes     = 1 << 20
	ingestChunk    = 1024
	retryDelivery  = time.Second
	latencySamples = 1024
)

// agreementRun is an SSA in force and the running parts that implement it.
type agreementRun struct {
	ssa  *protocol.SSA
	role protocol.Role
	peer peer.ID
	ssp  *policy.SSP

	// Provider side.
	mu          sync.Mutex // guards enforcers, enqueued and lat
	enforcers   map[string]*policy.Enforcer
	enqueued    []enqueueMark // when each range of sequence numbers was queued
	lat         []time.Duration
	kick        chan struct{}
	cancel      context.CancelFunc
	done        chan struct{}
	sentOutside atomic.Uint64
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
	wg   sync.WaitGroup
}

// newManager loads the key of the agent's masking secrets (created on first use) and
// implements every SSA in force.
func newManager(a *Agent) (*manager, error) {
	secret, err := loadOrCreateSecret(filepath.Join(a.home, PolicyKeyFile))
	if err != nil {
		return nil, err
	}
	m := &manager{a: a, keys: policy.DerivedKeys(secret), runs: map[string]*agreementRun{}}
	recs, err := a.store.Negotiations()
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if rec.State != protocol.StateApproved {
			continue
		}
		s, err := a.store.Agreement(rec.SSAID)
		if err != nil {
			return nil, fmt.Errorf("load SSA %s: %w", rec.SSAID, err)
		}
		m.implement(s, rec.Role)
	}
	return m, nil
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
	switch s.Status {
	case protocol.StatusApproval:
		if s.Supersedes != "" {
			m.stop(s.Supersedes)
		}
		m.implement(s, role)
	case protocol.StatusAnnulment:
		m.stop(s.ID)
	}
}

// implement translates an SSA into its SSP (step ⑥) and, on the provider, starts delivery.
func (m *manager) implement(s *protocol.SSA, role protocol.Role) {
	ssp, err := policy.Compile(s, m.keys)
	if err != nil {
		m.a.log.Error("SSA cannot be implemented", "ssa", s.ID, "err", err)
		return
	}
	other := s.Participants.Provider
	if role == protocol.RoleProvider {
		other = s.Participants.Requester
	}
	p, err := peerOf(other)
	if err != nil {
		m.a.log.Error("SSA names no peer", "ssa", s.ID, "err", err)
		return
	}
	run := &agreementRun{ssa: s, role: role, peer: p, ssp: ssp, enforcers: map[string]*policy.Enforcer{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.runs[s.ID]; ok {
		return
	}
	m.runs[s.ID] = run
	if role != protocol.RoleProvider {
		close(run.done)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	run.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(run.done)
		m.deliverLoop(ctx, run)
	}()
	m.a.log.Info("SSA implemented", "ssa", s.ID, "role", role.String(), "ssp", ssp.Hash())
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
	m.mu.Unlock()
	if !ok {
		return
	}
	if run.cancel != nil {
		run.cancel()
		<-run.done
		if err := m.a.store.DropOutbox(ssaID); err != nil {
			m.a.log.Error("drop the queue of an SSA no longer in force", "ssa", ssaID, "err", err)
		}
	}
	m.a.log.Info("SSA no longer in force", "ssa", ssaID)
}

func (m *manager) run(ssaID string) *agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs[ssaID]
}

func (m *manager) providerRuns() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*agreementRun
	for _, r := range m.runs {
		if r.role == protocol.RoleProvider {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *agreementRun) int { return strings.Compare(a.ssa.ID, b.ssa.ID) })
	return out
}

// close stops every delivery loop.
func (m *manager) close() {
	m.mu.Lock()
	for _, r := range m.runs {
		if r.cancel != nil {
			r.cancel()
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// IngestStats counts what one ingestion did.
type IngestStats struct {
	Records   int64            `json:"records"`
	Malformed int64            `json:"malformed"`
	Queued    map[string]int64 `json:"queued"` // refined records queued, per SSA
}

// Ingest is Appendix I steps ⑦–⑧: raw records of format from the security agent go to every
// SSA in force that shares that format, are refined under its SSP and queued durably for
// delivery. A malformed record is counted and skipped.
func (a *Agent) Ingest(ctx context.Context, format string, r io.Reader) (IngestStats, error) {
	st := IngestStats{Queued: map[string]int64{}}
	rr, err := policy.NewRecordReader(r, format)
	if err != nil {
		return st, err
	}
	chunk := make([][]byte, 0, ingestChunk)
	flush := func() error {
		err := a.mgr.ingest(format, chunk, st.Queued)
		chunk = chunk[:0]
		return err
	}
	for {
		rec, err := rr.Next()
		var bad *policy.BadRecord
		switch {
		case errors.Is(err, io.EOF):
			return st, flush()
		case errors.As(err, &bad):
			st.Malformed++
			a.log.Debug("malformed record skipped", "format", format, "line", bad.Line, "err", bad.Err)
			continue
		case err != nil:
			return st, errors.Join(err, flush())
		}
		st.Records++
		chunk = append(chunk, slices.Clone(rec))
		if len(chunk) == ingestChunk {
			if err := flush(); err != nil {
				return st, err
			}
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
	}
}

// ingest refines a chunk of raw records for every provider SSA that shares format.
func (m *manager) ingest(format string, raws [][]byte, queued map[string]int64) error {
	if len(raws) == 0 {
		return nil
	}
	for _, run := range m.providerRuns() {
		if !slices.Contains(run.ssp.Formats(), format) {
			continue
		}
		refined, err := run.refine(format, raws)
		if err != nil {
			return err
		}
		now := time.Now()
		last, err := m.a.store.Enqueue(run.ssa.ID, refined, uint64(len(raws)), uint64(len(raws)-len(refined)))
		if err != nil {
			return fmt.Errorf("queue records for %s: %w", run.ssa.ID, err)
		}
		if len(refined) > 0 {
			run.mu.Lock()
			run.enqueued = append(run.enqueued, enqueueMark{last: last, at: now})
			run.mu.Unlock()
			queued[run.ssa.ID] += int64(len(refined))
			select {
			case run.kick <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// refine runs the SSP enforcement point of run over raws (step ⑧). Each refined record is
// queued behind one byte: the index of its format in the SSA's information list, so that a
// batch never mixes formats.
func (run *agreementRun) refine(format string, raws [][]byte) ([][]byte, error) {
	tag := byte(slices.IndexFunc(run.ssa.Information, func(in protocol.Information) bool { return in.Format == format }))
	run.mu.Lock()
	defer run.mu.Unlock()
	e, ok := run.enforcers[format]
	if !ok {
		var err error
		if e, err = policy.NewEnforcer(run.ssp, format, policy.Config{Year: time.Now().Year()}); err != nil {
			return nil, err
		}
		run.enforcers[format] = e
	}
	var out [][]byte
	var buf []byte
	for _, raw := range raws {
		if skipEnforcement {
			out = append(out, append([]byte{tag}, raw...))
			continue
		}
		var err error
		buf, err = e.Refine(buf[:0], raw)
		if err != nil || len(buf) == 0 {
			continue // malformed (counted by the enforcer) or not to be shared
		}
		out = append(out, append([]byte{tag}, buf[:len(buf)-1]...))
	}
	return out, nil
}

// deliverLoop is step ⑨ for one SSA: it sends the queued records in order, in signed
// batches, one batch in flight (so a slow requester holds back the provider's disk queue, not
// its memory), only inside the schedule, until the SSA stops being in force.
func (m *manager) deliverLoop(ctx context.Context, run *agreementRun) {
	id := run.ssa.ID
	st, err := m.a.store.OutboxState(id)
	if err != nil {
		m.a.log.Error("read delivery state", "ssa", id, "err", err)
		return
	}
	acked := st.Acked
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-run.kick:
		case <-t.C:
		}
		return true
	}
	for ctx.Err() == nil {
		if !run.ssa.Schedule.Contains(protocol.FromTime(time.Now())) {
			if !wait(retryDelivery) {
				return
			}
			continue
		}
		recs, err := m.a.store.Pending(id, acked, batchRecords, batchBytes)
		if err != nil {
			m.a.log.Error("read queue", "ssa", id, "err", err)
		}
		if len(recs) == 0 {
			if !wait(retryDelivery) {
				return
			}
			continue
		}
		last, err := m.sendBatch(ctx, run, recs)
		if err != nil {
			if ctx.Err() == nil {
				m.a.log.Debug("delivery failed; will retry", "ssa", id, "err", err)
				wait(retryDelivery)
			}
			continue
		}
		if last > acked {
			if err := m.a.store.Ack(id, last); err != nil {
				m.a.log.Error("record acknowledgement", "ssa", id, "err", err)
				continue
			}
			run.acknowledged(last, time.Now())
			acked = last
		}
	}
}

// sendBatch signs recs as one batch, sends it and returns the requester's acknowledgement.
func (m *manager) sendBatch(ctx context.Context, run *agreementRun, recs []storage.QueuedRecord) (uint64, error) {
	tag := recs[0].Data[0]
	b := &protocol.Batch{SSAID: run.ssa.ID, SSPHash: run.ssp.Hash(), First: recs[0].Seq,
		Format: run.ssa.Information[tag].Format, Sent: time.Now().UnixMilli()}
	mark := run.ssp.Marking()
	b.TLP, b.Marking = mark.TLP, mark.MarkingRef
	for _, r := range recs {
		if r.Data[0] != tag {
			break // the next batch carries the next format
		}
		b.Records = append(b.Records, r.Data[1:])
	}
	raw, err := protocol.SealBatch(m.a.self, b)
	if err != nil {
		return 0, err
	}
	timeout := time.Duration(m.a.cfg.MessageTimeout)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := m.a.host.NewStream(sctx, run.peer, ProtocolExchange)
	if err != nil {
		return 0, fmt.Errorf("open exchange stream: %w", err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(st, raw); err != nil {
		st.Reset()
		return 0, err
	}
	m.a.store.MarkSent(run.ssa.ID, b.Last())
	if !run.ssa.Schedule.Contains(protocol.FromTime(time.Now())) {
		run.sentOutside.Add(1)
	}
	reply, err := readFrame(bufio.NewReader(st), protocol.MaxMessageSize)
	if err != nil {
		st.Reset()
		return 0, fmt.Errorf("read acknowledgement: %w", err)
	}
	ack, err := protocol.DecodeBatchAck(reply)
	if err != nil {
		return 0, err
	}
	if ack.Error != "" {
		return 0, fmt.Errorf("the requester refused the batch: %s", ack.Error)
	}
	return ack.Last, nil
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
// and acknowledged.
func (m *manager) handleExchange(st network.Stream) {
	remote := st.Conn().RemotePeer()
	r := bufio.NewReader(st)
	timeout := time.Duration(m.a.cfg.MessageTimeout)
	for {
		st.SetDeadline(time.Now().Add(timeout))
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
			} else {
				st.Reset()
			}
			return
		}
		ack, err := m.receiveBatch(raw, remote)
		if err != nil {
			m.a.log.Warn("batch refused", "peer", remote, "err", err)
			st.Reset()
			return
		}
		b, err := ack.Encode()
		if err == nil {
			err = writeFrame(st, b)
		}
		if err != nil {
			st.Reset()
			return
		}
	}
}

// receiveBatch checks one batch against the SSA and its SSP, stores it and keeps any
// violation as evidence.
func (m *manager) receiveBatch(raw []byte, remote peer.ID) (*protocol.BatchAck, error) {
	b, err := protocol.OpenBatch(raw, remote)
	if err != nil {
		return nil, err
	}
	run := m.run(b.SSAID)
	if run == nil || run.role != protocol.RoleRequester || run.peer != remote {
		return &protocol.BatchAck{SSAID: b.SSAID, Error: "no SSA " + b.SSAID + " in force with this provider"}, nil
	}
	now := time.Now()
	var findings []RecordFinding
	if b.SSPHash != run.ssp.Hash() {
		findings = append(findings, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingWrongFormat,
			Text: "the batch was refined under SSP " + b.SSPHash + ", not the agreed " + run.ssp.Hash()}}})
	}
	if !run.ssa.Schedule.Contains(protocol.FromTime(time.UnixMilli(b.Sent))) {
		findings = append(findings, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingOutsideSchedule,
			Text: "the batch was sent outside the SSA's schedule"}}})
	}
	violations := uint64(0)
	for i, rec := range b.Records {
		if f := policy.Verify(run.ssp, b.Format, rec); len(f) > 0 {
			findings = append(findings, RecordFinding{Seq: b.First + uint64(i), Findings: f})
			violations++
		}
	}
	if len(findings) > 0 && violations == 0 {
		violations = uint64(len(b.Records))
	}
	_, last, err := m.a.store.Receive(b.SSAID, b.First, b.Records, now, violations)
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
	if len(findings) > 0 {
		m.a.log.Warn("SSA violated: evidence kept", "ssa", b.SSAID, "peer", remote, "records", violations)
		if err := m.a.store.PutEvidence(storage.Evidence{SSAID: b.SSAID, First: b.First, Batch: raw,
			Findings: mustJSON(findings), ReceivedAt: now}); err != nil {
			return nil, err
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
