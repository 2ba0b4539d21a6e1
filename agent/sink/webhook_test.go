package sink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testAuth = "Bearer s3cret-token"
	testKey  = "0123456789abcdef0123456789abcdef"
)

// hook is a webhook receiver: each request is checked (authorization, signature), parsed
// (as body says) and answered by answer, given the request's number (from 1) and records.
type hook struct {
	t      *testing.T
	body   string
	answer func(n int, recs []Record) int
	mu     sync.Mutex
	n      int
	got    []Record // the records of the requests answered 2xx
	bad    []string // what was wrong with requests, read after the test
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	fail := func(f string, a ...any) {
		h.bad = append(h.bad, fmt.Sprintf(f, a...))
		w.WriteHeader(http.StatusTeapot)
	}
	if err != nil {
		fail("read: %v", err)
		return
	}
	if got := r.Header.Get("Authorization"); got != testAuth {
		fail("authorization %q", got)
		return
	}
	m := hmac.New(sha256.New, []byte(testKey))
	m.Write(b)
	if got, want := r.Header.Get(SignatureHeader), "sha256="+hex.EncodeToString(m.Sum(nil)); got != want {
		fail("signature %q, want %q", got, want)
		return
	}
	recs, err := parseBody(h.body, b)
	if err != nil {
		fail("%s body: %v", h.body, err)
		return
	}
	code := h.answer(h.n, recs)
	if code/100 == 2 {
		h.got = append(h.got, recs...)
	}
	w.WriteHeader(code)
	if h.body == BodyESBulk && code == 200 {
		items := strings.TrimSuffix(strings.Repeat(`{"index":{"status":201}},`, len(recs)), ",")
		fmt.Fprintf(w, `{"took":1,"errors":false,"items":[%s]}`, items)
	}
}

func (h *hook) result() (n int, got []Record, bad []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, append([]Record(nil), h.got...), append([]string(nil), h.bad...)
}

// parseBody parses a body as an Elasticsearch or a log shipper would.
func parseBody(kind string, b []byte) ([]Record, error) {
	var recs []Record
	switch kind {
	case BodyJSON:
		if err := json.Unmarshal(b, &recs); err != nil {
			return nil, err
		}
		return recs, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		if kind == BodyESBulk && i%2 == 0 {
			var action struct {
				Index struct {
					Index string `json:"_index"`
					ID    string `json:"_id"`
				} `json:"index"`
			}
			if err := json.Unmarshal(sc.Bytes(), &action); err != nil || action.Index.Index != "ssanet-records" || action.Index.ID == "" {
				return nil, fmt.Errorf("line %d: action %q", i+1, sc.Bytes())
			}
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		recs = append(recs, r)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		return nil, errors.New("no final newline")
	}
	return recs, sc.Err()
}

func testRecords(ssa string, first, n int) []Record {
	var out []Record
	for i := range n {
		out = append(out, Record{SSAID: ssa, Seq: uint64(first + i), Received: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
			Format: "eve", Record: json.RawMessage(fmt.Sprintf(`{"n":%d}`, first+i))})
	}
	return out
}

// newTestWebhook starts h and a webhook to it; logs go to the returned buffer.
func newTestWebhook(t *testing.T, h http.Handler, body string, cfg WebhookConfig) (*Webhook, *syncBuffer) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var logs syncBuffer
	cfg.URL, cfg.Authorization, cfg.HMACKey, cfg.Body = srv.URL, testAuth, []byte(testKey), body
	cfg.Backoff, cfg.PoisonDir, cfg.Log, cfg.Name = time.Millisecond, filepath.Join(t.TempDir(), "hook.poison"), slog.New(slog.NewTextHandler(&logs, nil)), "hook"
	if body == BodyESBulk {
		cfg.Index = "ssanet-records"
	}
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, &logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWebhookDelivers: each body kind, with the authorization and a signature the receiver
// verifies; 5xx answers (and a 429) are retried until the webhook takes the batch.
func TestWebhookDelivers(t *testing.T) {
	for _, body := range []string{BodyJSON, BodyNDJSON, BodyESBulk} {
		for _, fails := range []int{0, 3} {
			t.Run(fmt.Sprintf("%s/fails=%d", body, fails), func(t *testing.T) {
				h := &hook{t: t, body: body, answer: func(n int, _ []Record) int {
					switch {
					case n > fails:
						return 200
					case n == 2:
						return http.StatusTooManyRequests
					}
					return http.StatusServiceUnavailable
				}}
				w, logs := newTestWebhook(t, h, body, WebhookConfig{})
				recs := testRecords("ssa-1", 1, 3)
				if err := w.Write(context.Background(), recs); err != nil {
					t.Fatal(err)
				}
				n, got, bad := h.result()
				if len(bad) > 0 || n != fails+1 || len(got) != 3 || got[2].Seq != 3 || string(got[1].Record) != `{"n":2}` {
					t.Fatalf("requests %d, got %+v, bad %q", n, got, bad)
				}
				if strings.Contains(logs.String(), "s3cret") {
					t.Fatalf("the authorization was logged: %s", logs)
				}
			})
		}
	}
}

// TestWebhookUnreachable: a webhook that answers 5xx every time makes Write fail after its
// tries (the sink tries the batch again later), and nothing is set aside.
func TestWebhookUnreachable(t *testing.T) {
	h := &hook{t: t, body: BodyNDJSON, answer: func(int, []Record) int { return 502 }}
	w, _ := newTestWebhook(t, h, BodyNDJSON, WebhookConfig{Tries: 4})
	err := w.Write(context.Background(), testRecords("ssa-1", 1, 2))
	if n, _, _ := h.result(); !errors.Is(err, ErrWebhookUnreachable) || n != 4 || w.Poisoned() != 0 {
		t.Fatalf("err %v after %d requests, poisoned %d", err, n, w.Poisoned())
	}
}

// TestWebhookDenied: a webhook that refuses the sink itself (wrong credentials or address)
// fails the sink on every write; no batch is set aside for it, however often it is tried, so
// the sink shows as failing instead of draining every record into its poison directory.
func TestWebhookDenied(t *testing.T) {
	for _, code := range []int{401, 403, 404} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			h := &hook{t: t, body: BodyNDJSON, answer: func(int, []Record) int { return code }}
			w, _ := newTestWebhook(t, h, BodyNDJSON, WebhookConfig{Tries: 4, PoisonAfter: 2})
			for range 3 {
				if err := w.Write(context.Background(), testRecords("ssa-1", 1, 2)); !errors.Is(err, ErrWebhookDenied) {
					t.Fatalf("Write: %v, want %v", err, ErrWebhookDenied)
				}
			}
			if n, _, _ := h.result(); n != 3 || w.Poisoned() != 0 {
				t.Fatalf("%d requests for 3 writes, %d records set aside; want 3 and none", n, w.Poisoned())
			}
		})
	}
}

