package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// freeAddr is a loopback host:port free when the test asks for it.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get fetches url and returns its status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestObservability: an agent's metrics address serves the Go runtime, process and build-info
// collectors, negotiation outcomes by role and state, refused messages by protocol and
// reason, /healthz and /readyz; the project's own series pass promtool's lint.
func TestObservability(t *testing.T) {
	provAddr, reqAddr := freeAddr(t), freeAddr(t)
	prov := newTestAgent(t, "provider", func(c *Config) { c.Metrics = provAddr })
	req := newTestAgent(t, "requester", func(c *Config) { c.Metrics = reqAddr })
	addOffer(t, prov, nil)
	rec, err := req.Request(context.Background(), addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	// Without an offer, the next request is rejected: its reason is counted on both sides.
	offers, err := prov.store.Offers()
	if err != nil || len(offers) != 1 {
		t.Fatalf("offers: %d, %v", len(offers), err)
	}
	if err := prov.store.DeleteOffer(offers[0].ID); err != nil {
		t.Fatal(err)
	}
	if rec, err := req.Request(context.Background(), addrInfo(prov), requestTemplate(t)); err != nil || rec.State != protocol.StateRejected {
		t.Fatalf("request without an offer: %+v, %v", rec, err)
	}

	// A message that is not CBOR is refused as malformed, and counted.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := req.host.NewStream(ctx, prov.host.ID(), ProtocolNegotiate)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFrame(st, []byte("not a message")); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(st) // until the provider resets the stream
	st.Close()

	wantProv := []string{
		`ssanet_negotiation_transitions_total{role="provider",state="approved"} 1`,
		`ssanet_negotiation_transitions_total{role="provider",state="rejected"} 1`,
		`ssanet_negotiation_rejections_total{code="no-offer",role="provider"} 1`,
		`ssanet_messages_refused_total{protocol="negotiate",reason="malformed"} 1`,
		`ssanet_connections_refused_total{reason="allow-list"} 0`,
		"go_goroutines ", "go_memstats_alloc_bytes ", "process_cpu_seconds_total ", "process_open_fds ",
		`go_build_info{`,
	}
	var body string
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, body = get(t, "http://"+provAddr+"/metrics")
		for _, w := range wantProv {
			if !strings.Contains(body, w) {
				return false, "provider metrics lack " + w
			}
		}
		return true, ""
	})
	_, reqBody := get(t, "http://"+reqAddr+"/metrics")
	for _, w := range []string{
		`ssanet_negotiation_transitions_total{role="requester",state="approved"} 1`,
		`ssanet_negotiation_transitions_total{role="requester",state="request-sent"} 2`,
		`ssanet_negotiation_rejections_total{code="no-offer",role="requester"} 1`,
	} {
		if !strings.Contains(reqBody, w) {
			t.Errorf("requester metrics lack %s", w)
		}
	}
	for _, w := range []string{"peer=", "ssa="} {
		if strings.Contains(body, w) {
			t.Errorf("a series is labelled by %s, which is not bounded", w)
		}
	}

	if code, text := get(t, "http://"+provAddr+"/healthz"); code != http.StatusOK || text != "ok\n" {
		t.Errorf("/healthz: %d %q", code, text)
	}
	if code, text := get(t, "http://"+provAddr+"/readyz"); code != http.StatusOK || text != "ready\n" {
		t.Errorf("/readyz: %d %q", code, text)
	}
	prov.stopping.Store(true) // as Close does first
	if code, text := get(t, "http://"+provAddr+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(text, "stopping") {
		t.Errorf("/readyz of a stopping agent: %d %q", code, text)
	}
	if code, _ := get(t, "http://"+provAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz of a stopping agent: %d", code)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus): the lint of the metrics is not run")
	}
	for _, text := range []string{body, reqBody} {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(ownSeries(text))
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics on the ssanet_ series: %v\n%s", err, out)
		}
	}
}

// ownSeries keeps the ssanet_ families of a text exposition.
func ownSeries(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		name := line
		if f := strings.Fields(line); len(f) >= 3 && (f[1] == "HELP" || f[1] == "TYPE") {
			name = f[2]
		}
		if strings.HasPrefix(name, "ssanet_") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestMetricsAddress: the metrics address is loopback unless metrics-remote allows another,
// and is always an IP address and a port.
func TestMetricsAddress(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		remote  bool
		wantErr string // "" for none
	}{
		{"127.0.0.1:9464", false, ""},
		{"[::1]:9464", false, ""},
		{"0.0.0.0:9464", false, "metrics-remote"},
		{"192.0.2.7:9464", false, "metrics-remote"},
		{":9464", false, "IP address"},
		{"localhost:9464", false, "IP address"},
		{"0.0.0.0:9464", true, ""},
		{"192.0.2.7:9464", true, ""},
		{":9464", true, ""},
		{"127.0.0.1:9464", true, ""},
		{"localhost:9464", true, "IP address"},
		{"9464", true, "IP address"},
	} {
		cfg := DefaultConfig()
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Metrics, cfg.MetricsRemote = tc.addr, tc.remote
		err := cfg.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("metrics %q, remote %v: %v", tc.addr, tc.remote, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("metrics %q, remote %v: %v, want an error saying %q", tc.addr, tc.remote, err, tc.wantErr)
		}
	}
}

// TestRefusalReason: a refusal is counted under the reason of the sentinel it wraps, and
// any other error (text a peer may choose) under "other", so its label set stays closed.
func TestRefusalReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("open message: %w: unexpected EOF", protocol.ErrMalformed), "malformed"},
		{fmt.Errorf("%w: bit flipped", protocol.ErrBadSignature), "bad_signature"},
		{fmt.Errorf("%w: 2 MiB", ErrFrameTooLarge), "too_large"},
		{protocol.ErrRevisionExpired, "expired"},
		{fmt.Errorf("%w: SSA x", errNoSSAInForce), "no_ssa_in_force"},
		{errors.New("anything a peer wrote"), "other"},
	} {
		if got := refusalReason(tc.err); got != tc.want {
			t.Errorf("refusalReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestRejectionCodes: a rejection is counted once per code it names, by the code's name, and
// a code this version does not know (a peer may send any of 65,536) under "other".
func TestRejectionCodes(t *testing.T) {
	for _, tc := range []struct {
		reasons []protocol.Reason
		want    []string
	}{
		{nil, nil},
		{[]protocol.Reason{{Code: protocol.CodeNoOffer}}, []string{"no-offer"}},
		{[]protocol.Reason{{Code: protocol.CodeMasking}, {Code: protocol.CodeFiltering}, {Code: protocol.CodeMasking}}, []string{"masking", "filtering"}},
		{[]protocol.Reason{{Code: 999}, {Code: 1000}, {Code: protocol.CodeDeclined}}, []string{"other", "declined"}},
	} {
		if got := rejectionCodes(tc.reasons); !slices.Equal(got, tc.want) {
			t.Errorf("rejectionCodes(%v) = %q, want %q", tc.reasons, got, tc.want)
		}
	}
}
