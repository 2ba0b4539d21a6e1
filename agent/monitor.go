package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Monitoring and assessment (clause 7.1 item 3, Appendix I steps ⑫–⑭): the requester's
// management point asks the provider's for the fulfilment state of an SSA, compares the signed
// report with its own counts and verification findings, and gives the SSA a verdict.

// Thresholds past which a fulfilled SSA is degraded.
const (
	lagRecords = 10 * batchRecords
	lagMillis  = 5000
)

// Verdicts.
const (
	VerdictFulfilled = "fulfilled"
	VerdictDegraded  = "degraded"
	VerdictViolated  = "violated"
)

// Life-cycle phases of clause 9.1 as ssanet shows them.
const (
	PhaseNegotiation    = "negotiation"
	PhaseImplementation = "implementation"
	PhaseExecution      = "execution"
	PhaseAssessment     = "assessment"
)

// Assessment is step ⑭: both sides' figures and the verdict.
type Assessment struct {
	SSAID    string           `json:"ssa_id"`
	Phase    string           `json:"phase"`
	Verdict  string           `json:"verdict"`
	Reasons  []string         `json:"reasons,omitempty"`
	Provider *protocol.Report `json:"provider,omitempty"`
	Local    InboxView        `json:"requester"`
	Evidence []EvidenceView   `json:"evidence,omitempty"`
	// Disk is this agent's free space; below the reserve it refuses the batches it receives.
	Disk *storage.Space `json:"disk,omitempty"`
	Time time.Time      `json:"time"`
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
func phase(s *protocol.SSA, state protocol.State, now time.Time) string {
	switch {
	case state == protocol.StateAnnulled || cancelling(state) || (s != nil && s.Schedule.End != 0 && protocol.FromTime(now) >= s.Schedule.End):
		// A cancelled SSA is no longer executed from the moment the cancellation is
		// committed, whether or not its annulment is confirmed yet (the state says which).
		return PhaseAssessment
	case state != protocol.StateApproved || s == nil:
		return PhaseNegotiation
	case s.Schedule.Start != 0 && protocol.FromTime(now) < s.Schedule.Start:
		return PhaseImplementation
	}
	return PhaseExecution
}

// handleMonitor answers a requester's report request (step ⑬) for an SSA this agent provides.
func (m *manager) handleMonitor(st network.Stream) {
	defer st.Close()
	st.SetDeadline(time.Now().Add(time.Duration(m.a.cfg.MessageTimeout)))
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
	rep := m.report(req.SSAID, st.Conn().RemotePeer().String())
	b, err := protocol.SealReport(m.a.self, rep)
	if err != nil || writeFrame(st, b) != nil {
		st.Reset()
	}
}

func (m *manager) report(ssaID, requester string) *protocol.Report {
	rep := &protocol.Report{SSAID: ssaID, Time: time.Now().UnixMilli()}
	run := m.run(ssaID)
	var s *protocol.SSA
	if run != nil && run.role == protocol.RoleProvider && run.ssa.Participants.Requester.PeerID == requester {
		s = run.ssa
		rep.SSPHash = run.ssp.Hash()
		rep.LatencyP50, rep.LatencyP95, rep.LatencyP99 = run.latencies()
		rep.SentOutside = run.sentOutside.Load()
	} else if a, err := m.a.store.Agreement(ssaID); err == nil && a.Participants.Requester.PeerID == requester {
		s = a // no longer in force: the figures of its life
	} else {
		rep.Error = "no SSA " + ssaID + " provided to you"
		return rep
	}
	st, err := m.a.store.OutboxState(ssaID)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Ingested, rep.Refined, rep.Dropped, rep.Sent, rep.Acked = st.Ingested, st.Refined, st.Dropped, st.Sent, st.Acked
	rep.InSchedule = s.Schedule.Contains(protocol.FromTime(time.Now()))
	rep.IngestPaused = m.a.disk.isPaused()
	return rep
}

// Monitor is steps ⑫–⑭ for an SSA this agent requested.
func (a *Agent) Monitor(ctx context.Context, ssaID string) (*Assessment, error) {
	rec, err := a.Negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	if rec.Role != protocol.RoleRequester {
		return nil, fmt.Errorf("%s is provided by this agent; monitor it from the requester", ssaID)
	}
	s, err := a.store.Agreement(rec.SSAID)
	if err != nil {
		return nil, fmt.Errorf("SSA %s was never agreed: nothing to monitor", ssaID)
	}
	now := time.Now()
	as := &Assessment{SSAID: s.ID, Phase: phase(s, rec.State, now), Time: now}
	in, err := a.store.InboxState(s.ID)
	if err != nil {
		return nil, err
	}
	as.Local = InboxView{Last: in.Last, Stored: in.Stored, Deleted: in.Deleted, Violations: in.Violations}
	ev, err := a.store.Evidence(s.ID)
	if err != nil {
		return nil, err
	}
	for _, e := range ev {
		as.Evidence = append(as.Evidence, EvidenceView{First: e.First, ReceivedAt: e.ReceivedAt, Findings: e.Findings, BatchBytes: len(e.Batch)})
	}
	as.Provider, err = a.mgr.fetchReport(ctx, s)
	if err != nil {
		as.Reasons = append(as.Reasons, "the provider did not report: "+err.Error())
	}
	if sp, err := a.store.Space(); err == nil {
		as.Disk = &sp
	}
	as.Verdict, as.Reasons = verdict(a.mgr.run(s.ID), as, as.Reasons)
	return as, nil
}

func (m *manager) fetchReport(ctx context.Context, s *protocol.SSA) (*protocol.Report, error) {
	p, err := peerOf(s.Participants.Provider)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(m.a.cfg.MessageTimeout))
	defer cancel()
	m.a.findAddrs(ctx, p)
	st, err := m.a.host.NewStream(ctx, p, ProtocolMonitor)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(time.Duration(m.a.cfg.MessageTimeout)))
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

