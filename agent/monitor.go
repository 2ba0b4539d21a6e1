package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Monitoring and assessment (clause 7.1 item 3, Appendix I steps ⑫–⑭): the requester's
// management point asks the provider's for the fulfilment state of an SSA, compares the signed
// report with its own counts and verification findings, and gives the SSA a verdict.

// Stream protocols of the exchange and monitoring.
const (
	ProtocolExchange = "/ssanet/exchange/1.0.0"
	ProtocolMonitor  = "/ssanet/monitor/1.0.0"
)

// Verdict is the requester's judgement of whether an SSA is fulfilled (step ⑭).
type Verdict string

// Verdicts, from best to worst.
const (
	VerdictFulfilled Verdict = "fulfilled"
	VerdictDegraded  Verdict = "degraded"
	VerdictViolated  Verdict = "violated"
)

// Phase is an SSA's place in the life cycle of clause 9.1.
type Phase string

// Life-cycle phases of clause 9.1 as ssanet shows them (template development happens
// before an SSA exists, in the operators' templates and offers).
const (
	PhaseNegotiation    Phase = "negotiation"
	PhaseImplementation Phase = "implementation"
	PhaseExecution      Phase = "execution"
	PhaseAssessment     Phase = "assessment"
)

// Assessment is step ⑭: both sides' figures and the verdict.
type Assessment struct {
	SSAID    string           `json:"ssa_id"`
	Phase    Phase            `json:"phase"`
	Verdict  Verdict          `json:"verdict"`
	Reasons  []string         `json:"reasons,omitempty"`
	Provider *protocol.Report `json:"provider,omitempty"`
	Local    InboxView        `json:"requester"`
	Evidence []EvidenceView   `json:"evidence,omitempty"`
	// Disk is this agent's free space; below the reserve it refuses the batches it receives.
	Disk *storage.Space `json:"disk,omitempty"`
	// Sinks are this agent's sinks, with their progress through this SSA's records alone.
	Sinks []SinkState `json:"sinks,omitempty"`
	Time  time.Time   `json:"time"`
}

// InboxView is the requester's own count of an SSA's records.
type InboxView struct {
	Last       uint64 `json:"last"`       // records 1..Last were all received
	Stored     uint64 `json:"stored"`     // records held now
	Deleted    uint64 `json:"deleted"`    // records deleted by retention
	Violations uint64 `json:"violations"` // records with verification findings
}

// EvidenceView is a batch that carried violations.
type EvidenceView struct {
	First      uint64          `json:"first"`
	ReceivedAt time.Time       `json:"received_at"`
	Findings   json.RawMessage `json:"findings"`
	BatchBytes int             `json:"batch_bytes"`
}

// phase places an SSA in its life cycle at now.
func phase(s *protocol.SSA, state protocol.State, now time.Time) Phase {
	switch {
	case state == protocol.StateAnnulled || cancelling(state) || (s != nil && s.Schedule.End != 0 && protocol.FromTime(now) >= s.Schedule.End):
		// A cancelled SSA is no longer executed from the moment the cancellation is
		// committed, whether or not its annulment is confirmed yet (the state says which).
		return PhaseAssessment
	case !inForce(state) || s == nil:
		return PhaseNegotiation
	case s.Schedule.Start != 0 && protocol.FromTime(now) < s.Schedule.Start:
		return PhaseImplementation
	}
	return PhaseExecution
}

// inForce reports whether an SSA is in force in state st: approved, or approved with a
// revision pending (the version in force stays until the revision is confirmed).
func inForce(st protocol.State) bool {
	return st == protocol.StateApproved || st == protocol.StateRevisionSent || st == protocol.StateRevisionReceived
}

// monitored is what monitoring needs of the management point.
type monitored interface {
	// run is the SSA in force with this ID, or nil.
	run(ssaID string) *agreementRun
	// requesterRuns are the requested SSAs whose records this agent holds.
	requesterRuns() []*agreementRun
}

// monitorConfig is what the monitor is told beyond what it reads.
type monitorConfig struct {
	Log     *slog.Logger
	Now     func() time.Time
	Timeout time.Duration // of each message
	// Dir holds the assessment reports (HOME/assessments).
	Dir string
	// Negotiation looks up the negotiation of an SSA, with an error that names it if unknown.
	Negotiation func(ssaID string) (*storage.Negotiation, error)
	// Paused reports whether a full disk pauses records (diskWatch.isPaused).
	Paused func() bool
	// Sinks is the state of every sink for one SSA (sinks.stateOf).
	Sinks func(ssaID string) ([]SinkState, error)
	// Held says why the delivery of an SSA waits, or "" (deliverer.heldWhy).
	Held func(ssaID string) string
}

