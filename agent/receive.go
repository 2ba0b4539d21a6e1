package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// errNoSSAInForce refuses a batch of an SSA that this agent does not hold in force with the
// batch's provider (the only refusal without an agreement run: c.run is nil).
var errNoSSAInForce = errors.New("agent: no SSA in force with this provider")

// The requester's SSP enforcement point, receive-and-verify (Appendix I steps ⑩–⑪): every
// batch is verified against the SSA and its SSP, stored exactly once and acknowledged; the
// records that break the SSA are quarantined, the first violating batches kept as evidence.

// maxFindingsKept is how many records' findings the evidence of one batch keeps (the first;
// the batch itself holds every record).
const maxFindingsKept = 1000

// requests is what receive-and-verify needs of the management point.
type requests interface {
	// providedBy reports whether p provides an SSA this agent requested that is in force, or
	// cancelled and held.
	providedBy(p peer.ID) bool
	// requested is the requested SSA with this ID, in force or held, or nil.
	requested(ssaID string) *agreementRun
	// run is the SSA in force with this ID, or nil.
	run(ssaID string) *agreementRun
	// cancelledAt is when run's SSA was cancelled, or zero.
	cancelledAt(run *agreementRun) time.Time
}

// receiveMetrics are the counters of receive-and-verify.
type receiveMetrics struct {
	received, violations prometheus.Counter
	// quarantined counts received records refused because their SSA was cancelled.
	quarantined prometheus.Counter
	// offMethod counts received records refused because they came over a protocol or
	// connection security their SSA does not list (method.go).
	offMethod prometheus.Counter
	// ledger counts each record as stored or quarantined, per SSA and finding (ledger.go).
	ledger *ledger
}

// receiver is receive-and-verify: the handler of /ssanet/exchange/1.0.0.
type receiver struct {
	runs     requests
	store    *storage.Store
	log      *slog.Logger
	refusals *refusalLog
	now      func() time.Time
	timeout  time.Duration // of each message
	metrics  receiveMetrics
	// diskFull is told of a batch refused for want of disk space (diskWatch.refused).
	diskFull func()
	// stored is told that records were stored, for the sinks to forward (sinks.kick).
	stored func()
}

// receiverConfig is what the receiver is told beyond what it reads and writes.
type receiverConfig struct {
	Log      *slog.Logger
	Refusals *refusalLog
	Now      func() time.Time
	Timeout  time.Duration
	Metrics  receiveMetrics
	DiskFull func()
	Stored   func()
}

func newReceiver(runs requests, st *storage.Store, cfg receiverConfig) *receiver {
	return &receiver{runs: runs, store: st, log: cfg.Log, refusals: cfg.Refusals, now: cfg.Now, timeout: cfg.Timeout,
		metrics: cfg.Metrics, diskFull: cfg.DiskFull, stored: cfg.Stored}
}

// handleExchange is steps ⑩–⑪ on the requester: each batch is verified, stored exactly once
// and acknowledged, in order. Verifying a batch overlaps with storing the previous one.
func (rc *receiver) handleExchange(st network.Stream) {
	remote := st.Conn().RemotePeer()
	if !rc.runs.providedBy(remote) {
		// Nothing of a stranger's is read: batches are up to protocol.MaxBatchSize.
		rc.log.Debug("exchange stream refused: no SSA in force with this provider", "peer", remote)
		st.Reset()
		return
	}
	r := bufio.NewReader(st)
	checked := make(chan *checkedBatch, 1)
	done := make(chan struct{})
	go func() { // the storing stage, owned by this handler: it ends when checked is closed
		defer close(done)
		rc.storeAll(st, remote, checked)
	}()
	defer func() {
		close(checked)
		<-done
	}()
	for {
		if err := st.SetReadDeadline(time.Now().Add(rc.timeout)); err != nil {
			st.Reset()
			return
		}
		raw, err := readFrame(r, protocol.MaxBatchSize)
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.Close()
			} else {
				st.Reset()
			}
			return
		}
		c, err := rc.checkBatch(raw, remote, st.Protocol(), connState(st.Conn()))
		if err != nil {
			rc.refusals.refused("exchange", remote, "batch refused", err, "proto", ProtocolExchange)
			st.Reset()
			return
		}
		checked <- c
	}
}

