package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// editConfig rewrites a's config.yaml with edit applied to what it holds now.
func editConfig(t *testing.T, a *Agent, edit func(*Config)) {
	t.Helper()
	path := filepath.Join(a.home, ConfigFile)
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(&c)
	if err := WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
}

// sinkNames are the names of a's running sinks, in order.
func sinkNames(t *testing.T, a *Agent) []string {
	t.Helper()
	st, err := a.sinks.states()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range st {
		out = append(out, s.Name)
	}
	return out
}

// sourceKeys are the keys of a's running sources, sorted.
func sourceKeys(a *Agent) []string {
	a.sources.mu.Lock()
	defer a.sources.mu.Unlock()
	var out []string
	for k := range a.sources.running {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestReloadBrokenConfigKept: a config that does not load changes nothing: the sinks, sources
// and allow-list stay, the error says why, and the reload is counted as failed.
func TestReloadBrokenConfigKept(t *testing.T) {
	dir := t.TempDir()
	a := newTestAgent(t, "req", func(c *Config) {
		c.Sinks = []SinkConfig{{Name: "siem", Type: "jsonl", Path: filepath.Join(dir, "siem.jsonl")}}
		c.Ingest.Follow = []FollowConfig{{Path: filepath.Join(dir, "eve.json"), Format: protocol.FormatEVE}}
	})
	path := filepath.Join(a.home, ConfigFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantSinks, wantSources := sinkNames(t, a), sourceKeys(a)
	for i, tc := range []struct {
		name, config, want string
	}{
		{"unknown key", strings.Replace(string(good), "\nsinks:", "\nsinkz:", 1), "field sinkz not found"},
		{"not yaml", string(good) + "  - : :\n\t", "yaml"},
		{"cut short", string(good[:len(good)/3]), "config incomplete"},
		{"invalid sink", strings.Replace(string(good), "type: jsonl\n", "type: ftp\n", 1), "type must be jsonl, syslog, webhook or misp-feed"},
		{"invalid allow", strings.Replace(string(good), "\naccept: auto", "\naccept: auto\nallow: [not-a-peer]", 1), "is not a peer ID"},
		{"invalid log level", string(good) + "log-level: loud\n", "log-level must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := a.Reload()
			if !errors.Is(err, ErrReload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reload: %v, want ErrReload saying %q", err, tc.want)
			}
			if got := sinkNames(t, a); !slices.Equal(got, wantSinks) {
				t.Errorf("sinks %v after a failed reload, want %v", got, wantSinks)
			}
			if got := sourceKeys(a); !slices.Equal(got, wantSources) {
				t.Errorf("sources %v after a failed reload, want %v", got, wantSources)
			}
			if got := testutil.ToFloat64(a.reloads.WithLabelValues(reloadFailed)); got != float64(i+1) {
				t.Errorf("%v failed reloads counted, want %d", got, i+1)
			}
		})
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := a.Reload()
	if err != nil || len(rep.Restart) != 0 {
		t.Fatalf("reload of the config the agent started with: %+v, %v", rep, err)
	}
	if got := testutil.ToFloat64(a.reloads.WithLabelValues(reloadOK)); got != 1 {
		t.Errorf("%v reloads counted ok, want 1", got)
	}
}

// TestReloadSinks: a reload adds a sink, which forwards every record from the first (or, with
// read-from: end, those received after it was added); removes
// one, which forwards nothing more; changes one, which goes on from its progress; and leaves
// an unchanged one running, which forwards each record exactly once.
func TestReloadSinks(t *testing.T) {
	ctx := context.Background()
	prov, req, s := exchangePair(t)
	dir := t.TempDir()
	jsonl := func(name string) SinkConfig {
		return SinkConfig{Name: name, Type: "jsonl", Path: filepath.Join(dir, name+".jsonl")}
	}
	editConfig(t, req, func(c *Config) { c.Sinks = []SinkConfig{jsonl("keep"), jsonl("gone"), jsonl("moved")} })
	if rep, err := req.Reload(); err != nil || !slices.Equal(rep.Applied, []string{"sink keep added", "sink gone added", "sink moved added", "offers readvertised"}) {
		t.Fatalf("reload: %+v, %v", rep, err)
	}
	records := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	half := len(records) / 2
	ingest := func(recs [][]byte) {
		t.Helper()
		if _, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(append(bytes.Join(recs, []byte("\n")), '\n'))); err != nil {
			t.Fatal(err)
		}
	}
	ingest(records[:half])
	waitRecords(t, req, s.ID, uint64(half))
	waitLines := func(name string, n int) {
		t.Helper()
		waitFor(t, 10*time.Second, func() (bool, string) {
			got := jsonlLines(t, filepath.Join(dir, name+".jsonl"))
			return got == n, fmt.Sprintf("sink %s holds %d records, want %d", name, got, n)
		})
	}
	for _, n := range []string{"keep", "gone", "moved"} {
		waitLines(n, half)
	}
	moved := jsonl("moved")
	moved.Path = filepath.Join(dir, "moved-2.jsonl")
	tail := jsonl("tail")
	tail.ReadFrom = ReadFromEnd
	editConfig(t, req, func(c *Config) { c.Sinks = []SinkConfig{jsonl("keep"), moved, jsonl("new"), tail} })
	rep, err := req.Reload()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Applied)
	if want := []string{"offers readvertised", "sink gone removed", "sink moved changed", "sink new added", "sink tail added"}; !slices.Equal(rep.Applied, want) {
		t.Errorf("applied %q, want %q", rep.Applied, want)
	}
	if got, want := sinkNames(t, req), []string{"keep", "moved", "new", "tail"}; !slices.Equal(got, want) {
		t.Errorf("sinks %v, want %v", got, want)
	}
	ingest(records[half:])
	n := len(records)
	waitRecords(t, req, s.ID, uint64(n))
	waitLines("keep", n)
	waitLines("new", n)
	waitLines("moved-2", n-half)
	waitLines("tail", n-half) // read-from: end: only what was received after it was added
	if got := jsonlLines(t, filepath.Join(dir, "gone.jsonl")); got != half {
		t.Errorf("removed sink holds %d records, want the %d it had", got, half)
	}
	if got := jsonlLines(t, filepath.Join(dir, "moved.jsonl")); got != half {
		t.Errorf("changed sink's old file holds %d records, want %d", got, half)
	}
}

// jsonlLines counts the records in a JSONL sink's file, failing on a repeated one.
func jsonlLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		k := string(line)
		if seen[k] {
			t.Fatalf("%s: record forwarded twice: %s", path, line)
		}
		seen[k] = true
	}
	return len(seen)
}

