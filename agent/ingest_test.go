package agent

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// waitIngested polls the agent's ingest counter until it reaches n.
func waitIngested(t *testing.T, a *Agent, n float64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		got := testutil.ToFloat64(a.m.ingested)
		if got > n {
			t.Fatalf("%v records ingested, want %v", got, n)
		}
		return got == n, fmt.Sprintf("%v records ingested, want %v", got, n)
	})
}

func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

func TestFollowSurvivesRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eve.json")
	appendLines(t, path, `{"event_type":"alert"}`, `{"event_type":"alert"}`)
	a := newTestAgent(t, "sensor", func(c *Config) {
		c.Ingest.Follow = []FollowConfig{{Path: path, Format: protocol.FormatEVE}}
	})
	waitIngested(t, a, 2)

	// A half-written line waits until it is complete.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	f.WriteString(`{"event_type":`)
	time.Sleep(400 * time.Millisecond)
	f.WriteString(`"alert"}` + "\n")
	f.Close()
	waitIngested(t, a, 3)

	// Rotation: what the sensor still writes to the old file is read before the new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path+".1", `{"event_type":"alert"}`)
	appendLines(t, path, `{"event_type":"alert"}`, `{"event_type":"alert"}`)
	waitIngested(t, a, 6)

	// A restart neither repeats nor skips: the offset is kept.
	home := a.home
	a.Close()
	appendLines(t, path, `{"event_type":"alert"}`)
	b, err := New(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIngested(t, b, 1)
}

func TestSyslogListeners(t *testing.T) {
	udp, tcp := freePort(t, "udp"), freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.SyslogUDP, c.Ingest.SyslogTCP = udp, tcp })
	msg := "<34>1 2026-11-23T10:00:00Z host app - ID47 - login failed from 93.184.216.34"
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		conn.Write([]byte(msg))
	}
	conn.Close()
	waitIngested(t, a, 3)
	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for range 2 {
		buf.WriteString(msg + "\n")
	}
	tc.Write(buf.Bytes())
	tc.Close()
	waitIngested(t, a, 5)
}
