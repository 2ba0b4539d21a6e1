package sink

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ssanet/ssanet/agent/sink/rsyslogtest"

	"github.com/ssanet/ssanet/agent/sink/testpki"
)

// TestTLSRsyslogRestarts: the same as TestTCPRsyslogRestarts over TLS (RFC 5425) to a real
// rsyslog (imtcp with the gtls stream driver, Debian's rsyslog-gnutls) that asks for a
// client certificate signed by the test's CA (x509/certvalid): across two orderly restarts
// nothing is lost, repeats carry their sequence number, and every line rsyslog wrote parses
// as RFC 5424.
func TestTLSRsyslogRestarts(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	rs, cfg := startRsyslogTLS(t)
	if lost, _ := rsyslogRestarts(t, rs, cfg, n); lost > 0 {
		t.Errorf("%d of %d records lost over TLS across rsyslog's orderly restarts", lost, n)
	}
}

// startRsyslogTLS starts rsyslogd with imtcp over TLS on loopback, its certificate and the
// client's made by a CA of the test's own, and returns the sink's configuration for it
// (built with TLSConfig from the PEM files, as the agent builds it from tls-ca, tls-cert
// and tls-key). It skips the test when rsyslog's gtls driver is not installed.
func startRsyslogTLS(t *testing.T) (*rsyslog, SyslogConfig) {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Skip("rsyslogd not found: install Debian's rsyslog and rsyslog-gnutls (apt-get install -y rsyslog rsyslog-gnutls) to run this test")
	}
	if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
		if m, _ = filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			t.Skip("rsyslog's gtls stream driver (lmnsd_gtls.so) not found: install Debian's rsyslog-gnutls (apt-get install -y rsyslog-gnutls) to run this test")
		}
	}
	dir := t.TempDir()
	pki := testpki.New(t, dir)
	pki.Leaf("server")
	pki.Leaf("client")
	pemFile := func(name string) string { return filepath.Join(dir, name+".pem") }
	keyFile := func(name string) string { return filepath.Join(dir, name+"-key.pem") }

	global := fmt.Sprintf(` defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q`,
		pemFile("ca"), pemFile("server"), keyFile("server"))
	rs := rsyslogtest.Launch(t, global, func(port int) string {
		return fmt.Sprintf(`module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="%d")
`, port)
	})
	tc, err := TLSConfig(pemFile("ca"), pemFile("client"), keyFile("client"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return rs, SyslogConfig{Network: NetTLS, TLS: tc}
}
