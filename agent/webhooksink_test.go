package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/protocol"
)

// TestWebhookSinkSecrets: a webhook sink's Authorization comes from a file or an environment
// variable and its HMAC key from a file, never from config.yaml, and neither is logged; the
// batches it refuses go to HOME/sinks/NAME.poison.
func TestWebhookSinkSecrets(t *testing.T) {
	dir := t.TempDir()
	const auth, key = "Bearer from-a-secret", "k3y-0123456789abcdef"
	authFile, keyFile := filepath.Join(dir, "auth"), filepath.Join(dir, "key")
	if err := os.WriteFile(authFile, []byte(auth+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSANET_TEST_WEBHOOK_AUTH", auth)
	var (
		mu  sync.Mutex
		bad []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(key))
		m.Write(b)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") != auth || r.Header.Get(sink.SignatureHeader) != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			bad = append(bad, r.Header.Get("Authorization")+" "+r.Header.Get(sink.SignatureHeader))
		}
		if bytes.Contains(b, []byte(`"seq":7`)) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, `{"errors":false,"items":[{"index":{"status":201}}]}`)
	}))
	defer srv.Close()
	for _, c := range []SinkConfig{
		{Name: "file", Type: "webhook", URL: srv.URL, AuthFile: authFile, HMACKeyFile: keyFile, Body: "ndjson", PoisonAfter: 1},
		{Name: "env", Type: "webhook", URL: srv.URL, AuthEnv: "SSANET_TEST_WEBHOOK_AUTH", HMACKeyFile: keyFile, Body: "es-bulk", Index: "ssanet", PoisonAfter: 1},
	} {
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		sinksDir := filepath.Join(dir, "home", SinksDir)
		w, err := c.open(sinksDir, func() []*agreementRun { return nil }, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for _, seq := range []uint64{6, 7} {
			rec := sink.Record{SSAID: "ssa-1", Seq: seq, Received: time.Now(), Format: "eve", Record: []byte(`{}`)}
			if err := w.Write(context.Background(), []sink.Record{rec}); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(logs.String(), "from-a-secret") || strings.Contains(logs.String(), key) {
			t.Fatalf("%s: a secret was logged: %s", c.Name, logs.String())
		}
		ents, err := os.ReadDir(filepath.Join(sinksDir, c.Name+".poison"))
		if err != nil || len(ents) != 2 || w.(*sink.Webhook).Poisoned() != 1 {
			t.Fatalf("%s: poison dir %v (%v)", c.Name, ents, err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("requests without the authorization or the signature: %q", bad)
	}
}

// TestSinkConfigRefused: sink configs that are refused, with what to fix.
func TestSinkConfigRefused(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tiny\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    SinkConfig
		want error
	}{
		{SinkConfig{Type: "webhook", URL: "http://x", AuthFile: "a", AuthEnv: "B"}, sink.ErrWebhookConfig},
		{SinkConfig{Type: "webhook", URL: "http://x", AuthFile: filepath.Join(dir, "missing")}, ErrSinkSecret},
		{SinkConfig{Type: "webhook", URL: "http://x", AuthEnv: "SSANET_TEST_UNSET_VARIABLE"}, ErrSinkSecret},
		{SinkConfig{Type: "webhook", URL: "http://x", HMACKeyFile: short}, ErrSinkSecret},
		{SinkConfig{Type: "webhook", URL: "http://x", Body: "es-bulk"}, sink.ErrWebhookConfig},
		{SinkConfig{Type: "webhook", URL: "http://x", Body: "xml"}, sink.ErrWebhookConfig},
		{SinkConfig{Type: "jsonl", Path: "p", MaxSizeMiB: -1}, nil},
	} {
		err := tc.c.validate()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%+v: %v, want %v", tc.c, err, tc.want)
		}
	}
}

// TestRetentionOf: a JSONL sink deletes by the retention of the SSA each record is under.
func TestRetentionOf(t *testing.T) {
	runs := []*agreementRun{
		{ssa: &protocol.SSA{ID: "ssa-a", Policy: &protocol.Policy{Handling: &protocol.Handling{Retention: protocol.Duration(3600)}}}},
		{ssa: &protocol.SSA{ID: "ssa-b"}},
	}
	of := retentionOf(func() []*agreementRun { return runs })
	for id, want := range map[string]time.Duration{"ssa-a": time.Hour, "ssa-b": 0, "ssa-c": 0} {
		if d, ok := of(id); d != want || ok != (want > 0) {
			t.Errorf("%s: %s %v, want %s", id, d, ok, want)
		}
	}
}

// refineSample refines the sample EVE records under the provider's run of SSA id; none
// refined fails the test.
func refineSample(t *testing.T, prov *Agent, id string) (*agreementRun, [][]byte) {
	t.Helper()
	run := prov.mgr.run(id)
	lines := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	refined, _, err := run.refine(protocol.FormatEVE, lines, time.Now().Year(), time.Now)
	if err != nil || len(refined) == 0 {
		t.Fatalf("%d refined: %v", len(refined), err)
	}
	return run, refined
}

// TestWebhookSinkGoesOn: the forwarder, fed by a real exchange, gets past a batch its webhook
// refuses (4xx): it is set aside in HOME/sinks/NAME.poison and the next batch is delivered.
func TestWebhookSinkGoesOn(t *testing.T) {
	prov, req, s := exchangePair(t)
	run, refined := refineSample(t, prov, s.ID)
	k := uint64(len(refined))
	var (
		mu   sync.Mutex
		got  []sink.Record
		seen int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var recs []sink.Record
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &recs); err != nil || len(recs) == 0 {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if recs[0].Seq == 1 {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		got = append(got, recs...)
	}))
	defer srv.Close()
	enqueue := func() {
		t.Helper()
		if _, err := prov.store.Enqueue(s.ID, refined, k, 0); err != nil {
			t.Fatal(err)
		}
		prov.deliver.wake(run)
	}
	enqueue()
	waitRecords(t, req, s.ID, k)
	sk := startSinks(t, req, req.log, SinkConfig{Name: "hook", Type: "webhook", URL: srv.URL, PoisonAfter: 2, Relation: "organisation"})
	progress := func(want uint64) {
		t.Helper()
		waitFor(t, 20*time.Second, func() (bool, string) {
			b, _ := os.ReadFile(filepath.Join(req.home, SinksDir, "hook.json"))
			var p map[string]uint64
			return json.Unmarshal(b, &p) == nil && p[s.ID] == want, "sink progress " + string(b)
		})
	}
	progress(k) // past the refused batch
	enqueue()
	waitRecords(t, req, s.ID, 2*k)
	sk.kick()
	progress(2 * k)
	mu.Lock()
	defer mu.Unlock()
	if uint64(len(got)) != k || got[0].Seq != k+1 {
		t.Fatalf("the webhook took %d records from %v, want %d from %d", len(got), got[:min(1, len(got))], k, k+1)
	}
	ents, err := os.ReadDir(filepath.Join(req.home, SinksDir, "hook.poison"))
	if err != nil || len(ents) != 2 {
		t.Fatalf("poison dir: %v %v", ents, err)
	}
}
