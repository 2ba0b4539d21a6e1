package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// Thresholds past which a fulfilled SSA is degraded: the provider's backlog and latency, and a
// sink that has more than sinkLagRecords of the SSA's records to forward and has not caught
// up for sinkLagFor. A sink that refuses records degrades the SSA at once.
const (
	lagRecords     = 10 * batchRecords
	lagMillis      = 5000
	sinkLagRecords = lagRecords
	sinkLagFor     = time.Minute
)

// AssessmentDir holds the assessment report of each SSA whose schedule has ended.
const AssessmentDir = "assessments"

// Monitor is steps ⑫–⑭ for an SSA this agent requested.
func (a *Agent) Monitor(ctx context.Context, ssaID string) (*Assessment, error) {
	return a.monitor.assess(ctx, ssaID)
}

// assess is steps ⑫–⑭ for an SSA this agent requested: its own figures, the provider's
// report, and the verdict.
func (mo *monitor) assess(ctx context.Context, ssaID string) (*Assessment, error) {
	rec, err := mo.cfg.Negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	if rec.Role != protocol.RoleRequester {
		return nil, fmt.Errorf("%s is provided by this agent; monitor it from the requester", ssaID)
	}
	id, err := agreedID(mo.store, rec)
	if err != nil {
		return nil, err
	}
	s, err := mo.store.Agreement(id)
	if err != nil {
		return nil, fmt.Errorf("SSA %s was never agreed: nothing to monitor", ssaID)
	}
	now := mo.cfg.Now()
	as := &Assessment{SSAID: s.ID, Phase: phase(s, rec.State, now), Time: now}
	in, err := mo.store.InboxState(s.ID)
	if err != nil {
		return nil, err
	}
	as.Local = InboxView{Last: in.Last, Stored: in.Stored, Deleted: in.Deleted, Violations: in.Violations}
	ev, err := mo.store.Evidence(s.ID)
	if err != nil {
		return nil, err
	}
	for _, e := range ev {
		as.Evidence = append(as.Evidence, EvidenceView{First: e.First, ReceivedAt: e.ReceivedAt, Findings: e.Findings, BatchBytes: len(e.Batch)})
	}
	as.Provider, err = mo.fetchReport(ctx, s)
	if err != nil {
		as.Reasons = append(as.Reasons, reasonNoReport+": "+err.Error())
	}
	if sp, err := mo.store.Space(); err == nil {
		as.Disk = &sp
	} else {
		mo.cfg.Log.Debug("free space not known for the assessment", "ssa", s.ID, "err", err)
	}
	if mo.cfg.Sinks != nil {
		if as.Sinks, err = mo.cfg.Sinks(s.ID); err != nil {
			return nil, err
		}
	}
	as.Verdict, as.Reasons = verdict(mo.runs.run(s.ID), as, as.Reasons)
	return as, nil
}

// reasonNoReport starts the reason of a verdict given without the provider's report,
// followed by the error of the request for it.
const reasonNoReport = "the provider did not report"

// verdict compares both sides' figures: violated when any delivered record broke the SSP
// (it is quarantined), the provider refined under another SSP, sent outside the schedule, or
// claims records delivered that this agent does not hold; degraded when the provider cannot
// report or lags, or records are stuck on the way to a sink (see sinkVerdict); else
// fulfilled.
func verdict(run *agreementRun, as *Assessment, reasons []string) (Verdict, []string) {
	v := VerdictFulfilled
	worse := func(to Verdict, why string) {
		reasons = append(reasons, why)
		if v == VerdictFulfilled || to == VerdictViolated {
			v = to
		}
	}
	if d := as.Disk; d != nil && d.Paused {
		worse(VerdictDegraded, fmt.Sprintf("this agent's disk is below its reserve (%d bytes free, %d kept): received batches are not acknowledged until space is freed", d.Free, d.Reserve))
	}
	if as.Local.Violations > 0 {
		worse(VerdictViolated, fmt.Sprintf("%d delivered records break the SSP and are quarantined, forwarded to no sink (evidence: %d signed batches)", as.Local.Violations, len(as.Evidence)))
	}
	if n := offMethod(as.Evidence); n > 0 {
		worse(VerdictViolated, fmt.Sprintf("%d batches came over a protocol or connection security the SSA's method does not list: refused, kept as evidence", n))
	}
	for i := range as.Sinks {
		sinkVerdict(&as.Sinks[i], as.SSAID, as.Time, worse)
	}
	rep := as.Provider
	switch {
	case rep == nil:
		worse(VerdictDegraded, "no fulfilment report from the provider")
	case rep.Error != "":
		worse(VerdictDegraded, "the provider reports: "+rep.Error)
	default:
		reportVerdict(run, as, rep, worse)
	}
	return v, reasons
}

