package agent

import "github.com/prometheus/client_golang/prometheus"

// metrics are the agent's own Prometheus metrics, beside libp2p's, on the agent's registry.
type metrics struct {
	agreements *prometheus.CounterVec // agreement changes by status
	ingested   prometheus.Counter
	queued     prometheus.Counter
	delivered  prometheus.Counter
	received   prometheus.Counter
	violations prometheus.Counter
	// quarantined counts received records refused because their SSA was cancelled.
	quarantined prometheus.Counter
	// overflow counts refined records not queued because their requester's queue was full.
	overflow prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		agreements: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "agreements_total",
			Help: "SSAs approved, revised (approval of a new version) or annulled."}, []string{"status"}),
		ingested: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_ingested_total",
			Help: "Raw records handed to the provider's enforcement point."}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_queued_total",
			Help: "Refined records queued for delivery."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_acknowledged_total",
			Help: "Records the requesters acknowledged."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_received_total",
			Help: "Records received and stored under the SSAs this agent requested."}),
		violations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_violating_total",
			Help: "Received records that break their SSP."}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_refused_cancelled_total",
			Help: "Received records refused, and kept as evidence, because their SSA was cancelled."}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_not_queued_total",
			Help: "Refined records not queued because their requester's queue had reached max-queued-per-peer."}),
	}
	reg.MustRegister(m.agreements, m.ingested, m.queued, m.delivered, m.received, m.violations, m.quarantined, m.overflow)
	return m
}
