package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestPrometheusScrapes: a Prometheus server on loopback (Debian package prometheus) scrapes
// a provider's metrics address: the target is up and the provider's ledger series of the SSA
// counts the records shared.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (Debian package prometheus): no server to scrape the agent")
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	prov := newAgent(t, "provider", "", withYAML("metrics: "+metrics))
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))
	const n = 10
	if v := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil)); v.Records != n || v.Queued[id] != n {
		t.Fatalf("ingested %+v, want %d records", v, n)
	}

	dir := t.TempDir()
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ssanet
    static_configs:
      - targets: [%q]
`, metrics), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("Prometheus's log:\n%s", b[max(0, len(b)-4000):])
		}
	})

	for _, q := range []struct{ query, want string }{
		{`up{job="ssanet"}`, "1"},
		{fmt.Sprintf(`ssanet_provider_records_total{job="ssanet",ssa=%q,outcome="shared"}`, id), fmt.Sprint(n)},
	} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			got, err := promQuery(web, q.query)
			if err == nil && got == q.want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus query %s: %q, %v; want %s", q.query, got, err, q.want)
			}
			time.Sleep(250 * time.Millisecond) // poll of the server's next scrape, with a deadline
		}
	}
}

// promQuery runs an instant query on a Prometheus server's HTTP API and returns the value of
// its single sample.
func promQuery(addr, query string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	if r.Status != "success" || len(r.Data.Result) != 1 {
		return "", fmt.Errorf("status %s, %d samples", r.Status, len(r.Data.Result))
	}
	v, _ := r.Data.Result[0].Value[1].(string)
	return v, nil
}