// offMethod counts the batches of evidence refused for their method (finding method).
func offMethod(ev []EvidenceView) int {
	n := 0
	for _, e := range ev {
		var fs []RecordFinding
		if json.Unmarshal(e.Findings, &fs) != nil {
			continue
		}
		if slices.ContainsFunc(fs, func(f RecordFinding) bool {
			return slices.ContainsFunc(f.Findings, func(x policy.Finding) bool { return x.Code == policy.FindingMethod })
		}) {
			n++
		}
	}
	return n
}

// sinkVerdict judges sink s's progress through SSA ssaID at now: degraded when it is
// stopped, when it set aside records of the SSA (a webhook's refused batches: not lost, not
// delivered), when it refuses records while some wait, or when more than sinkLagRecords wait and
// it has not caught up for sinkLagFor. A sink the SSA's redistribution rule forbids is no
// part of it.
func sinkVerdict(s *SinkState, ssaID string, now time.Time, worse func(to Verdict, why string)) {
	p, ok := s.SSAs[ssaID]
	if ok && p.Records.SetAside > 0 {
		worse(VerdictDegraded, fmt.Sprintf("sink %s set aside %d records its receiver refused since the agent started: kept in HOME/%s/%s.poison, not delivered",
			s.Name, p.Records.SetAside, SinksDir, s.Name))
	}
	switch {
	case s.Stopped != "":
		worse(VerdictDegraded, fmt.Sprintf("sink %s forwards nothing: %s", s.Name, s.Stopped))
	case !ok:
	case !s.FailingSince.IsZero() && p.Lag > 0:
		// The error comes last, after ": ", as the status page keeps no reason past it.
		worse(VerdictDegraded, fmt.Sprintf("sink %s is failing since %s, %d records wait for it (%d errors); last error: %s",
			s.Name, s.FailingSince.UTC().Format(time.RFC3339), p.Lag, s.Errors, s.LastError))
	case p.Lag > sinkLagRecords && now.Sub(p.CaughtUp) > sinkLagFor:
		worse(VerdictDegraded, fmt.Sprintf("sink %s lags: %d records wait for it, and it has not caught up since %s",
			s.Name, p.Lag, p.CaughtUp.UTC().Format(time.RFC3339)))
	}
}

// reportVerdict judges the provider's report against this agent's figures.
func reportVerdict(run *agreementRun, as *Assessment, rep *protocol.Report, worse func(to Verdict, why string)) {
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
	if rep.DeliveryHeld != "" {
		worse(VerdictDegraded, "the provider holds delivery: "+rep.DeliveryHeld)
	}
	if rep.IngestPaused {
		worse(VerdictDegraded, "the provider's disk is below its reserve: it takes no records until space is freed there")
	}
	if rep.LatencyP99 > lagMillis {
		worse(VerdictDegraded, fmt.Sprintf("delivery latency p99 is %d ms", rep.LatencyP99))
	}
}

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
func (mo *monitor) assessmentLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, run := range mo.runs.requesterRuns() {
			mo.assessEnded(ctx, run)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// assessEnded writes the assessment report of run's SSA if its schedule has ended and it
// has none yet.
func (mo *monitor) assessEnded(ctx context.Context, run *agreementRun) {
	end := run.ssa.Schedule.End
	if end == 0 || protocol.FromTime(mo.cfg.Now()) < end {
		return
	}
	path := assessmentPath(mo.cfg.Dir, run.ssa.ID)
	if _, err := os.Stat(path); err == nil {
		return
	}
	as, err := mo.assess(ctx, run.ssa.ID)
	if err != nil {
		mo.cfg.Log.Warn("assessment", "ssa", run.ssa.ID, "err", err)
		return
	}
	if err := writeJSONFile(path, as); err != nil {
		mo.cfg.Log.Error("write assessment", "ssa", run.ssa.ID, "err", err)
		return
	}
	mo.cfg.Log.Info("SSA assessed at the end of its schedule", "ssa", run.ssa.ID, "verdict", as.Verdict, "report", path)
}