// TestReloadSources: a reload starts a new syslog listener and followed file, stops those the
// config no longer has (the port is free again), and keeps those unchanged running.
func TestReloadSources(t *testing.T) {
	dir := t.TempDir()
	eve := filepath.Join(dir, "eve.json")
	udp := freePort(t, "udp")
	tcp := freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.SyslogUDP = udp })
	editConfig(t, a, func(c *Config) {
		c.Ingest.SyslogUDP = ""
		c.Ingest.SyslogTCP = tcp
		c.Ingest.Follow = []FollowConfig{{Path: eve, Format: protocol.FormatEVE}}
	})
	rep, err := a.Reload()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"follow " + eve, "syslog-tcp " + tcp}
	if got := sourceKeys(a); !slices.Equal(got, want) {
		t.Fatalf("sources %v after reload (%+v), want %v", got, rep.Applied, want)
	}
	pc, err := net.ListenPacket("udp", udp)
	if err != nil {
		t.Fatalf("the removed syslog-udp listener still holds %s: %v", udp, err)
	}
	pc.Close()
	line := `{"timestamp":"2026-11-23T10:00:00.000000+0000","event_type":"alert","src_ip":"10.0.0.1","dest_ip":"192.0.2.1"}` + "\n"
	if err := os.WriteFile(eve, []byte(line+line), 0o600); err != nil {
		t.Fatal(err)
	}
	waitIngested(t, a, 2)
	c, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatalf("the added syslog-tcp listener: %v", err)
	}
	if _, err := fmt.Fprint(c, "<34>1 2026-11-23T10:00:00Z h app - - - one\n"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitIngested(t, a, 3)
	// Followed from where it got: records appended after a reload that keeps it are read once.
	editConfig(t, a, func(c *Config) { c.Ingest.SyslogTCP = "" })
	if _, err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(eve, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitIngested(t, a, 4)
	if _, err := net.Dial("tcp", tcp); err == nil {
		t.Error("the removed syslog-tcp listener still accepts connections")
	}
}

// TestReloadSourceTaken: a new listener whose address is taken fails the reload and changes
// no source.
func TestReloadSourceTaken(t *testing.T) {
	dir := t.TempDir()
	eve := filepath.Join(dir, "eve.json")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.Follow = []FollowConfig{{Path: eve, Format: protocol.FormatEVE}} })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	editConfig(t, a, func(c *Config) {
		c.Ingest.Follow = nil
		c.Ingest.SyslogTCP = ln.Addr().String()
	})
	if _, err := a.Reload(); !errors.Is(err, ErrSourceReload) {
		t.Fatalf("reload with a taken port: %v, want ErrSourceReload", err)
	}
	if got, want := sourceKeys(a), []string{"follow " + eve}; !slices.Equal(got, want) {
		t.Errorf("sources %v, want %v unchanged", got, want)
	}
}

