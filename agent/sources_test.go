package agent

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"

	"github.com/ssanet/ssanet/agent/sink/testpki"
)

const syslogMsg = "<34>1 2026-11-23T10:00:00Z host app - ID47 - login failed from 93.184.216.34"

// octetCounted frames msgs as RFC 6587 §3.4.1 does: "LEN SP MSG", one after the other.
func octetCounted(msgs ...string) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "%d %s", len(m), m)
	}
	return b.String()
}

// TestSyslogTCPFraming: the TCP listener tells octet counting from newline framing by the
// first byte of each connection; a frame over maxFrame is counted malformed and the
// connection reads on after it; a count that is no count closes the connection. Records are
// never merged.
func TestSyslogTCPFraming(t *testing.T) {
	tcp := freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.SyslogTCP = tcp })
	long := strings.Repeat("x", maxFrame+10)
	tests := []struct {
		name               string
		send               string
		records, malformed float64
	}{
		{"octet counting, four frames in one write", octetCounted(syslogMsg, syslogMsg, syslogMsg, syslogMsg), 4, 0},
		{"octet counting, newlines between frames", octetCounted(syslogMsg) + "\n" + octetCounted(syslogMsg) + "\n", 2, 0},
		{"octet counting, a message with a newline inside", octetCounted(syslogMsg + "\nsecond line of it"), 1, 0},
		{"newline framing", syslogMsg + "\n" + syslogMsg + "\r\n" + "\n" + syslogMsg, 3, 0},
		{"octet counting, a frame over the limit skipped by its count", octetCounted(syslogMsg, long, syslogMsg), 2, 1},
		{"newline framing, a line over the limit skipped to its newline", syslogMsg + "\n" + long + "\n" + syslogMsg + "\n", 2, 1},
		{"octet counting, a count that is none closes the connection", octetCounted(syslogMsg) + "12x" + octetCounted(syslogMsg), 1, 1},
	}
	var records, malformed float64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", tcp)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(conn, tt.send); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			records, malformed = records+tt.records, malformed+tt.malformed
			waitIngested(t, a, records)
			waitFor(t, 10*time.Second, func() (bool, string) {
				got := testutil.ToFloat64(a.sources.malformed)
				return got == malformed, fmt.Sprintf("%v malformed frames, want %v", got, malformed)
			})
		})
	}
}

// TestSyslogTLS: the TLS listener (RFC 5425) takes octet-counted messages from a client that
// trusts its certificate; with a client CA, a client without a certificate is refused.
func TestSyslogTLS(t *testing.T) {
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	_, certFile, keyFile := pki.Leaf("server")
	pool := pki.Pool
	addr, mutual := freePort(t, "tcp"), freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) {
		c.Ingest.SyslogTLS = &SyslogTLSConfig{Address: addr, Cert: certFile, Key: keyFile}
	})
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, octetCounted(syslogMsg, syslogMsg, syslogMsg)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitIngested(t, a, 3)

	b := newTestAgent(t, "sensor2", func(c *Config) {
		c.Ingest.SyslogTLS = &SyslogTLSConfig{Address: mutual, Cert: certFile, Key: keyFile, ClientCA: pki.CA}
	})
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, withCert := range []bool{false, true} {
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if withCert {
			cfg.Certificates = []tls.Certificate{cert}
		}
		conn, err := tls.Dial("tcp", mutual, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.WriteString(conn, octetCounted(syslogMsg))
		if err == nil { // TLS 1.3: the refusal comes with the first read
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
		}
		conn.Close()
		if withCert {
			waitIngested(t, b, 1)
		} else if err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("a client without a certificate was not refused: %v", err)
		}
	}
	if err := (&Config{Ingest: IngestConfig{SyslogTLS: &SyslogTLSConfig{Address: addr}}}).validateIngest(); err == nil {
		t.Error("ingest.syslog-tls without cert and key was accepted")
	}
}

// TestUnixSources: EVE records written to the stream and datagram sockets as Suricata's
// unix_stream and unix_dgram outputs write them are all ingested; the sockets have the mode
// asked for and are removed at shutdown.
func TestUnixSources(t *testing.T) {
	dir := t.TempDir()
	stream, dgram := filepath.Join(dir, "eve.sock"), filepath.Join(dir, "eve-dgram.sock")
	a := newTestAgent(t, "sensor", func(c *Config) {
		c.Ingest.Unix = []UnixSourceConfig{{Path: stream, Type: UnixStream}, {Path: dgram, Type: UnixDgram, Mode: "0660"}}
	})
	for path, want := range map[string]os.FileMode{stream: 0o600, dgram: 0o660} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Type() != os.ModeSocket || info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want a socket with %v", path, info.Mode(), want)
		}
	}
	eve := `{"timestamp":"2026-11-23T10:00:00.000000+0000","event_type":"alert","src_ip":"10.0.0.%d","dest_ip":"192.0.2.1"}`
	const n = 100
	sc, err := net.Dial("unix", stream)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n { // a write per record, as Suricata does
		if _, err := fmt.Fprintf(sc, eve+"\n", i%250); err != nil {
			t.Fatal(err)
		}
	}
	sc.Close()
	waitIngested(t, a, n)
	dc, err := net.Dial("unixgram", dgram)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := fmt.Fprintf(dc, eve, i%250); err != nil {
			t.Fatal(err)
		}
	}
	dc.Close()
	waitIngested(t, a, 2*n)
	a.Close()
	for _, path := range []string{stream, dgram} {
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s left after shutdown (%v)", path, err)
		}
	}
}

// TestIngestStreams: records read from an input that stays open are queued within about
// ingestFlush, before the input ends.
func TestIngestStreams(t *testing.T) {
	a := newTestAgent(t, "sensor", nil)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := a.Ingest(t.Context(), protocol.FormatEVE, pr)
		done <- err
	}()
	for i := range 3 {
		fmt.Fprintf(pw, `{"event_type":"alert","src_ip":"10.0.0.%d"}`+"\n", i)
	}
	waitIngested(t, a, 3) // the input is still open
	fmt.Fprintln(pw, `{"event_type":"alert"}`)
	waitIngested(t, a, 4)
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLogger: util-linux logger's TCP (octet counting, and RFC 5424 newline-framed) and UDP
// messages reach the listeners and are all ingested.
func TestLogger(t *testing.T) {
	logger, err := exec.LookPath("logger")
	if err != nil {
		t.Skip("no logger (util-linux, Debian package bsdutils): apt-get install bsdutils")
	}
	udp, tcp := freePort(t, "udp"), freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.SyslogUDP, c.Ingest.SyslogTCP = udp, tcp })
	hostPort := func(addr string) []string {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		return []string{"-n", h, "-P", p}
	}
	const n = 5
	var want float64
	for _, args := range [][]string{
		append([]string{"--octet-count", "-T"}, hostPort(tcp)...),
		append([]string{"--rfc5424", "-T"}, hostPort(tcp)...),
		append([]string{"-d"}, hostPort(udp)...),
	} {
		t.Run(strings.Join(args[:len(args)-4], " "), func(t *testing.T) {
			cmd := exec.Command(logger, append(args, "-t", "ssanet-test")...)
			var lines strings.Builder
			for i := range n {
				fmt.Fprintf(&lines, "login failed from 93.184.216.%d\n", i)
			}
			cmd.Stdin = strings.NewReader(lines.String())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("logger %v: %v\n%s", args, err, out)
			}
			want += n
			waitIngested(t, a, want)
		})
	}
}
