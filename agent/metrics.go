package agent

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/protocol"
)

// counters are the agent's own Prometheus metrics, beside libp2p's, on the agent's registry,
// grouped by the component that counts them.
type counters struct {
	agreements *prometheus.CounterVec // agreement changes by status (management point)
	queue      queueMetrics
	delivered  prometheus.Counter // records the requesters acknowledged (delivery)
	// heldMethod counts the delivery streams not used because the SSA does not list their
	// protocol or connection security (delivery).
	heldMethod prometheus.Counter
	// refusedConns counts the connections the allow-list refused, by reason (agent.go).
	refusedConns *prometheus.CounterVec
	receive      receiveMetrics
	// ledger counts the outcome of every record, per SSA (ledger.go).
	ledger *ledger
	// negotiations counts the committed state changes of negotiations, by this side's role
	// and the state reached (negotiation point).
	negotiations *prometheus.CounterVec
	// refusedMessages counts the negotiation messages and exchange batches refused, by
	// protocol and a reason from refusalReasons (refusallog.go).
	refusedMessages *prometheus.CounterVec
	// rejections counts the reason codes of rejected negotiations, by this side's role
	// (negotiation point).
	rejections *prometheus.CounterVec
}

func newCounters(reg prometheus.Registerer, log *slog.Logger, now func() time.Time) *counters {
	l := newLedger(reg, log, now)
	c := &counters{
		ledger: l,
		agreements: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "agreements_total",
			Help: "SSAs approved, revised (approval of a new version) or annulled."}, []string{"status"}),
		queue: queueMetrics{
			ingested: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_ingested_total",
				Help: "Raw records handed to the provider's enforcement point."}),
			queued: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_queued_total",
				Help: "Refined records queued for delivery."}),
			overflow: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_not_queued_total",
				Help: "Refined records not queued because their requester's queue had reached max-queued-per-peer."}),
		},
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_acknowledged_total",
			Help: "Records the requesters acknowledged."}),
		heldMethod: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "deliveries_held_method_total",
			Help: "Delivery attempts not made because the SSA's method does not list the stream's protocol or the connection's security."}),
		refusedConns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "connections_refused_total",
			Help: "Connections refused by the allow-list: allow-list (a peer outside it connected and was closed after the handshake; logged), allow-list-dial (this agent was to dial a peer outside it)."}, []string{"reason"}),
		receive: receiveMetrics{
			received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_received_total",
				Help: "Records received and stored under the SSAs this agent requested."}),
			violations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_violating_total",
				Help: "Received records that break their SSP."}),
			quarantined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_refused_cancelled_total",
				Help: "Received records refused, and kept as evidence, because their SSA was cancelled."}),
			offMethod: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_refused_method_total",
				Help: "Received records refused, and kept as evidence of a violation, because they came over a protocol or connection security their SSA does not list."}),
			ledger: l,
		},
	}
	c.negotiations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "negotiation_transitions_total",
		Help: "Negotiation steps committed that changed its state, by this side's role (requester, provider) and the state reached (approved, rejected, expired, annulled, failed, withdrawn and the waiting states)."},
		[]string{"role", "state"})
	c.refusedMessages = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "messages_refused_total",
		Help: "Negotiation messages and exchange batches refused, by protocol (negotiate, exchange) and reason (malformed, too_large, bad_signature, unexpected, wrong_negotiation, wrong_sender, broken_chain, terms_changed, expired, too_many_messages, clock_skew, invalid_ssa, too_many_open, no_ssa_in_force, other); and streams of the ssanet protocols (negotiate, exchange, monitor, roster, offers) refused at open to a peer outside the community (reason allow_list or community_roster; members.go)."},
		[]string{"protocol", "reason"})
	c.rejections = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "negotiation_rejections_total",
		Help: "Reason codes of the negotiations that ended rejected, by this side's role (requester, provider) and code (the names of X.1205 Suppl. 20 reason codes: information, masking, filtering, no-offer, declined, ...; other for a code this version does not know). A rejection that names several codes counts once under each."},
		[]string{"role", "code"})
	// Outcomes a dashboard looks for exist from the start, at 0.
	c.refusedConns.WithLabelValues(refusedAllowList)
	c.refusedConns.WithLabelValues(refusedDial)
	for _, r := range []protocol.Role{protocol.RoleRequester, protocol.RoleProvider} {
		for _, st := range []protocol.State{protocol.StateApproved, protocol.StateRejected, protocol.StateExpired,
			protocol.StateAnnulled, protocol.StateFailed, protocol.StateWithdrawn} {
			c.negotiations.WithLabelValues(r.String(), st.String())
		}
	}
	reg.MustRegister(c.agreements, c.queue.ingested, c.queue.queued, c.delivered, c.receive.received,
		c.receive.violations, c.receive.quarantined, c.queue.overflow, c.heldMethod, c.receive.offMethod, c.refusedConns,
		c.negotiations, c.refusedMessages, c.rejections,
		// The process's own: Go runtime, process (CPU, memory, file descriptors), build.
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return c
}