// verdict compares both sides' figures: violated when any delivered record broke the SSP, the
// provider refined under another SSP, sent outside the schedule, or claims records delivered
// that this agent does not hold; degraded when the provider cannot report or lags; else
// fulfilled.
func verdict(run *agreementRun, as *Assessment, reasons []string) (string, []string) {
	v := VerdictFulfilled
	worse := func(to, why string) {
		reasons = append(reasons, why)
		if v == VerdictFulfilled || to == VerdictViolated {
			v = to
		}
	}
	if d := as.Disk; d != nil && d.Paused {
		worse(VerdictDegraded, fmt.Sprintf("this agent's disk is below its reserve (%d bytes free, %d kept): received batches are not acknowledged until space is freed", d.Free, d.Reserve))
	}
	if as.Local.Violations > 0 {
		worse(VerdictViolated, fmt.Sprintf("%d delivered records break the SSP (evidence: %d signed batches)", as.Local.Violations, len(as.Evidence)))
	}
	rep := as.Provider
	switch {
	case rep == nil:
		worse(VerdictDegraded, "no fulfilment report from the provider")
	case rep.Error != "":
		worse(VerdictDegraded, "the provider reports: "+rep.Error)
	default:
		if run != nil && rep.SSPHash != run.ssp.Hash() {
			worse(VerdictViolated, "the provider enforces SSP "+rep.SSPHash+", not the agreed "+run.ssp.Hash())
		}
		if rep.SentOutside > 0 {
			worse(VerdictViolated, fmt.Sprintf("the provider sent %d batches outside the schedule", rep.SentOutside))
		}
		if rep.Acked > as.Local.Last {
			worse(VerdictViolated, fmt.Sprintf("the provider counts %d records acknowledged, this agent holds %d", rep.Acked, as.Local.Last))
		}
		if backlog := rep.Refined - rep.Acked; backlog > lagRecords && as.Phase == PhaseExecution {
			worse(VerdictDegraded, fmt.Sprintf("%d refined records wait for delivery", backlog))
		}
		if rep.IngestPaused {
			worse(VerdictDegraded, "the provider's disk is below its reserve: it takes no records until space is freed there")
		}
		if rep.LatencyP99 > lagMillis {
			worse(VerdictDegraded, fmt.Sprintf("delivery latency p99 is %d ms", rep.LatencyP99))
		}
	}
	return v, reasons
}

// AssessmentDir holds the assessment report of each SSA whose schedule has ended.
const AssessmentDir = "assessments"

// assessmentPath is the file of the assessment report of SSA ssaID in dir: the first 16 bytes
// of the SHA-256 of the ID, in hex, and ".json". The ID may be the peer's choice (a provider's
// revision names its new version), so the name is derived from it rather than made of it:
// decoders refuse an ID out of protocol's grammar, but a file name that holds no text a peer
// chose stays inside dir whatever the ID, also one read from an older store or allowed by a
// later grammar. The report names its SSA (ssa_id) and the log line its file.
func assessmentPath(dir, ssaID string) string {
	sum := sha256.Sum256([]byte(ssaID))
	return filepath.Join(dir, hex.EncodeToString(sum[:16])+".json")
}

// assessmentLoop produces, once, the assessment report of every requested SSA whose schedule
// has ended (clause 9.1, the assessment step): HOME/assessments/<hash of the SSA ID>.json
// (see assessmentPath).
func (m *manager) assessmentLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	dir := filepath.Join(m.a.home, AssessmentDir)
	for {
		for _, run := range m.requesterRuns() {
			end := run.ssa.Schedule.End
			path := assessmentPath(dir, run.ssa.ID)
			if end == 0 || protocol.FromTime(time.Now()) < end {
				continue
			}
			if _, err := os.Stat(path); err == nil {
				continue
			}
			as, err := m.a.Monitor(ctx, run.ssa.ID)
			if err != nil {
				m.a.log.Warn("assessment", "ssa", run.ssa.ID, "err", err)
				continue
			}
			if err := writeJSONFile(path, as); err != nil {
				m.a.log.Error("write assessment", "ssa", run.ssa.ID, "err", err)
				continue
			}
			m.a.log.Info("SSA assessed at the end of its schedule", "ssa", run.ssa.ID, "verdict", as.Verdict, "report", path)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func writeJSONFile(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
