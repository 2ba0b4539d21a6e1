package agent

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// TestPprofEndpoint: with pprof: true the metrics address serves the Go profiler (the
// index, a heap profile, a short CPU profile); without it, /debug/pprof/ is not there.
func TestPprofEndpoint(t *testing.T) {
	on, off := freeAddr(t), freeAddr(t)
	newTestAgent(t, "pprof", func(c *Config) { c.Metrics, c.Pprof = on, true })
	newTestAgent(t, "nopprof", func(c *Config) { c.Metrics = off })
	for _, tc := range []struct {
		url, want string
	}{
		{"http://" + on + "/debug/pprof/", "goroutine"},
		{"http://" + on + "/debug/pprof/heap?debug=1", "heap profile"},
		{"http://" + on + "/debug/pprof/profile?seconds=1", "\x1f\x8b"}, // a gzipped protobuf
	} {
		code, body := get(t, tc.url)
		if code != http.StatusOK || len(body) == 0 || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, %d bytes, want 200 and %q", tc.url, code, len(body), tc.want)
		}
	}
	if code, body := get(t, "http://"+off+"/debug/pprof/"); code == http.StatusOK || strings.Contains(body, "goroutine") {
		t.Errorf("without pprof: GET /debug/pprof/: %d %q, want no profiler", code, body)
	}
}

// TestPprofNeedsLoopbackMetrics: pprof is refused without a metrics address, and with one
// that is not loopback, metrics-remote or not.
func TestPprofNeedsLoopbackMetrics(t *testing.T) {
	for _, tc := range []struct {
		metrics string
		remote  bool
		wantErr bool
	}{
		{"127.0.0.1:9464", false, false},
		{"[::1]:9464", false, false},
		{"127.0.0.1:9464", true, false},
		{"", false, true},
		{"0.0.0.0:9464", true, true},
		{"192.0.2.7:9464", true, true},
		{":9464", true, true},
	} {
		cfg := DefaultConfig()
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Metrics, cfg.MetricsRemote, cfg.Pprof = tc.metrics, tc.remote, true
		if err := cfg.Validate(); errors.Is(err, errPprofAddress) != tc.wantErr {
			t.Errorf("pprof with metrics %q, remote %v: %v, want the pprof error: %v", tc.metrics, tc.remote, err, tc.wantErr)
		}
	}
}