// storeAll stores and acknowledges each checked batch in order; after a failure it resets the
// stream and drops the rest (the provider sends them again).
func (rc *receiver) storeAll(st network.Stream, remote peer.ID, checked <-chan *checkedBatch) {
	failed := false
	for c := range checked {
		if failed {
			continue
		}
		err := rc.acknowledge(st, c, remote)
		if err == nil {
			continue
		}
		if errors.Is(err, storage.ErrDiskFull) {
			rc.diskFull() // not acknowledged: sent again later; logged once
		} else {
			rc.log.Warn("batch not stored", "peer", remote, "err", err)
		}
		st.Reset()
		failed = true
	}
}

// acknowledge stores a checked batch and writes its acknowledgement.
func (rc *receiver) acknowledge(st network.Stream, c *checkedBatch, remote peer.ID) error {
	ack, err := rc.storeBatch(c, remote)
	if err != nil {
		return err
	}
	b, err := ack.Encode()
	if err != nil {
		return err
	}
	if err := st.SetWriteDeadline(time.Now().Add(rc.timeout)); err != nil {
		return err
	}
	return writeFrame(st, b)
}

// checkedBatch is a batch verified against its SSA and SSP, ready to be stored.
type checkedBatch struct {
	raw     []byte
	b       *protocol.Batch
	run     *agreementRun
	refused string // why the batch cannot be taken at all
	// offMethod says the batch is refused because it came over a method its SSA does not
	// list: a violation.
	offMethod  bool
	findings   []RecordFinding
	violations uint64
	bad        []bool // the records that do not comply; violations counts them
	// why is, for each record that does not comply, the code of the finding that says so
	// first (the batch's, when the batch as a whole is at fault).
	why []policy.FindingCode
}

// RecordFinding is what verification found wrong with one delivered record.
type RecordFinding struct {
	Seq      uint64           `json:"seq"`
	Findings []policy.Finding `json:"findings"`
}

// checkBatch verifies a batch's signature, that it belongs to an SSA in force with its
// sender, that it came over a stream protocol proto and a connection (state conn) the SSA's
// method lists, and every record against the SSP.
func (rc *receiver) checkBatch(raw []byte, remote peer.ID, proto libp2pprotocol.ID, conn network.ConnectionState) (*checkedBatch, error) {
	b, err := protocol.OpenBatch(raw, remote)
	if err != nil {
		return nil, err
	}
	c := &checkedBatch{raw: raw, b: b}
	if held := rc.runs.requested(b.SSAID); held != nil && held.peer == remote {
		if at := rc.runs.cancelledAt(held); !at.IsZero() {
			refuseCancelled(c, held, at)
			return c, nil
		}
	}
	run := rc.runs.run(b.SSAID)
	if run == nil || run.role != protocol.RoleRequester || run.peer != remote {
		c.refused = "no SSA " + b.SSAID + " in force with this provider"
		return c, nil
	}
	c.run = run
	if why, _ := methodBreach(run.ssa.Method, proto, conn); why != "" {
		refuseMethod(c, why)
		return c, nil
	}
	c.findings = batchFindings(run, b, rc.now())
	batchFault := len(c.findings) > 0 // then every record is at fault, whatever it holds
	c.bad = make([]bool, len(b.Records))
	c.why = make([]policy.FindingCode, len(b.Records))
	v := policy.NewVerifier(run.ssp)
	for i, rec := range b.Records {
		f := v.Verify(b.Format, rec)
		if len(f) > 0 {
			c.findings = append(c.findings, RecordFinding{Seq: b.First + uint64(i), Findings: f})
		}
		if c.bad[i] = batchFault || len(f) > 0; c.bad[i] {
			c.violations++
			if batchFault {
				c.why[i] = c.findings[0].Findings[0].Code
			} else {
				c.why[i] = f[0].Code
			}
		}
	}
	return c, nil
}