// refusalReasons are the reasons a refused message or batch is counted under: a closed set,
// so that what a peer sends cannot add series. Anything else counts as "other".
var refusalReasons = []struct {
	err    error
	reason string
}{
	{protocol.ErrMalformed, "malformed"},
	{protocol.ErrTooLarge, "too_large"},
	{ErrFrameTooLarge, "too_large"},
	{protocol.ErrBadSignature, "bad_signature"},
	{protocol.ErrUnsupportedKey, "bad_signature"},
	{protocol.ErrUnexpected, "unexpected"},
	{protocol.ErrWrongNegotiation, "wrong_negotiation"},
	{protocol.ErrWrongSender, "wrong_sender"},
	{protocol.ErrBrokenChain, "broken_chain"},
	{protocol.ErrTermsChanged, "terms_changed"},
	{protocol.ErrProposalExpired, "expired"},
	{protocol.ErrRequestExpired, "expired"},
	{protocol.ErrRevisionExpired, "expired"},
	{protocol.ErrTooManyMessages, "too_many_messages"},
	{protocol.ErrClockSkew, "clock_skew"},
	{protocol.ErrInvalidSSA, "invalid_ssa"},
	{protocol.ErrBadSSAID, "invalid_ssa"},
	{ErrTooManyOpen, "too_many_open"},
	{errNoSSAInForce, "no_ssa_in_force"},
	{ErrNotAllowed, "allow_list"},
	{ErrRosterRefused, "community_roster"},
}

// refusalReason is the counted reason of a refusal for err.
func refusalReason(err error) string {
	for _, r := range refusalReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// rejectionCodes returns the distinct reason codes of a rejection as counted: a code this
// version has no name for (a peer may send any number) is "other".
func rejectionCodes(reasons []protocol.Reason) []string {
	var codes []string
	for _, r := range reasons {
		c := r.Code.String()
		if strings.HasPrefix(c, "code(") {
			c = "other"
		}
		if !slices.Contains(codes, c) {
			codes = append(codes, c)
		}
	}
	return codes
}

// sinkCollector reads every sink's state at each scrape: its lag over the SSAs in force, its
// refusals and its last success, labelled by sink name (from config.yaml, so bounded).
type sinkCollector struct {
	states func() ([]SinkState, error)
	log    *slog.Logger
}

const sinkRecordsHelp = "Records by outcome since the agent started: forwarded (taken by the sink), confirmed (of those, confirmed by the receiver), failed (in refused writes, at each attempt), set_aside (taken by a webhook that set them aside), truncated (cut to a UDP syslog sink's max-message, at each attempt; with observables a misp-feed's full event left out)."

const sinkSkippedHelp = "Records passed over, once each, since the agent started because they have no form in the sink's format (the sink's position moves past them), by reason: unmappable (their format cannot be mapped to STIX, ECS or MISP), unmapped (they map to nothing: no observable for a misp-feed event)."

var (
	sinkLagDesc = prometheus.NewDesc("ssanet_sink_lag_records",
		"Records received under the SSAs in force and not yet forwarded to the sink.", []string{"sink"}, nil)
	sinkErrorsDesc = prometheus.NewDesc("ssanet_sink_errors_total",
		"Writes the sink refused since the agent started (each is retried).", []string{"sink"}, nil)
	sinkSuccessDesc = prometheus.NewDesc("ssanet_sink_last_success_timestamp_seconds",
		"When the sink last took records (Unix time; 0 if never since the agent started).", []string{"sink"}, nil)
	sinkFailingDesc = prometheus.NewDesc("ssanet_sink_failing",
		"1 while the sink refuses records or is stopped, else 0.", []string{"sink"}, nil)
	sinkRecordsDesc = prometheus.NewDesc("ssanet_sink_records_total",
		sinkRecordsHelp, []string{"sink", "outcome"}, nil)
	sinkSkippedDesc = prometheus.NewDesc("ssanet_sink_records_skipped_total",
		sinkSkippedHelp, []string{"sink", "reason"}, nil)
)

func (c sinkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sinkLagDesc
	ch <- sinkErrorsDesc
	ch <- sinkSuccessDesc
	ch <- sinkFailingDesc
	ch <- sinkRecordsDesc
	ch <- sinkSkippedDesc
}

func (c sinkCollector) Collect(ch chan<- prometheus.Metric) {
	states, err := c.states()
	if err != nil {
		c.log.Warn("sink metrics not read", "err", err)
		return
	}
	for _, s := range states {
		var lag uint64
		for _, p := range s.SSAs {
			lag += p.Lag
		}
		var last, failing float64
		if !s.LastSuccess.IsZero() {
			last = float64(s.LastSuccess.UnixMilli()) / 1000
		}
		if s.Failing() {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(sinkLagDesc, prometheus.GaugeValue, float64(lag), s.Name)
		ch <- prometheus.MustNewConstMetric(sinkErrorsDesc, prometheus.CounterValue, float64(s.Errors), s.Name)
		ch <- prometheus.MustNewConstMetric(sinkSuccessDesc, prometheus.GaugeValue, last, s.Name)
		ch <- prometheus.MustNewConstMetric(sinkFailingDesc, prometheus.GaugeValue, failing, s.Name)
		for _, o := range []struct {
			outcome string
			n       uint64
		}{{"forwarded", s.Records.Forwarded}, {"confirmed", s.Records.Confirmed}, {"failed", s.Records.Failed}, {"set_aside", s.Records.SetAside}, {"truncated", s.Records.Truncated}} {
			ch <- prometheus.MustNewConstMetric(sinkRecordsDesc, prometheus.CounterValue, float64(o.n), s.Name, o.outcome)
		}
		ch <- prometheus.MustNewConstMetric(sinkSkippedDesc, prometheus.CounterValue, float64(s.Records.Skipped.Unmappable), s.Name, sink.SkipUnmappable)
		ch <- prometheus.MustNewConstMetric(sinkSkippedDesc, prometheus.CounterValue, float64(s.Records.Skipped.Unmapped), s.Name, sink.SkipUnmapped)
	}
}
