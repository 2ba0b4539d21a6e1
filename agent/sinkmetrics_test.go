package agent

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/agent/sink"
)

// TestSinkMetrics: each sink's lag (over its SSAs), errors, last success, failing state and
// records by outcome are exported under its name at each scrape.
func TestSinkMetrics(t *testing.T) {
	ok := time.Unix(1_800_000_000, 500_000_000)
	states := []SinkState{
		{Name: "siem", Type: "syslog", SSAs: map[string]SinkSSA{"a": {Lag: 3}, "b": {Lag: 4}}, Errors: 9,
			FailingSince: ok.Add(time.Minute), LastSuccess: ok, Records: SinkRecords{Forwarded: 20, Failed: 30, Truncated: 4}},
		{Name: "file", Type: "jsonl", SSAs: map[string]SinkSSA{}, Records: SinkRecords{Forwarded: 5, Confirmed: 5}},
		{Name: "hook", Type: "webhook", SSAs: map[string]SinkSSA{}, Records: SinkRecords{Forwarded: 8, Confirmed: 6, SetAside: 2, Skipped: sink.Skips{Unmappable: 3}}},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sinkCollector{states: func() ([]SinkState, error) { return states, nil }, log: slog.Default()})
	want := `
# HELP ssanet_sink_errors_total Writes the sink refused since the agent started (each is retried).
# TYPE ssanet_sink_errors_total counter
ssanet_sink_errors_total{sink="file"} 0
ssanet_sink_errors_total{sink="hook"} 0
ssanet_sink_errors_total{sink="siem"} 9
# HELP ssanet_sink_failing 1 while the sink refuses records or is stopped, else 0.
# TYPE ssanet_sink_failing gauge
ssanet_sink_failing{sink="file"} 0
ssanet_sink_failing{sink="hook"} 0
ssanet_sink_failing{sink="siem"} 1
# HELP ssanet_sink_lag_records Records received under the SSAs in force and not yet forwarded to the sink.
# TYPE ssanet_sink_lag_records gauge
ssanet_sink_lag_records{sink="file"} 0
ssanet_sink_lag_records{sink="hook"} 0
ssanet_sink_lag_records{sink="siem"} 7
# HELP ssanet_sink_last_success_timestamp_seconds When the sink last took records (Unix time; 0 if never since the agent started).
# TYPE ssanet_sink_last_success_timestamp_seconds gauge
ssanet_sink_last_success_timestamp_seconds{sink="file"} 0
ssanet_sink_last_success_timestamp_seconds{sink="hook"} 0
ssanet_sink_last_success_timestamp_seconds{sink="siem"} 1.8000000005e+09
# HELP ssanet_sink_records_skipped_total Records passed over, once each, since the agent started because they have no form in the sink's format (the sink's position moves past them), by reason: unmappable (their format cannot be mapped to STIX, ECS or MISP), unmapped (they map to nothing: no observable for a misp-feed event).
# TYPE ssanet_sink_records_skipped_total counter
ssanet_sink_records_skipped_total{reason="unmappable",sink="file"} 0
ssanet_sink_records_skipped_total{reason="unmappable",sink="hook"} 3
ssanet_sink_records_skipped_total{reason="unmappable",sink="siem"} 0
ssanet_sink_records_skipped_total{reason="unmapped",sink="file"} 0
ssanet_sink_records_skipped_total{reason="unmapped",sink="hook"} 0
ssanet_sink_records_skipped_total{reason="unmapped",sink="siem"} 0
# HELP ssanet_sink_records_total Records by outcome since the agent started: forwarded (taken by the sink), confirmed (of those, confirmed by the receiver), failed (in refused writes, at each attempt), set_aside (taken by a webhook that set them aside), truncated (cut to a UDP syslog sink's max-message, at each attempt; with observables a misp-feed's full event left out).
# TYPE ssanet_sink_records_total counter
ssanet_sink_records_total{outcome="confirmed",sink="file"} 5
ssanet_sink_records_total{outcome="confirmed",sink="hook"} 6
ssanet_sink_records_total{outcome="confirmed",sink="siem"} 0
ssanet_sink_records_total{outcome="failed",sink="file"} 0
ssanet_sink_records_total{outcome="failed",sink="hook"} 0
ssanet_sink_records_total{outcome="failed",sink="siem"} 30
ssanet_sink_records_total{outcome="forwarded",sink="file"} 5
ssanet_sink_records_total{outcome="forwarded",sink="hook"} 8
ssanet_sink_records_total{outcome="forwarded",sink="siem"} 20
ssanet_sink_records_total{outcome="set_aside",sink="file"} 0
ssanet_sink_records_total{outcome="set_aside",sink="hook"} 2
ssanet_sink_records_total{outcome="set_aside",sink="siem"} 0
ssanet_sink_records_total{outcome="truncated",sink="file"} 0
ssanet_sink_records_total{outcome="truncated",sink="hook"} 0
ssanet_sink_records_total{outcome="truncated",sink="siem"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