// refuseCancelled makes c a batch of a cancelled SSA: refused, so not stored, forwarded nor
// acknowledged; kept as evidence only.
func refuseCancelled(c *checkedBatch, held *agreementRun, at time.Time) {
	b := c.b
	c.refused = fmt.Sprintf("SSA %s was cancelled at %s: no record of it is taken", b.SSAID, at.UTC().Format(time.RFC3339))
	c.run = held
	c.findings = []RecordFinding{{Seq: b.First, Findings: []policy.Finding{{Code: policy.FindingOutsideSchedule,
		Text: fmt.Sprintf("the batch, sent at %s, arrived after this agent had cancelled the SSA or received its cancellation (at %s): refused",
			time.UnixMilli(b.Sent).UTC().Format(time.RFC3339Nano), at.UTC().Format(time.RFC3339Nano))}}}}
}

// refuseMethod makes c a batch delivered over a method its SSA does not list: refused, so not
// stored, forwarded nor acknowledged; kept as evidence of a violation.
func refuseMethod(c *checkedBatch, why string) {
	c.refused = "SSA " + c.b.SSAID + " does not allow this batch: " + why
	c.offMethod = true
	c.findings = []RecordFinding{{Seq: c.b.First, Findings: []policy.Finding{{Code: policy.FindingMethod,
		Text: "the batch came by " + why + ": refused"}}}}
}

// batchFindings are the faults of a batch as a whole, received at now: refined under another
// SSP, or sent outside the schedule.
func batchFindings(run *agreementRun, b *protocol.Batch, now time.Time) []RecordFinding {
	var out []RecordFinding
	add := func(code policy.FindingCode, text string) {
		out = append(out, RecordFinding{Seq: b.First, Findings: []policy.Finding{{Code: code, Text: text}}})
	}
	if b.SSPHash != run.ssp.Hash() {
		add(policy.FindingWrongFormat, "the batch was refined under SSP "+b.SSPHash+", not the agreed "+run.ssp.Hash())
	}
	// The provider signs when it sent the batch; that time must be within the schedule, and
	// near enough to when the batch arrives (protocol.MaxSkew, as for negotiation messages)
	// that a batch sent after the schedule's end cannot claim an earlier time.
	sent := time.UnixMilli(b.Sent)
	switch {
	case !run.inSchedule(sent):
		add(policy.FindingOutsideSchedule, "the batch was sent outside the SSA's schedule")
	case sent.Sub(now).Abs() > protocol.MaxSkew:
		add(policy.FindingOutsideSchedule, fmt.Sprintf("the batch says it was sent at %s but arrived at %s: more than %v apart, so its time cannot show it was sent within the schedule",
			sent.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), protocol.MaxSkew))
	}
	return out
}

