package agent

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// TestSinkRecords: each sink counts its records by outcome, in its state (for the sink and
// per SSA) and in ssanet_sink_records_total: a JSONL file confirms what it synced, syslog
// over TCP confirms nothing, a webhook confirms its 2xx answers, counts each refused write's
// records as failed at each attempt, and the records of a batch it set aside (4xx) as
// forwarded and set aside, not confirmed.
func TestSinkRecords(t *testing.T) {
	prov, req, s := exchangePair(t)
	run, refined := refineSample(t, prov, s.ID)
	k := uint64(len(refined))
	if _, err := prov.store.Enqueue(s.ID, refined, k, 0); err != nil {
		t.Fatal(err)
	}
	prov.deliver.wake(run)
	waitRecords(t, req, s.ID, k)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tcp.Close() })
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	var (
		mu       sync.Mutex
		requests int
	)
	// the retried webhook refuses its first two requests (503), then takes them.
	retried := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		requests++
		if requests <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(retried.Close)
	// the poison webhook refuses every batch (422): set aside after two tries.
	poison := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusUnprocessableEntity)
	}))
	t.Cleanup(poison.Close)

	// the cut sink sends over UDP in messages of at most 480 bytes: most records are cut.
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udp.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if _, _, err := udp.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	sk := startSinks(t, req, req.log,
		SinkConfig{Name: "cut", Type: "syslog", Network: "udp", Address: udp.LocalAddr().String(), MaxMessage: 480, Relation: "organisation"},
		SinkConfig{Name: "file", Type: "jsonl", Path: filepath.Join(t.TempDir(), "out.jsonl"), Relation: "organisation"},
		SinkConfig{Name: "siem", Type: "syslog", Network: "tcp", Address: tcp.Addr().String(), Relation: "organisation"},
		SinkConfig{Name: "retried", Type: "webhook", URL: retried.URL, Tries: 1, Relation: "organisation"},
		SinkConfig{Name: "poison", Type: "webhook", URL: poison.URL, Tries: 2, PoisonAfter: 2, Relation: "organisation"})
	want := map[string]struct {
		confirms bool
		records  SinkRecords
	}{
		"cut":     {false, SinkRecords{Forwarded: k}}, // and Truncated as counted, checked > 0
		"file":    {true, SinkRecords{Forwarded: k, Confirmed: k}},
		"siem":    {false, SinkRecords{Forwarded: k}},
		"retried": {true, SinkRecords{Forwarded: k, Confirmed: k, Failed: 2 * k}},
		"poison":  {true, SinkRecords{Forwarded: k, SetAside: k}},
	}
	waitFor(t, 30*time.Second, func() (bool, string) {
		states, err := sk.states()
		if err != nil {
			return false, err.Error()
		}
		var got []string
		done := true
		for _, st := range states {
			got = append(got, fmt.Sprintf("%s: %+v %+v", st.Name, st.Records, st.SSAs[s.ID].Records))
			w := want[st.Name]
			if st.Name == "cut" {
				w.records.Truncated = st.Records.Truncated
				want["cut"] = w
				done = done && w.records.Truncated > 0
			}
			done = done && st.SSAs[s.ID].Lag == 0 && st.Records == w.records && st.SSAs[s.ID].Records == w.records && st.Confirms == w.confirms
		}
		return done, strings.Join(got, "; ")
	})

	reg := prometheus.NewRegistry()
	reg.MustRegister(sinkCollector{states: sk.states, log: req.log})
	var exp strings.Builder
	exp.WriteString("# HELP ssanet_sink_records_total " + sinkRecordsHelp + "\n# TYPE ssanet_sink_records_total counter\n")
	for _, o := range []string{"confirmed", "failed", "forwarded", "set_aside", "truncated"} {
		for _, name := range []string{"cut", "file", "poison", "retried", "siem"} {
			r := want[name].records
			n := map[string]uint64{"confirmed": r.Confirmed, "failed": r.Failed, "forwarded": r.Forwarded, "set_aside": r.SetAside, "truncated": r.Truncated}[o]
			fmt.Fprintf(&exp, "ssanet_sink_records_total{outcome=%q,sink=%q} %d\n", o, name, n)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp.String()), "ssanet_sink_records_total"); err != nil {
		t.Fatal(err)
	}

	// the set-aside records degrade the SSA's verdict, naming the sink; the others do not.
	one, err := sk.stateOf(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, reasons := verdict(nil, &Assessment{SSAID: s.ID, Time: time.Now(), Sinks: one, Provider: &protocol.Report{SSAID: s.ID},
		Local: InboxView{Last: k, Stored: k}}, nil)
	if v != VerdictDegraded || len(reasons) != 1 || !strings.Contains(reasons[0], fmt.Sprintf("sink poison set aside %d records", k)) {
		t.Fatalf("verdict %s %q; want degraded by sink poison alone", v, reasons)
	}
}