// TestWebhookTimeout: a request that times out is retried.
func TestWebhookTimeout(t *testing.T) {
	h := &hook{t: t, body: BodyJSON, answer: func(int, []Record) int { return 200 }}
	slow := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := false
		once.Do(func() { first = true })
		if first {
			select { // held past the client's timeout
			case <-r.Context().Done():
			case <-slow:
			}
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(slow) })
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Authorization: testAuth, HMACKey: []byte(testKey), Timeout: 100 * time.Millisecond,
		Backoff: time.Millisecond, PoisonDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), testRecords("ssa-1", 1, 2)); err != nil {
		t.Fatal(err)
	}
	if _, got, bad := h.result(); len(got) != 2 || len(bad) > 0 {
		t.Fatalf("got %v, bad %q", got, bad)
	}
}

// TestWebhookPoison: a batch answered 4xx is tried poison-after times, set aside in a file
// named by SSA hash and seq range (its body as sent), counted, logged once; the next batch
// is delivered. The same for an Elasticsearch _bulk answer that refuses an item.
func TestWebhookPoison(t *testing.T) {
	for _, tc := range []struct {
		body   string
		refuse func(w http.ResponseWriter)
	}{
		{BodyNDJSON, func(w http.ResponseWriter) { w.WriteHeader(400) }},
		{BodyJSON, func(w http.ResponseWriter) { w.WriteHeader(422) }},
		{BodyESBulk, func(w http.ResponseWriter) {
			fmt.Fprint(w, `{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}`)
		}},
	} {
		t.Run(tc.body, func(t *testing.T) {
			var (
				refusedMu sync.Mutex
				tries     int
			)
			h := &hook{t: t, body: tc.body, answer: func(int, []Record) int { return 200 }}
			w, logs := newTestWebhook(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				recs, err := parseBody(tc.body, b)
				if err == nil && len(recs) > 0 && recs[0].Seq%4 == 1 { // batches 1-2 and 5-6
					refusedMu.Lock()
					tries++
					refusedMu.Unlock()
					tc.refuse(rw)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(b))
				h.ServeHTTP(rw, r)
			}), tc.body, WebhookConfig{PoisonAfter: 3})
			ctx := context.Background()
			if err := w.Write(ctx, testRecords("ssa-1", 1, 2)); err != nil {
				t.Fatalf("poisoned batch: %v", err)
			}
			if err := w.Write(ctx, testRecords("ssa-1", 3, 2)); err != nil {
				t.Fatalf("next batch: %v", err)
			}
			if err := w.Write(ctx, testRecords("ssa-1", 5, 2)); err != nil {
				t.Fatalf("second poisoned batch: %v", err)
			}
			_, got, bad := h.result()
			if len(bad) > 0 || len(got) != 2 || got[0].Seq != 3 {
				t.Fatalf("delivered %+v, bad %q", got, bad)
			}
			refusedMu.Lock()
			defer refusedMu.Unlock()
			if tries != 6 || w.Poisoned() != 4 {
				t.Fatalf("refused batches tried %d times, poisoned %d records; want 6 and 4", tries, w.Poisoned())
			}
			if n := strings.Count(logs.String(), "webhook refused a batch"); n != 1 { // at most one a minute
				t.Fatalf("%d log lines for the poisoned batches:\n%s", n, logs)
			}
			ents, err := os.ReadDir(w.cfg.PoisonDir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if len(names) != 4 || !regexp.MustCompile(`^[0-9a-f]{16}-1-2\.answer$`).MatchString(names[0]) ||
				!regexp.MustCompile(`^[0-9a-f]{16}-1-2\.body$`).MatchString(names[1]) ||
				!regexp.MustCompile(`^[0-9a-f]{16}-5-6\.body$`).MatchString(names[3]) {
				t.Fatalf("poison dir holds %q", names)
			}
			b, err := os.ReadFile(filepath.Join(w.cfg.PoisonDir, names[1]))
			if err != nil {
				t.Fatal(err)
			}
			if recs, err := parseBody(tc.body, b); err != nil || len(recs) != 2 || recs[1].Seq != 2 {
				t.Fatalf("set aside %v (%v)", recs, err)
			}
		})
	}
}

