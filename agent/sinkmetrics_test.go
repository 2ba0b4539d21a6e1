package agent

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSinkMetrics: each sink's lag (over its SSAs), errors, last success and failing state
// are exported under its name at each scrape.
func TestSinkMetrics(t *testing.T) {
	ok := time.Unix(1_800_000_000, 500_000_000)
	states := []SinkState{
		{Name: "siem", Type: "syslog", SSAs: map[string]SinkSSA{"a": {Lag: 3}, "b": {Lag: 4}}, Errors: 9,
			FailingSince: ok.Add(time.Minute), LastSuccess: ok},
		{Name: "file", Type: "jsonl", SSAs: map[string]SinkSSA{}},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sinkCollector{states: func() ([]SinkState, error) { return states, nil }, log: slog.Default()})
	want := `
# HELP ssanet_sink_errors_total Writes the sink refused since the agent started (each is retried).
# TYPE ssanet_sink_errors_total counter
ssanet_sink_errors_total{sink="file"} 0
ssanet_sink_errors_total{sink="siem"} 9
# HELP ssanet_sink_failing 1 while the sink refuses records or is stopped, else 0.
# TYPE ssanet_sink_failing gauge
ssanet_sink_failing{sink="file"} 0
ssanet_sink_failing{sink="siem"} 1
# HELP ssanet_sink_lag_records Records received under the SSAs in force and not yet forwarded to the sink.
# TYPE ssanet_sink_lag_records gauge
ssanet_sink_lag_records{sink="file"} 0
ssanet_sink_lag_records{sink="siem"} 7
# HELP ssanet_sink_last_success_timestamp_seconds When the sink last took records (Unix time; 0 if never since the agent started).
# TYPE ssanet_sink_last_success_timestamp_seconds gauge
ssanet_sink_last_success_timestamp_seconds{sink="file"} 0
ssanet_sink_last_success_timestamp_seconds{sink="siem"} 1.8000000005e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