// monitor is the monitoring and assessment of the management point: it answers report
// requests for the SSAs this agent provides (provider) and assesses the SSAs it requested
// (requester).
type monitor struct {
	runs  monitored
	store *storage.Store
	self  *protocol.Identity
	dial  dialer
	cfg   monitorConfig
}

func newMonitor(runs monitored, st *storage.Store, self *protocol.Identity, dial dialer, cfg monitorConfig) *monitor {
	return &monitor{runs: runs, store: st, self: self, dial: dial, cfg: cfg}
}

// handleMonitor answers a requester's report request (step ⑬) for an SSA this agent provides.
func (mo *monitor) handleMonitor(st network.Stream) {
	defer st.Close()
	if err := st.SetDeadline(time.Now().Add(mo.cfg.Timeout)); err != nil {
		st.Reset()
		return
	}
	raw, err := readFrame(bufio.NewReader(st), 4096)
	if err != nil {
		st.Reset()
		return
	}
	req, err := protocol.DecodeReportRequest(raw)
	if err != nil {
		st.Reset()
		return
	}
	rep := mo.report(req.SSAID, st.Conn().RemotePeer().String())
	b, err := protocol.SealReport(mo.self, rep)
	if err != nil || writeFrame(st, b) != nil {
		st.Reset()
	}
}

// report is the fulfilment report of an SSA provided to requester (a peer ID).
func (mo *monitor) report(ssaID, requester string) *protocol.Report {
	now := mo.cfg.Now()
	rep := &protocol.Report{SSAID: ssaID, Time: now.UnixMilli()}
	run := mo.runs.run(ssaID)
	var s *protocol.SSA
	if run != nil && run.role == protocol.RoleProvider && run.ssa.Participants.Requester.PeerID == requester {
		s = run.ssa
		rep.SSPHash = run.ssp.Hash()
		rep.LatencyP50, rep.LatencyP95, rep.LatencyP99 = run.latencies()
		rep.SentOutside = run.sentOutside.Load()
		if mo.cfg.Held != nil {
			rep.DeliveryHeld = mo.cfg.Held(ssaID)
		}
		if out, ingested := run.ledger.snapshot(); ingested > 0 {
			rep.Outcomes, rep.OutcomesIngested, rep.OutcomesSince = out, ingested, run.ledger.since.UnixMilli()
			rep.OutcomesFilteredBy = run.ledger.filtered()
		}
	} else if a, err := mo.store.Agreement(ssaID); err == nil && a.Participants.Requester.PeerID == requester {
		s = a // no longer in force: the figures of its life
	} else {
		rep.Error = "no SSA " + ssaID + " provided to you"
		return rep
	}
	st, err := mo.store.OutboxState(ssaID)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Ingested, rep.Refined, rep.Dropped, rep.Sent, rep.Acked = st.Ingested, st.Refined, st.Dropped, st.Sent, st.Acked
	rep.InSchedule = s.Schedule.Contains(protocol.FromTime(now))
	rep.IngestPaused = mo.cfg.Paused()
	return rep
}

// fetchReport asks the provider of s for its fulfilment report (step ⑫).
func (mo *monitor) fetchReport(ctx context.Context, s *protocol.SSA) (*protocol.Report, error) {
	p, err := peerOf(s.Participants.Provider)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, mo.cfg.Timeout)
	defer cancel()
	st, err := mo.dial(ctx, p, ProtocolMonitor)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.SetDeadline(time.Now().Add(mo.cfg.Timeout)); err != nil {
		st.Reset()
		return nil, err
	}
	req, err := (&protocol.ReportRequest{SSAID: s.ID}).Encode()
	if err != nil {
		return nil, err
	}
	if err := writeFrame(st, req); err != nil {
		st.Reset()
		return nil, err
	}
	raw, err := readFrame(bufio.NewReader(st), protocol.MaxMessageSize)
	if err != nil {
		st.Reset()
		return nil, err
	}
	return protocol.OpenReport(raw, p)
}