// TestWebhookPoisonGrowingBatch: a refused chunk written again from the same place with the
// records received since added is the same batch: its refusals add up to poison-after and it
// is set aside, whatever tries is, instead of starting the count again at each Write.
func TestWebhookPoisonGrowingBatch(t *testing.T) {
	var (
		mu    sync.Mutex
		tries int
	)
	w, _ := newTestWebhook(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		tries++
		mu.Unlock()
		rw.WriteHeader(http.StatusBadRequest)
	}), BodyNDJSON, WebhookConfig{Tries: 1, PoisonAfter: 3})
	ctx := context.Background()
	for n := 2; n <= 3; n++ {
		if err := w.Write(ctx, testRecords("ssa-1", 1, n)); !errors.Is(err, ErrWebhookRefused) {
			t.Fatalf("refusal %d of the batch from record 1 (%d records): %v, want ErrWebhookRefused", n-1, n, err)
		}
	}
	if err := w.Write(ctx, testRecords("ssa-1", 1, 4)); err != nil {
		t.Fatalf("third refusal of the batch from record 1: %v, want it set aside", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries != 3 || w.Poisoned() != 4 {
		t.Fatalf("%d requests, %d records set aside; want 3 and 4", tries, w.Poisoned())
	}
	if m, _ := filepath.Glob(filepath.Join(w.cfg.PoisonDir, "*-1-4.body")); len(m) != 1 {
		t.Fatalf("set aside as %v, want one file of records 1-4", m)
	}
}

// TestWebhookConfig: the config a webhook refuses.
func TestWebhookConfig(t *testing.T) {
	for _, c := range []WebhookConfig{
		{URL: "ftp://x", PoisonDir: "d"},
		{URL: "http://x", PoisonDir: "d", Body: "xml"},
		{URL: "http://x", PoisonDir: "d", Body: BodyESBulk},
		{URL: "http://x", PoisonDir: "d", Body: BodyESBulk, Index: "Upper"},
		{URL: "http://x", PoisonDir: "d", Index: "i"},
		{URL: "http://x", PoisonDir: "d", Authorization: "a\r\nX: y"},
		{URL: "http://x", PoisonDir: "d", Tries: 99},
		{URL: "http://x"},
	} {
		if _, err := NewWebhook(c); !errors.Is(err, ErrWebhookConfig) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
