package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helpers of the exchange tests (Appendix I steps ⑦–⑭): sensor records made from the bundled
// EVE sample, ingestion, and what the requester holds and forwards, all through the CLI and
// the sink files.

// fastExchange makes retries and stream deadlines short enough for tests that break
// connections.
var fastExchange = []option{withConfig("retry-interval", "1s"), withConfig("message-timeout", "5s")}

// withYAML appends top-level keys (sinks, ingest, bootstrap) to config.yaml before the first
// start; the key must not be in the file yet.
func withYAML(text string) option {
	return func(t *testing.T, a *agent) {
		t.Helper()
		path := filepath.Join(a.home, "config.yaml")
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString("\n" + strings.TrimSpace(text) + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

// withJSONLSink forwards the requester's records to a JSON Lines file.
func withJSONLSink(path string) option {
	return withYAML(fmt.Sprintf("sinks:\n  - {type: jsonl, path: %q}", path))
}

// withRunArgs adds arguments to the daemon's `ssanet run` (--log-level debug).
func withRunArgs(args ...string) option {
	return func(t *testing.T, a *agent) { a.runArgs = args }
}

// signal sends sig to the running daemon.
func (a *agent) signal(sig syscall.Signal) {
	a.t.Helper()
	cmd, _ := a.running()
	if cmd == nil {
		a.t.Fatalf("signal %s: not running", a.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal %v to %s: %v", sig, a.name, err)
	}
}

// requesterTemplate is an SSA template for Suricata EVE records (the only format asked for),
// 8-bit truncation of public addresses, with the given filter (none if empty) and retention,
// and a schedule from 2010 so that the sample's dates are inside it.
func requesterTemplate(t *testing.T, filter, retention string) string {
	t.Helper()
	var f string
	if filter != "" {
		f = fmt.Sprintf("  filtering:\n    - expr: %s\n", filter)
	}
	text := fmt.Sprintf(`participants:
  requester:
    affiliation: Example National CERT
    name: SOC duty desk
information:
  - name: IDS alerts
    type: attack-detection-log
    format: eve
policy:
  masking:
    - scope: public-ip
      method: truncate
      bits: 8
      max-bits: 16
%s  handling:
    tlp: GREEN
    retention: %s
    redistribution: community
method:
  protocols: [/ssanet/exchange/1.0.0]
  security: [noise, tls]
schedule:
  start: 2010-01-01T00:00:00Z
  end: now+365d
`, f, retention)
	path := filepath.Join(t.TempDir(), "requester.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- sensor records ----

// eveRecord is one raw record of a generated stream.
type eveRecord struct {
	ts   string // its timestamp: unique in a stream, and kept as is by refinement
	src  string // its src_ip, "" if it has none
	line []byte
}

var (
	tsField   = regexp.MustCompile(`"timestamp":"[^"]*"`)
	srcField  = regexp.MustCompile(`"src_ip":"[^"]*"`)
	destField = regexp.MustCompile(`"dest_ip":"[^"]*"`)
)

// streamBase is the date of record 0 of a generated stream (the sample's day).
var streamBase = time.Date(2018, 7, 5, 12, 0, 0, 0, time.UTC)

// sampleEVE returns the lines of the bundled EVE sample (12 records, one of which, stats,
// has no addresses).
func sampleEVE(t *testing.T) [][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "cmd", "ssanet", "sample-eve.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(data), []byte("\n"))
}

// eveStream makes records first … first+n-1 of a stream from the sample lines: record i is
// dated base+i ms, and has public addresses, the source given by src(i) (default
// 93.184.x.y) and the destination 151.101.x.y, never ending in .0, so that 8-bit masking
// shows. It does not fail the test: goroutines may use it.
func eveStream(sample [][]byte, base time.Time, first, n int, src func(i int) string) []eveRecord {
	out := make([]eveRecord, 0, n)
	for i := first; i < first+n; i++ {
		line := sample[i%len(sample)]
		ts := base.Add(time.Duration(i) * time.Millisecond).Format("2006-01-02T15:04:05.000000-0700")
		s := fmt.Sprintf("93.184.%d.%d", (i/250)%256, i%250+1)
		if src != nil {
			s = src(i)
		}
		line = tsField.ReplaceAll(line, []byte(`"timestamp":"`+ts+`"`))
		r := eveRecord{ts: ts}
		if srcField.Match(line) {
			r.src = s
			line = srcField.ReplaceAll(line, []byte(`"src_ip":"`+s+`"`))
		}
		line = destField.ReplaceAll(line, []byte(fmt.Sprintf(`"dest_ip":"151.101.%d.%d"`, (i/200)%256, i%200+1)))
		r.line = line
		out = append(out, r)
	}
	return out
}

// writeStream writes records as a JSON Lines file and returns its path.
func writeStream(dir string, name string, recs []eveRecord) (string, error) {
	var b bytes.Buffer
	for _, r := range recs {
		b.Write(r.line)
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, b.Bytes(), 0o600)
}

// ingestView is the output of `ssanet ingest --json`.
type ingestView struct {
	Records   int64            `json:"records"`
	Malformed int64            `json:"malformed"`
	Queued    map[string]int64 `json:"queued"`
	// OutsideSchedule and Filtered count, per SSA, the records not shared because they
	// reached the provider outside the schedule, or a filter excluded them.
	OutsideSchedule map[string]int64 `json:"outside_schedule"`
	Filtered        map[string]int64 `json:"filtered"`
	SSAs            int              `json:"ssas"`
}

// ingestFile hands a file of raw records to the agent's enforcement point.
func (a *agent) ingestFile(format, path string) ingestView {
	a.t.Helper()
	var v ingestView
	a.query(&v, "ingest", "--format", format, path)
	return v
}

// ingest hands records to the agent's enforcement point.
func (a *agent) ingest(recs []eveRecord) ingestView {
	a.t.Helper()
	path, err := writeStream(a.t.TempDir(), "records.jsonl", recs)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.ingestFile("eve", path)
}

// ---- what the requester holds and forwards ----

// recordView is a received record as `ssanet records --json` and the sinks show it.
type recordView struct {
	SSAID    string          `json:"ssa_id"`
	Seq      uint64          `json:"seq"`
	Received time.Time       `json:"received"`
	Format   string          `json:"format"`
	TLP      string          `json:"tlp"`
	Record   json.RawMessage `json:"record"`
	Text     string          `json:"text"`
	// Quarantined: the record does not comply with the SSA; no sink receives it.
	Quarantined bool `json:"quarantined"`
}

// body is the record itself.
func (r recordView) body() []byte {
	if len(r.Record) > 0 {
		return r.Record
	}
	return []byte(r.Text)
}

// ts is the record's timestamp, its identity in a generated stream.
func (r recordView) ts() string {
	var v struct {
		Timestamp string `json:"timestamp"`
	}
	json.Unmarshal(r.body(), &v)
	return v.Timestamp
}

// records lists every record the agent holds under an SSA (`ssanet records --json`).
func (a *agent) records(id string) []recordView {
	a.t.Helper()
	out, bad := parseRecords([]byte(a.must("--json", "records", "--ssa", id)))
	if bad > 0 {
		a.t.Fatalf("%s: ssanet records --json printed %d lines that are not records", a.name, bad)
	}
	return out
}

// readSink reads a JSON Lines sink; a last line still being written is left for later. It
// returns the records and how many complete lines are not records.
func readSink(t *testing.T, path string) ([]recordView, int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return parseRecords(data[:bytes.LastIndexByte(data, '\n')+1])
}

func parseRecords(data []byte) ([]recordView, int) {
	var out []recordView
	bad := 0
	for line := range bytes.Lines(data) {
		var r recordView
		if err := json.Unmarshal(line, &r); err != nil || r.Seq == 0 {
			bad++
			continue
		}
		out = append(out, r)
	}
	return out, bad
}

// sinkLines counts the complete lines of a sink file (cheap, for polling).
func sinkLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte("\n"))
}

// waitSink polls a JSON Lines sink until it holds every record 1..want of the SSA, and
// returns its records.
func waitSink(t *testing.T, path, id string, want int, timeout time.Duration) []recordView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs, _ := readSink(t, path)
		seen := map[uint64]bool{}
		for _, r := range recs {
			if r.SSAID == id && r.Seq >= 1 && r.Seq <= uint64(want) {
				seen[r.Seq] = true
			}
		}
		if len(seen) == want {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink %s holds %d of the %d records of %s after %s", path, len(seen), want, id, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// checkDense checks that recs are the records 1..want of the SSA, each exactly once, in
// order; what names the listing.
func checkDense(t *testing.T, what, id string, recs []recordView, want int) {
	t.Helper()
	if len(recs) != want {
		t.Errorf("%s: %d records, want %d", what, len(recs), want)
	}
	for i, r := range recs {
		if r.SSAID != id || r.Seq != uint64(i+1) {
			t.Errorf("%s: record %d is %s #%d, want %s #%d", what, i+1, r.SSAID, r.Seq, id, i+1)
			return
		}
	}
}

// sinkCoverage checks that a sink (at least once) holds every record 1..want of the SSA and
// nothing else, and returns how many lines repeat a record.
func sinkCoverage(t *testing.T, what, id string, recs []recordView, want int) (dups int) {
	t.Helper()
	seen := map[uint64]int{}
	for _, r := range recs {
		if r.SSAID != id || r.Seq < 1 || r.Seq > uint64(want) {
			t.Errorf("%s: record %s #%d is not one of %s 1..%d", what, r.SSAID, r.Seq, id, want)
			continue
		}
		seen[r.Seq]++
	}
	for s := uint64(1); s <= uint64(want); s++ {
		switch n := seen[s]; {
		case n == 0:
			t.Errorf("%s: record #%d missing", what, s)
		case n > 1:
			dups += n - 1
		}
	}
	return dups
}

// ---- refinement ----

// notPublic4 are the special-purpose IPv4 blocks of RFC 6890: every other address is public.
var notPublic4 = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// public4 parses s as a public IPv4 address.
func public4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	for _, p := range notPublic4 {
		if p.Contains(a) {
			return netip.Addr{}, false
		}
	}
	return a, true
}

// truncated24 is s with the last octet zeroed when s is a public IPv4 address, else s.
func truncated24(s string) string {
	a, ok := public4(s)
	if !ok {
		return s
	}
	b := a.As4()
	b[3] = 0
	return netip.AddrFrom4(b).String()
}

// refinementErrors compares a delivered record with the raw one: it must be the raw record
// with every public IPv4 address truncated by 8 bits (last octet zero) and nothing else
// changed. It returns what differs.
func refinementErrors(raw, got []byte) []string {
	var r, g any
	for _, x := range []struct {
		b []byte
		v *any
	}{{raw, &r}, {got, &g}} {
		d := json.NewDecoder(bytes.NewReader(x.b))
		d.UseNumber()
		if err := d.Decode(x.v); err != nil {
			return []string{"not JSON: " + err.Error()}
		}
	}
	var errs []string
	var walk func(path string, r, g any)
	walk = func(path string, r, g any) {
		switch rv := r.(type) {
		case map[string]any:
			gv, ok := g.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: %v, want an object", path, g))
				return
			}
			for k := range rv {
				if _, ok := gv[k]; !ok {
					errs = append(errs, fmt.Sprintf("%s.%s: missing", path, k))
				}
			}
			for k, v := range gv {
				if _, ok := rv[k]; !ok {
					errs = append(errs, fmt.Sprintf("%s.%s: added (%v)", path, k, v))
					continue
				}
				walk(path+"."+k, rv[k], v)
			}
		case []any:
			gv, ok := g.([]any)
			if !ok || len(gv) != len(rv) {
				errs = append(errs, fmt.Sprintf("%s: %v, want %d elements", path, g, len(rv)))
				return
			}
			for i := range rv {
				walk(path+"["+strconv.Itoa(i)+"]", rv[i], gv[i])
			}
		case string:
			if want := truncated24(rv); g != want {
				errs = append(errs, fmt.Sprintf("%s: %v, want %q (raw %q)", path, g, want, rv))
			}
		default:
			if !reflect.DeepEqual(r, g) {
				errs = append(errs, fmt.Sprintf("%s: %v, want %v", path, g, r))
			}
		}
	}
	walk("", r, g)
	return errs
}

// addresses returns a record's src_ip and dest_ip.
func addresses(body []byte) (src, dest string) {
	var v struct {
		Src  string `json:"src_ip"`
		Dest string `json:"dest_ip"`
	}
	json.Unmarshal(body, &v)
	return v.Src, v.Dest
}

// ---- monitoring ----

// assessmentView is the output of `ssanet monitor --json` (the report's fields are written
// in snake case).
type assessmentView struct {
	SSAID    string   `json:"ssa_id"`
	Phase    string   `json:"phase"`
	Verdict  string   `json:"verdict"`
	Reasons  []string `json:"reasons"`
	Provider *struct {
		SSPHash                                 string `json:"ssp_hash"`
		Ingested, Refined, Dropped, Sent, Acked uint64
		LatencyP50                              uint64 `json:"latency_p50_ms"`
		LatencyP95                              uint64 `json:"latency_p95_ms"`
		LatencyP99                              uint64 `json:"latency_p99_ms"`
		InSchedule                              bool   `json:"in_schedule"`
		SentOutside                             uint64 `json:"sent_outside"`
		Error                                   string `json:"error"`
	} `json:"provider"`
	Local struct {
		Last, Stored, Deleted, Violations uint64
	} `json:"requester"`
	Evidence []struct {
		First      uint64          `json:"first"`
		ReceivedAt time.Time       `json:"received_at"`
		Findings   json.RawMessage `json:"findings"`
		BatchBytes int             `json:"batch_bytes"`
	} `json:"evidence"`
}

// Exit codes of `ssanet monitor` by verdict (README, CLI reference).
var verdictCodes = map[string]int{"fulfilled": 0, "degraded": 5, "violated": 6}

// monitor runs `ssanet monitor --json`, which exits with its verdict's code.
func (a *agent) monitor(id string) assessmentView {
	a.t.Helper()
	r := a.cli("--json", "monitor", id)
	var v assessmentView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		a.t.Fatalf("%s: %s: %v", a.name, r, err)
	}
	if want, ok := verdictCodes[v.Verdict]; !ok || r.code != want {
		a.t.Fatalf("%s: verdict %q, exit %d; want exit %d\n%s", a.name, v.Verdict, r.code, want, r)
	}
	return v
}

// monitorText runs `ssanet monitor` and returns what it prints and its exit code.
func (a *agent) monitorText(id string) (string, int) {
	a.t.Helper()
	r := a.cli("monitor", id)
	if r.code != 0 && r.code != verdictCodes["degraded"] && r.code != verdictCodes["violated"] {
		a.t.Fatalf("%s: %s", a.name, r)
	}
	return r.stdout, r.code
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
