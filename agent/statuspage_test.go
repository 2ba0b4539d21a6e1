package agent

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStatusPageServed: the metrics address serves the status page at / and /status, one
// self-contained HTML page whose Content-Security-Policy allows nothing but its own inline
// style and script (by their hashes) and requests to the same address; it names no URL of
// anywhere else. Its snapshot, /status.json, carries no network address of a peer. Only GET
// is served.
func TestStatusPageServed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := newTestAgent(t, "page", func(c *Config) { c.Metrics = addr })
	other := newTestAgent(t, "other", nil)
	if err := a.Host().Connect(context.Background(), addrInfo(other)); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr

	script := regexp.MustCompile(`(?s)<script>(.*)</script>`).FindSubmatch(statusPageHTML)
	style := regexp.MustCompile(`(?s)<style>(.*)</style>`).FindSubmatch(statusPageHTML)
	if script == nil || style == nil {
		t.Fatal("the page has no inline script or style")
	}
	hash := func(b []byte) string {
		sum := sha256.Sum256(b)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	for _, path := range []string{"/", "/status"} {
		t.Run("page "+path, func(t *testing.T) {
			resp, body := fetchPage(t, http.MethodGet, base+path)
			h := resp.Header
			if resp.StatusCode != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Fatalf("%s: %s, %s", path, resp.Status, h.Get("Content-Type"))
			}
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src " + hash(script[1]), "style-src " + hash(style[1]),
				"connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
				if !strings.Contains(csp, want+";") && !strings.HasSuffix(csp, want) {
					t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-") || strings.Contains(csp, "*") {
				t.Errorf("Content-Security-Policy %q allows more than the page's own", csp)
			}
			for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
				"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if h.Get(k) != v {
					t.Errorf("%s: %q, want %q", k, h.Get(k), v)
				}
			}
			if body != string(statusPageHTML) {
				t.Errorf("the page served is not the embedded page")
			}
			// Nothing loaded from anywhere: no URL, no src or href attribute, no CSS import
			// or url(); the script asks its own address, by a relative path.
			for _, bad := range []*regexp.Regexp{regexp.MustCompile(`(?i)https?:|//[a-z0-9]`), regexp.MustCompile(`(?i)\s(src|href)\s*=`),
				regexp.MustCompile(`(?i)@import|url\(`), regexp.MustCompile(`(?i)innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(`)} {
				if m := bad.FindString(body); m != "" {
					t.Errorf("the page holds %q", m)
				}
			}
			if !strings.Contains(body, `fetch("status.json"`) {
				t.Error("the page does not poll status.json")
			}
		})
	}

	t.Run("snapshot", func(t *testing.T) {
		var st Status
		waitFor(t, 10*time.Second, func() (bool, string) {
			resp, body := fetchPage(t, http.MethodGet, base+"/status.json")
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" ||
				resp.Header.Get("Cache-Control") != "no-store" {
				return false, resp.Status + " " + resp.Header.Get("Content-Type") + ": " + body
			}
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				return false, err.Error()
			}
			if strings.Contains(body, "/ip4/") || strings.Contains(body, "127.0.0.1") {
				t.Fatalf("the page's snapshot holds a network address: %s", body)
			}
			return len(st.Peers) == 1 && st.Peers[0].Connected && len(st.Peers[0].Connections) == 1,
				"snapshot " + body + ": want the other agent connected"
		})
		if st.Peer != a.ID().String() || st.Peers[0].Peer != other.ID().String() || st.Peers[0].Connections[0].Direction != "outbound" {
			t.Errorf("snapshot %+v", st)
		}
	})

	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		for _, path := range []string{"/", "/status", "/status.json"} {
			if resp, _ := fetchPage(t, m, base+path); resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %s, want 405", m, path, resp.Status)
			}
		}
	}
	if resp, _ := fetchPage(t, http.MethodGet, base+"/status/x"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /status/x: %s, want 404", resp.Status)
	}
}

