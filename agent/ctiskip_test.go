package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// TestSinkSkipsRecordsWithoutForm: a record that has no form in a sink's format (its format
// is one the CTI mappings cannot read: unmappable; a record with no observable for a MISP
// event: unmapped) does not hold up the sink: it is skipped, counted once by reason (state and
// ssanet_sink_records_skipped_total), logged once per reason, the sink's position moves past
// it, and every other record of its chunk is written.
func TestSinkSkipsRecordsWithoutForm(t *testing.T) {
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// The SSA names eve and a format the mappings do not read ("cef", as a newer peer might);
	// its SSP is compiled from the eve part, since this version's policy knows only eve.
	s := &protocol.SSA{ID: "ssa-skip", Version: 1, Policy: &protocol.Policy{Handling: &protocol.Handling{TLP: protocol.TLPGreen}}}
	s.Participants.Provider = protocol.Participant{Affiliation: "Example CERT"}
	s.Information = []protocol.Information{{Name: "eve", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatEVE}}
	ssp, err := policy.Compile(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Information = append(s.Information, protocol.Information{Name: "cef", Type: protocol.TypeAttackDetectionLog, Format: "cef"})
	run := &agreementRun{ssa: s, ssp: ssp, role: protocol.RoleRequester}

	alert := func(src string) []byte {
		return []byte(`{"timestamp":"2026-12-06T10:00:00.000000+0000","event_type":"alert","src_ip":"` + src +
			`","src_port":40000,"dest_ip":"198.51.100.7","dest_port":80,"proto":"TCP","alert":{"signature_id":1,"signature":"test"}}`)
	}
	stats := []byte(`{"timestamp":"2026-12-06T10:00:00.000000+0000","event_type":"stats","stats":{"uptime":1}}`)
	cef := []byte("CEF:0|Example|IDS|1.0|100|port scan|5|src=192.0.2.9")
	tag := func(format byte, b []byte) []byte { return append([]byte{format}, b...) }
	// seq:       1                      2             3               4                      5
	batch1 := [][]byte{tag(0, alert("192.0.2.1")), tag(1, cef), tag(0, stats), tag(0, alert("192.0.2.2")), tag(1, cef)}
	// seq:       6             7                      8
	batch2 := [][]byte{tag(1, cef), tag(0, alert("192.0.2.3")), tag(0, stats)}

	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	dir := t.TempDir()
	cfgs := []SinkConfig{
		{Name: "stix", Type: "jsonl", Format: cti.FormatSTIX, Path: filepath.Join(dir, "stix.jsonl")},
		{Name: "ecs", Type: "jsonl", Format: cti.FormatECS, Path: filepath.Join(dir, "ecs.jsonl")},
		{Name: "misp", Type: "misp-feed", Path: filepath.Join(dir, "feed")},
	}
	for i := range cfgs {
		if err := cfgs[i].validate(); err != nil {
			t.Fatal(err)
		}
	}
	sk, err := newSinks(st, filepath.Join(dir, SinksDir), cfgs, func() []*agreementRun { return []*agreementRun{run} }, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.close)

	want := map[string]SinkRecords{}
	receive := func(first uint64, batch [][]byte, w map[string]SinkRecords) {
		t.Helper()
		if _, _, err := st.Receive(s.ID, first, batch, time.Now(), 0); err != nil {
			t.Fatal(err)
		}
		sk.kick()
		last := first + uint64(len(batch)) - 1
		waitFor(t, 15*time.Second, func() (bool, string) {
			states, err := sk.states()
			if err != nil {
				return false, err.Error()
			}
			var got []string
			done := true
			for _, state := range states {
				p := state.SSAs[s.ID]
				got = append(got, fmt.Sprintf("%s: position %d, %+v, last error %q", state.Name, p.Position, state.Records, state.LastError))
				done = done && p.Position == last && p.Lag == 0
			}
			return done, strings.Join(got, "; ")
		})
		for name, n := range w {
			r := want[name]
			r.add(n)
			want[name] = r
		}
		states, err := sk.states()
		if err != nil {
			t.Fatal(err)
		}
		for _, state := range states {
			if w := want[state.Name]; state.Records != w || state.SSAs[s.ID].Records != w || state.Errors != 0 {
				t.Errorf("after record %d, sink %s: records %+v (SSA %+v), %d errors; want %+v", last, state.Name,
					state.Records, state.SSAs[s.ID].Records, state.Errors, w)
			}
		}
	}
	receive(1, batch1, map[string]SinkRecords{
		"stix": {Forwarded: 3, Confirmed: 3, Skipped: sink.Skips{Unmappable: 2}},
		"ecs":  {Forwarded: 3, Confirmed: 3, Skipped: sink.Skips{Unmappable: 2}},
		"misp": {Forwarded: 2, Confirmed: 2, Skipped: sink.Skips{Unmappable: 2, Unmapped: 1}},
	})
	receive(6, batch2, map[string]SinkRecords{
		"stix": {Forwarded: 2, Confirmed: 2, Skipped: sink.Skips{Unmappable: 1}},
		"ecs":  {Forwarded: 2, Confirmed: 2, Skipped: sink.Skips{Unmappable: 1}},
		"misp": {Forwarded: 1, Confirmed: 1, Skipped: sink.Skips{Unmappable: 1, Unmapped: 1}},
	})

	// Nothing else is lost: every eve record is in the STIX and ECS files, every alert's
	// source address in the MISP feed.
	var seqs []string
	for _, d := range jsonLines(t, filepath.Join(dir, "ecs.jsonl")) {
		seqs = append(seqs, d["labels"].(map[string]any)["seq"].(string))
	}
	if want := []string{"1", "3", "4", "7", "8"}; !slices.Equal(seqs, want) {
		t.Errorf("ECS documents of records %v, want %v", seqs, want)
	}
	if n := len(jsonLines(t, filepath.Join(dir, "stix.jsonl"))); n != 5 {
		t.Errorf("%d STIX bundles, want 5", n)
	}
	a := cti.NewAgreement(s, ssp)
	b, err := os.ReadFile(filepath.Join(dir, "feed", a.MISPEventUUID(time.Now())+".json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if !strings.Contains(string(b), `"value":"`+src+`"`) {
			t.Errorf("the MISP event lacks %s", src)
		}
	}

	// Logged once per sink and reason, whatever the number of records and chunks.
	lines := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(logs.text()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["reason"] == nil {
			continue
		}
		lines[fmt.Sprintf("%v/%v", m["sink"], m["reason"])]++
	}
	if want := map[string]int{"stix/unmappable": 1, "ecs/unmappable": 1, "misp/unmappable": 1, "misp/unmapped": 1}; !maps.Equal(lines, want) {
		t.Errorf("log lines by sink and reason %v, want %v", lines, want)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(sinkCollector{states: sk.states, log: log})
	exp := "# HELP ssanet_sink_records_skipped_total " + sinkSkippedHelp + `
# TYPE ssanet_sink_records_skipped_total counter
ssanet_sink_records_skipped_total{reason="unmappable",sink="ecs"} 3
ssanet_sink_records_skipped_total{reason="unmappable",sink="misp"} 3
ssanet_sink_records_skipped_total{reason="unmappable",sink="stix"} 3
ssanet_sink_records_skipped_total{reason="unmapped",sink="ecs"} 0
ssanet_sink_records_skipped_total{reason="unmapped",sink="misp"} 2
ssanet_sink_records_skipped_total{reason="unmapped",sink="stix"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "ssanet_sink_records_skipped_total"); err != nil {
		t.Fatal(err)
	}
}
