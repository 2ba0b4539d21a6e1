package agent

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the agent's own Prometheus metrics, beside libp2p's, on the agent's registry,
// grouped by the component that counts them.
type counters struct {
	agreements *prometheus.CounterVec // agreement changes by status (management point)
	queue      queueMetrics
	delivered  prometheus.Counter // records the requesters acknowledged (delivery)
	receive    receiveMetrics
	// ledger counts the outcome of every record, per SSA (ledger.go).
	ledger *ledger
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
		receive: receiveMetrics{
			received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_received_total",
				Help: "Records received and stored under the SSAs this agent requested."}),
			violations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_violating_total",
				Help: "Received records that break their SSP."}),
			quarantined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ssanet", Name: "records_refused_cancelled_total",
				Help: "Received records refused, and kept as evidence, because their SSA was cancelled."}),
			ledger: l,
		},
	}
	reg.MustRegister(c.agreements, c.queue.ingested, c.queue.queued, c.delivered, c.receive.received,
		c.receive.violations, c.receive.quarantined, c.queue.overflow)
	return c
}