// fetchPage makes one request and returns the answer and its body.
func fetchPage(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestPageStatus: the page's snapshot drops every network address of a peer (its addresses,
// its connections' remote addresses, the text of its last error and of the failed request
// for its report) and a sink's destination (the text of its last error, also in a verdict's
// reason), and no peer's text (what a provider says in a reason), and keeps the rest; the
// snapshot it is made from is left as it was.
func TestPageStatus(t *testing.T) {
	at := time.Unix(1_800_000_000, 0).UTC()
	full := &Status{Peer: "me", Peers: []PeerView{{Peer: "p", Addrs: []string{"/ip4/192.0.2.1/tcp/4001"}, Connected: true,
		Connections:  []ConnView{{Direction: "inbound", Remote: "/ip4/192.0.2.1/tcp/4001", Opened: at}},
		Negotiations: 2, Allowed: true, LastError: "dial /ip4/192.0.2.1/tcp/4001: refused", LastErrorKind: "unreachable", LastErrorAt: at}},
		Agreements: []AgreementStatus{{SSAID: "s", Verdict: VerdictDegraded,
			Reasons: []string{"r", reasonNoReport + ": failed to dial: all dials failed * [/ip4/192.0.2.1/tcp/4001] refused",
				"sink k is failing since 2027-01-15T08:00:00Z, 3 records wait for it (1 errors); last error: Post \"https://hooks.example/T0/B0/SECRET\": refused",
				"the provider reports: <script>peer text</script>"},
			AssessError: "storage: open x: no such file"}},
		Sinks: []SinkState{{Name: "k", LastError: `Post "https://hooks.example/T0/B0/SECRET": dial tcp: refused`,
			Stopped: "its progress file /var/lib/ssanet/sinks/k.progress is unreadable: EIO"}}}
	before, _ := json.Marshal(full)
	got, _ := json.Marshal(full.pageStatus())
	after, _ := json.Marshal(full)
	want := `{"peer":"me","time":"0001-01-01T00:00:00Z","peers":[{"peer":"p","addrs":[],"connected":true,` +
		`"connections":[{"direction":"inbound","remote":"","opened":"2027-01-15T08:00:00Z"}],"negotiations":2,"allowed":true,` +
		`"last_error_kind":"unreachable","last_error_at":"2027-01-15T08:00:00Z"}],` +
		`"agreements":[{"ssa_id":"s","peer":"","role":"","state":"","phase":"","verdict":"degraded","reasons":["r","the provider did not report","sink k is failing since 2027-01-15T08:00:00Z, 3 records wait for it (1 errors); last error","the provider reports"],"assess_error":"storage"}],"ended":0,` +
		`"flows":null,"window_seconds":0,"sinks":[{"name":"k","type":"","ssas":null,"errors":0,"last_error":"a write failed ('ssanet sinks' on the agent's host says why)","stopped":"stopped ('ssanet sinks' on the agent's host says why)","confirms":false,` +
		`"records":{"forwarded":0,"confirmed":0,"failed":0,"set_aside":0,"truncated":0}}]}`
	if string(got) != want {
		t.Errorf("page snapshot\n%s\nwant\n%s", got, want)
	}
	if string(before) != string(after) {
		t.Errorf("the snapshot changed:\n%s\nwas\n%s", after, before)
	}
}

// TestInlineHash: the page's CSP hash is taken over exactly one inline element.
func TestInlineHash(t *testing.T) {
	sum := sha256.Sum256([]byte("a();"))
	for _, tc := range []struct {
		page, want string
		ok         bool
	}{
		{"<p><script>a();</script></p>", "sha256-" + base64.StdEncoding.EncodeToString(sum[:]), true},
		{"<p>none</p>", "", false},
		{"<script>a();", "", false},
		{"<script>a();</script><script>b();</script>", "", false},
	} {
		got, err := inlineHash([]byte(tc.page), "<script>", "</script>")
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%q: %q, %v; want %q, ok %v", tc.page, got, err, tc.want, tc.ok)
		}
	}
}

// TestPageSnapshot: the page's snapshot is taken at most once per pageSnapshotAge whatever
// the requests; one that fails is tried again at the next request, and logged at most once
// per pageSnapshotLogEvery.
func TestPageSnapshot(t *testing.T) {
	clock := &statusClock{t: time.Unix(1_800_000_000, 0)}
	var logs strings.Builder
	takes := 0
	var fail error
	p := &pageSnapshot{now: clock.now, log: slog.New(slog.NewTextHandler(&logs, nil)),
		take: func() (*Status, error) {
			takes++
			return &Status{Peer: fmt.Sprint("take ", takes)}, fail
		}}
	step := func(name string, after time.Duration, wantPeer string, wantTakes, wantLogged int) {
		t.Helper()
		clock.t = clock.t.Add(after)
		body, err := p.get()
		var st Status
		if wantPeer != "" && (err != nil || json.Unmarshal(body, &st) != nil) {
			t.Fatalf("%s: %v %s", name, err, body)
		}
		if st.Peer != wantPeer || takes != wantTakes || strings.Count(logs.String(), "status page") != wantLogged {
			t.Errorf("%s: peer %q, %d takes, log %q; want %q, %d takes, %d lines", name, st.Peer, takes, logs.String(), wantPeer, wantTakes, wantLogged)
		}
	}
	step("first", 0, "take 1", 1, 0)
	step("again at once", pageSnapshotAge-time.Millisecond, "take 1", 1, 0)
	step("older", time.Millisecond, "take 2", 2, 0)
	fail = errors.New("store closed")
	step("failing", pageSnapshotAge, "", 3, 1)
	step("failing at once: tried again, not logged again", 0, "", 4, 1)
	step("failing a minute later: logged", pageSnapshotLogEvery, "", 5, 2)
	if !strings.Contains(logs.String(), "failures=2") {
		t.Errorf("log %q does not count the failures not logged", logs.String())
	}
	fail = nil
	step("back", 0, "take 6", 6, 2)
}