// TestReloadAllowAndLevel: a reload that drops a peer from the allow-list closes its
// connection and refuses new ones; the log level follows log-level, and back; keys that
// need a restart are reported.
func TestReloadAllowAndLevel(t *testing.T) {
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	prov, req, _ := agreedPair(t, requestTemplate(t))
	other := newTestAgent(t, "other", nil)
	a := newTestAgentWith(t, "gate", nil, Options{Level: level})
	ctx := context.Background()
	for _, p := range []*Agent{prov, req} {
		if err := a.host.Connect(ctx, addrInfo(p)); err != nil {
			t.Fatal(err)
		}
	}
	editConfig(t, a, func(c *Config) {
		c.Allow = []string{prov.ID().String(), other.ID().String()}
		c.LogLevel = "debug"
		c.Listen = []string{"/ip4/127.0.0.1/tcp/1"}
		c.MaxQueuedPerPeer = 7
	})
	rep, err := a.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"listen", "max-queued-per-peer"}; !slices.Equal(rep.Restart, want) {
		t.Errorf("restart %v, want %v", rep.Restart, want)
	}
	if !slices.Contains(rep.Applied, "allow") || !slices.Contains(rep.Applied, "log-level") {
		t.Errorf("applied %v, want allow and log-level", rep.Applied)
	}
	waitFor(t, 5*time.Second, func() (bool, string) {
		c := a.host.Network().Connectedness(req.ID())
		return c != network.Connected, "the peer dropped from the allow-list is still " + c.String()
	})
	if a.host.Network().Connectedness(prov.ID()) != network.Connected {
		t.Error("the connection of a peer still allowed was closed")
	}
	if err := req.host.Connect(ctx, addrInfo(a)); err == nil {
		waitFor(t, 5*time.Second, func() (bool, string) {
			c := a.host.Network().Connectedness(req.ID())
			return c != network.Connected, "a peer outside the allow-list connected again"
		})
	}
	if err := other.host.Connect(ctx, addrInfo(a)); err != nil {
		t.Errorf("a peer added to the allow-list cannot connect: %v", err)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %v after reload, want debug", level.Level())
	}
	editConfig(t, a, func(c *Config) { c.LogLevel = "" })
	if _, err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("level %v after log-level was removed, want warn, the level at start", level.Level())
	}
}

// TestReloadKeyChanged: an identity key replaced under the running agent is reported as
// needing a restart; the agent goes on as itself.
func TestReloadKeyChanged(t *testing.T) {
	a := newTestAgent(t, "a", nil)
	other := filepath.Join(t.TempDir(), "other")
	if _, err := Init(other, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(other, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.home, KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := a.Reload()
	if err != nil || !slices.Equal(rep.Restart, []string{KeyFile}) {
		t.Fatalf("reload after the key changed: %+v, %v; want %s to need a restart", rep, err, KeyFile)
	}
}

// TestReloadSinkSecrets: a reload restarts a sink whose credential file changed, though its
// config did not, and leaves it alone when nothing changed.
func TestReloadSinkSecrets(t *testing.T) {
	dir := t.TempDir()
	auth := filepath.Join(dir, "auth")
	if err := os.WriteFile(auth, []byte("Bearer one"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newTestAgent(t, "req", func(c *Config) {
		c.Sinks = []SinkConfig{{Name: "hook", Type: "webhook", URL: "http://127.0.0.1:1/bulk", AuthFile: auth}}
	})
	for _, tc := range []struct {
		name, token string
		want        []string
	}{
		{"unchanged", "Bearer one", []string{"offers readvertised"}},
		{"token renewed", "Bearer two", []string{"sink hook changed", "offers readvertised"}},
	} {
		if err := os.WriteFile(auth, []byte(tc.token), 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := a.Reload()
		if err != nil || !slices.Equal(rep.Applied, tc.want) {
			t.Errorf("%s: reload %+v, %v; want applied %v", tc.name, rep, err, tc.want)
		}
	}
}