// storeBatch stores a checked batch exactly once, keeps any violation as evidence (the
// provider's signed batch with the findings) and returns the acknowledgement.
func (rc *receiver) storeBatch(c *checkedBatch, remote peer.ID) (*protocol.BatchAck, error) {
	b := c.b
	now := rc.now()
	if c.refused != "" {
		if c.run == nil {
			rc.refusals.refused("exchange", remote, "batch refused", fmt.Errorf("%w: SSA %s", errNoSSAInForce, b.SSAID), "ssa", b.SSAID, "records", len(b.Records))
		}
		switch {
		case c.offMethod: // a violation: quarantined
			n := uint64(len(b.Records))
			rc.metrics.offMethod.Add(float64(n))
			rc.metrics.violations.Add(float64(n))
			rc.metrics.ledger.received(b.SSAID, outQuarantined, string(policy.FindingMethod), n)
			if err := rc.keepEvidence(c, c.findings, now); err != nil {
				rc.log.Warn("evidence of a refused batch not kept", "ssa", b.SSAID, "err", err)
			}
			rc.log.Warn("SSA violated: batch delivered over a method the SSA does not list refused, evidence kept",
				"ssa", b.SSAID, "peer", remote, "records", n, "reason", c.refused)
		case c.run != nil: // a batch of a cancelled SSA: quarantined
			rc.metrics.quarantined.Add(float64(len(b.Records)))
			rc.metrics.ledger.received(b.SSAID, outQuarantined, string(policy.FindingOutsideSchedule), uint64(len(b.Records)))
			if err := rc.keepEvidence(c, c.findings, now); err != nil {
				rc.log.Warn("evidence of a refused batch not kept", "ssa", b.SSAID, "err", err)
			}
			rc.log.Warn("batch of a cancelled SSA refused: evidence kept", "ssa", b.SSAID, "peer", remote, "records", len(b.Records))
		}
		return &protocol.BatchAck{SSAID: b.SSAID, Error: c.refused}, nil
	}
	stored, last, err := rc.store.Receive(b.SSAID, b.First, c.kept(), now, c.violations)
	if errors.Is(err, storage.ErrGap) {
		st, serr := rc.store.InboxState(b.SSAID)
		if serr != nil {
			return nil, serr
		}
		return &protocol.BatchAck{SSAID: b.SSAID, Last: st.Last}, nil
	}
	if err != nil {
		return nil, err
	}
	rc.metrics.received.Add(float64(stored))
	c.countNew(rc.metrics.ledger, stored)
	if len(c.findings) > 0 {
		rc.metrics.violations.Add(float64(c.violations))
		rc.log.Warn("SSA violated: evidence kept", "ssa", b.SSAID, "peer", remote, "records", c.violations)
		// The records are stored and counted: evidence that cannot be kept (the SSA keeps
		// its first batches only) must not hold back the acknowledgement, or the provider
		// would send the batch again and again.
		if err := rc.keepEvidence(c, c.findings[:min(len(c.findings), maxFindingsKept)], now); err != nil {
			rc.log.Warn("evidence not kept", "ssa", b.SSAID, "err", err)
		}
	}
	rc.stored()
	return &protocol.BatchAck{SSAID: b.SSAID, Last: last}, nil
}

// countNew counts the outcomes of the batch's records that were stored new (its last stored:
// those before were duplicates): stored, or quarantined by their finding.
func (c *checkedBatch) countNew(l *ledger, stored int) {
	if stored <= 0 || stored > len(c.why) {
		return
	}
	fine := uint64(0)
	quarantined := map[policy.FindingCode]uint64{}
	for _, why := range c.why[len(c.why)-stored:] {
		if why == "" {
			fine++
		} else {
			quarantined[why]++
		}
	}
	l.received(c.b.SSAID, outStored, "", fine)
	for code, n := range quarantined {
		l.received(c.b.SSAID, outQuarantined, string(code), n)
	}
}

// kept are the batch's records as stored: tagged with their format, and quarantined where
// they do not comply. They share one buffer, each capped at its own length.
func (c *checkedBatch) kept() [][]byte {
	tag := c.run.formatTag(c.b.Format)
	size := len(c.b.Records)
	for _, r := range c.b.Records {
		size += len(r)
	}
	buf := make([]byte, 0, size)
	kept := make([][]byte, len(c.b.Records))
	for i, r := range c.b.Records {
		t := tag
		if c.bad[i] {
			t |= quarantineBit
		}
		start := len(buf)
		buf = append(append(buf, t), r...)
		kept[i] = buf[start:len(buf):len(buf)]
	}
	return kept
}

// keepEvidence stores the provider's signed batch with findings.
func (rc *receiver) keepEvidence(c *checkedBatch, findings []RecordFinding, at time.Time) error {
	js, err := json.Marshal(findings)
	if err != nil {
		return fmt.Errorf("encode findings: %w", err)
	}
	return rc.store.PutEvidence(storage.Evidence{SSAID: c.b.SSAID, First: c.b.First, Batch: c.raw, Findings: js, ReceivedAt: at})
}
