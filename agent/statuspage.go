package agent

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The status page: one self-contained HTML page on the metrics address (GET / and GET
// /status) that polls GET /status.json every second and shows the status snapshot. The
// metrics address may be reached by other hosts (metrics-remote), so the page's snapshot
// carries what the metrics already tell and the operator needs to act, no more: no
// network address of a peer (its addresses, its connections' remote addresses, the text of
// the last failure to reach it or to get its report, which names them), no sink's
// destination (the text of its last error names it: a webhook's URL may hold its token),
// no key, no record, no SSA terms. It is read-only: only GET (and HEAD) are served. The
// page loads nothing from anywhere: its style and script are inline, allowed by their
// hashes in its Content-Security-Policy, and it writes what it shows as text, never as
// markup.

//go:embed statuspage.html
var statusPageHTML []byte

// pageStatus is the status snapshot as the status page may show it (see above).
func (s *Status) pageStatus() *Status {
	out := *s
	out.Peers = make([]PeerView, len(s.Peers))
	for i, p := range s.Peers {
		p.Addrs = []string{}
		conns := make([]ConnView, len(p.Connections))
		for j, c := range p.Connections {
			c.Remote = ""
			conns[j] = c
		}
		p.Connections = conns
		p.LastError = "" // its kind and time stay
		out.Peers[i] = p
	}
	out.Agreements = make([]AgreementStatus, len(s.Agreements))
	for i, ag := range s.Agreements {
		ag.Reasons = slices.Clone(ag.Reasons)
		for j, r := range ag.Reasons {
			// A reason's details follow its first ": ": the error of a request for the
			// provider's report (a failed dial names its addresses), a sink's error (its
			// destination), what the provider says (a peer's text). The page keeps the
			// reason, 'ssanet status' on the agent's host has the details.
			ag.Reasons[j], _, _ = strings.Cut(r, ": ")
		}
		ag.AssessError, _, _ = strings.Cut(ag.AssessError, ": ")
		out.Agreements[i] = ag
	}
	out.Sinks = slices.Clone(s.Sinks)
	for i := range out.Sinks {
		if out.Sinks[i].LastError != "" {
			// A sink's error names its destination: a webhook's URL, which may hold its
			// token, a syslog server, a file. Its time stays.
			out.Sinks[i].LastError = sinkErrorOnPage
		}
		if out.Sinks[i].Stopped != "" {
			out.Sinks[i].Stopped = sinkStoppedOnPage // it names the sink's files
		}
	}
	return &out
}

// sinkErrorOnPage stands for a sink's last error on the status page.
const sinkErrorOnPage = "a write failed ('ssanet sinks' on the agent's host says why)"

// sinkStoppedOnPage stands for why a sink stopped on the status page.
const sinkStoppedOnPage = "stopped ('ssanet sinks' on the agent's host says why)"

// statusPageCSP is the page's Content-Security-Policy: nothing but its own inline style and
// script (by hash) and its requests to this address.
func statusPageCSP(page []byte) (string, error) {
	script, err := inlineHash(page, "<script>", "</script>")
	if err != nil {
		return "", err
	}
	style, err := inlineHash(page, "<style>", "</style>")
	if err != nil {
		return "", err
	}
	return "default-src 'none'; script-src '" + script + "'; style-src '" + style + "'; connect-src 'self'; " +
		"img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
		"require-trusted-types-for 'script'; trusted-types 'none'", nil
}

// inlineHash is the CSP source of the one element of page between open and close: its
// SHA-256, in base64.
func inlineHash(page []byte, open, close string) (string, error) {
	_, rest, ok := bytes.Cut(page, []byte(open))
	body, _, ok2 := bytes.Cut(rest, []byte(close))
	if !ok || !ok2 || bytes.Contains(rest[len(body):], []byte(open)) {
		return "", fmt.Errorf("status page: want exactly one %s…%s", open, close)
	}
	sum := sha256.Sum256(body)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:]), nil
}

// serveStatusPage adds the status page and its snapshot to the metrics server's mux.
func (a *Agent) serveStatusPage(mux *http.ServeMux) {
	csp, err := statusPageCSP(statusPageHTML)
	if err != nil {
		panic(err) // the embedded page is the binary's own, checked by its tests
	}
	page := func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", csp)
		setPageHeaders(h)
		_, _ = w.Write(statusPageHTML)
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /status", page)
	snap := &pageSnapshot{take: a.Status, now: time.Now, log: a.log}
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		setPageHeaders(h)
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Content-Type", "application/json")
		body, err := snap.get()
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			// The error may name files of the home: the log has it, the page says where to look.
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "the agent could not read its state; see its log"})
			return
		}
		_, _ = w.Write(body)
	})
}

// pageSnapshotAge is how long the page's snapshot is served again: however many pages poll
// the address, the agent reads its state at most once per pageSnapshotAge for them.
const pageSnapshotAge = 500 * time.Millisecond

// pageSnapshotLogEvery is how often a snapshot that cannot be taken is logged: a page polls
// every second.
const pageSnapshotLogEvery = time.Minute

// pageSnapshot is the page's snapshot in JSON, taken again when older than pageSnapshotAge.
// A snapshot that cannot be taken is tried again at the next request and logged at most once
// per pageSnapshotLogEvery.
type pageSnapshot struct {
	take func() (*Status, error)
	now  func() time.Time
	log  *slog.Logger

	mu     sync.Mutex // held while a snapshot is taken: the pages wait for one, never take several
	body   []byte
	at     time.Time
	logged time.Time // when a failure was last logged
	failed int       // failures since then
}

func (p *pageSnapshot) get() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.body != nil && p.now().Sub(p.at) < pageSnapshotAge {
		return p.body, nil
	}
	st, err := p.take()
	if err != nil {
		p.failed++
		if now := p.now(); now.Sub(p.logged) >= pageSnapshotLogEvery {
			p.log.Warn("status page: the agent's state could not be read", "err", err, "failures", p.failed)
			p.logged, p.failed = now, 0
		}
		return nil, err
	}
	body, err := json.Marshal(st.pageStatus())
	if err != nil {
		return nil, err
	}
	p.body, p.at = append(body, '\n'), p.now()
	return p.body, nil
}

// setPageHeaders are the headers of every answer of the status page.
func setPageHeaders(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}
