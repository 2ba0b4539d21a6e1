package sink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

// mispAgreement is the agreement of a test SSA with TLP label tlp, a public-address
// truncation and a retention.
func mispAgreement(t testing.TB, id, tlp string, retention time.Duration) (*cti.Agreement, *policy.SSP) {
	t.Helper()
	s := &protocol.SSA{ID: id, Version: 1, Policy: &protocol.Policy{
		Masking:  []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Handling: &protocol.Handling{TLP: tlp, Retention: protocol.Duration(retention / time.Second)}}}
	s.Participants.Provider = protocol.Participant{Affiliation: "Example CERT", Email: "soc@cert.example.org"}
	s.Information = []protocol.Information{{Name: "eve", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatEVE}}
	p, err := policy.Compile(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cti.NewAgreement(s, p), p
}

// eveRecords are the EVE samples refined under p, as the SSA's records received at at.
func eveRecords(t testing.TB, p *policy.SSP, at time.Time) []Record {
	t.Helper()
	var out []Record
	for _, f := range []string{"test-eve-small.jsonl", "test-eve-6-0.jsonl", "test-eve-metadata.jsonl"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "policy", "testdata", "eve", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			ref, err := policy.Enforce(p, protocol.FormatEVE, line)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, Record{SSAID: p.SSAID(), Seq: uint64(len(out) + 1), Received: at, Format: protocol.FormatEVE,
				Record: bytes.TrimSpace(ref)})
		}
	}
	return out
}

// mispCategories are the draft's valid category-type pairs for the types the feed writes
// (draft-dulaunoy-misp-core-format, section Attribute, type).
var mispCategories = map[string][]string{
	"Network activity": {"ip-src", "ip-dst", "hostname", "domain", "url", "user-agent", "http-method", "email-src", "email-dst"},
	"Targeting data":   {"target-user"},
	"Other":            {"text"},
	"Payload delivery": {"filename"},
}

// requireKeys checks that m holds each key with a value of the JSON type named (string, bool,
// object, array).
func requireKeys(m map[string]any, keys string) []string {
	var bad []string
	for _, kv := range strings.Fields(keys) {
		k, typ, _ := strings.Cut(kv, ":")
		v, ok := m[k]
		got := fmt.Sprintf("%T", v)
		want := map[string]string{"string": "string", "bool": "bool", "object": "map[string]interface {}", "array": "[]interface {}"}[typ]
		if !ok || got != want {
			bad = append(bad, fmt.Sprintf("%s: %s, want a %s", k, got, typ))
		}
	}
	return bad
}

// readFeed reads a feed served over HTTP as MISP does: manifest.json, then each event it
// lists, then its attributes; it checks the core format's required fields and hashes.csv and
// returns the events by UUID.
func readFeed(t *testing.T, base string) map[string]map[string]any {
	t.Helper()
	get := func(name string) []byte {
		resp, err := http.Get(base + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(resp.Body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", name, resp.StatusCode, err)
		}
		return b.Bytes()
	}
	var manifest map[string]map[string]any
	if err := json.Unmarshal(get("manifest.json"), &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	events := map[string]map[string]any{}
	hashes := map[string]bool{}
	for id, entry := range manifest {
		for _, b := range requireKeys(entry, "Orgc:object Tag:array info:string date:string analysis:string threat_level_id:string timestamp:string") {
			t.Errorf("manifest %s: %s", id, b)
		}
		var doc map[string]map[string]any
		if err := json.Unmarshal(get(id+".json"), &doc); err != nil {
			t.Fatalf("%s.json: %v", id, err)
		}
		ev := doc["Event"]
		for _, b := range requireKeys(ev, "uuid:string id:string published:bool info:string threat_level_id:string analysis:string "+
			"date:string timestamp:string publish_timestamp:string org_id:string orgc_id:string attribute_count:string "+
			"distribution:string sharing_group_id:string Orgc:object Tag:array Attribute:array") {
			t.Errorf("event %s: %s", id, b)
		}
		if ev["uuid"] != id {
			t.Errorf("event %s holds uuid %v", id, ev["uuid"])
		}
		for _, b := range requireKeys(ev["Orgc"].(map[string]any), "uuid:string name:string id:string") {
			t.Errorf("event %s Orgc: %s", id, b)
		}
		if _, err := time.Parse(time.DateOnly, ev["date"].(string)); err != nil {
			t.Errorf("event %s date: %v", id, err)
		}
		if !slices.Contains([]string{"0", "1", "2", "3", "4"}, ev["distribution"].(string)) {
			t.Errorf("event %s distribution %v", id, ev["distribution"])
		}
		attrs := ev["Attribute"].([]any)
		if fmt.Sprint(len(attrs)) != ev["attribute_count"] {
			t.Errorf("event %s: %d attributes, attribute_count %v", id, len(attrs), ev["attribute_count"])
		}
		seen := map[string]bool{}
		for _, x := range attrs {
			a := x.(map[string]any)
			for _, b := range requireKeys(a, "uuid:string type:string category:string to_ids:bool event_id:string "+
				"distribution:string timestamp:string deleted:bool value:string") {
				t.Errorf("event %s attribute %v: %s", id, a["uuid"], b)
			}
			typ, cat, val := a["type"].(string), a["category"].(string), a["value"].(string)
			if !slices.Contains(mispCategories[cat], typ) {
				t.Errorf("attribute %s: type %s in category %s", val, typ, cat)
			}
			if seen[typ+" "+val] {
				t.Errorf("event %s holds %s %s twice", id, typ, val)
			}
			seen[typ+" "+val] = true
			sum := md5.Sum([]byte(val))
			hashes[hex.EncodeToString(sum[:])+","+id] = false
		}
		events[id] = ev
	}
	sc := bufio.NewScanner(bytes.NewReader(get("hashes.csv")))
	for sc.Scan() {
		if _, ok := hashes[sc.Text()]; !ok {
			t.Errorf("hashes.csv: %s is no attribute of its event", sc.Text())
		}
		hashes[sc.Text()] = true
	}
	for h, found := range hashes {
		if !found {
			t.Errorf("hashes.csv lacks %s", h)
		}
	}
	return events
}

func tags(ev map[string]any) []string {
	var out []string
	for _, x := range ev["Tag"].([]any) {
		out = append(out, x.(map[string]any)["name"].(string))
	}
	return out
}

func values(ev map[string]any, typ string) []string {
	var out []string
	for _, x := range ev["Attribute"].([]any) {
		if a := x.(map[string]any); a["type"] == typ {
			out = append(out, a["value"].(string))
		}
	}
	slices.Sort(out)
	return out
}

// TestMISPFeedReadBack: a feed of two SSAs (TLP:AMBER and TLP:GREEN) over two days, read
// back over HTTP as MISP reads a feed, has one event per SSA and day with the core format's
// required fields, the TLP and SSA tags, each observable once (a record sent again adds
// nothing), masked addresses as networks, and hashes.csv matching the attributes.
func TestMISPFeedReadBack(t *testing.T) {
	dir := t.TempDir()
	amberA, amberP := mispAgreement(t, "ssa-amber", protocol.TLPAmber, 0)
	greenA, greenP := mispAgreement(t, "ssa-green", protocol.TLPGreen, 0)
	agreements := map[string]*cti.Agreement{"ssa-amber": amberA, "ssa-green": greenA}
	lookup := func(id string) (*cti.Agreement, bool) { a, ok := agreements[id]; return a, ok }
	clk := &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	f, err := OpenMISPFeed(MISPFeedConfig{Name: "misp", Dir: dir, Tidy: -1, Agreement: lookup, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	day1, day2 := clk.t.Add(-26*time.Hour), clk.t
	amber := eveRecords(t, amberP, day1)
	for _, chunk := range [][]Record{amber[:5], amber[5:], amber[:3], eveRecords(t, amberP, day2), eveRecords(t, greenP, day2)} {
		if err := f.Write(context.Background(), chunk); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	events := readFeed(t, srv.URL)
	if len(events) != 3 {
		t.Fatalf("%d events, want 3 (two days of ssa-amber, one of ssa-green)", len(events))
	}
	for id, ev := range events {
		tg := tags(ev)
		var a *cti.Agreement
		for _, x := range agreements {
			if slices.Contains(tg, `ssanet:ssa="`+x.SSA+`"`) {
				a = x
			}
		}
		if a == nil {
			t.Fatalf("event %s: tags %v name no SSA", id, tg)
		}
		if want := "tlp:" + strings.ToLower(a.TLP); !slices.Contains(tg, want) || !slices.Contains(tg, `ssanet:ssp="`+a.SSP+`"`) {
			t.Errorf("event %s: tags %v, want %s and the SSP", id, tg, want)
		}
		if want := map[string]string{"ssa-amber": "0", "ssa-green": "1"}[a.SSA]; ev["distribution"] != want {
			t.Errorf("event %s: distribution %v, want %s", id, ev["distribution"], want)
		}
		if got := values(ev, "ip-dst"); !slices.Contains(got, "89.160.20.0/24") || slices.Contains(got, "89.160.20.112") {
			t.Errorf("event %s: ip-dst %v, want the truncated 89.160.20.0/24", id, got)
		}
		if got := values(ev, "domain"); !slices.Contains(got, "l2.io") {
			t.Errorf("event %s: domains %v", id, got)
		}
	}
	if f.Truncated() != 0 {
		t.Errorf("Truncated %d", f.Truncated())
	}
}

// TestMISPFeedCrashAndBounds: a feed reopened after a crash (a half-written file beside a
// stale manifest) is rebuilt from its events; a full event counts the records it could not
// take; an event past its SSA's retention leaves the feed.
func TestMISPFeedCrashAndBounds(t *testing.T) {
	dir := t.TempDir()
	a, p := mispAgreement(t, "ssa-r", protocol.TLPClear, 48*time.Hour)
	lookup := func(id string) (*cti.Agreement, bool) { return a, id == a.SSA }
	clk := &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	cfg := MISPFeedConfig{Dir: dir, Agreement: lookup, Now: clk.now, MaxAttributes: 10, Tidy: -1, Log: slog.New(slog.DiscardHandler)}
	f, err := OpenMISPFeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs := eveRecords(t, p, clk.t)
	if err := f.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if f.Truncated() == 0 {
		t.Errorf("an event bounded to 10 attributes took every observable of %d records", len(recs))
	}
	// A crash: a half-written event beside a manifest that lost its entry.
	id := a.MISPEventUUID(clk.t)
	if err := os.WriteFile(filepath.Join(dir, feedTmpPrefix+id+".json"), []byte(`{"Event":{"uu`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenMISPFeed(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, feedTmpPrefix+id+".json")); !os.IsNotExist(err) {
		t.Errorf("the half-written file is still there: %v", err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	events := readFeed(t, srv.URL)
	if ev, ok := events[id]; !ok || len(ev["Attribute"].([]any)) != 10 {
		t.Fatalf("after the crash: events %v, want %s with 10 attributes", len(events), id)
	}
	// Past the retention (48 h after the end of the day), the event leaves the feed with no
	// Write to make it (the SSA's records stopped coming): at the sink's tidying, and when the
	// sink opens.
	evPath := filepath.Join(dir, id+".json")
	evBytes, err := os.ReadFile(evPath)
	if err != nil {
		t.Fatal(err)
	}
	clk.add(62 * time.Hour)
	gone := func(when string) {
		t.Helper()
		if _, err := os.Stat(evPath); !os.IsNotExist(err) {
			t.Errorf("%s: the event past its retention is still there: %v", when, err)
		}
		if events := readFeed(t, srv.URL); len(events) != 0 {
			t.Errorf("%s: %d events past their retention in the manifest", when, len(events))
		}
	}
	if err := f.Tidy(); err != nil {
		t.Fatal(err)
	}
	gone("tidy")
	if err := os.WriteFile(evPath, evBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := OpenMISPFeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	gone("open")
}

// TestMISPFeedTmpFiles: at start the feed deletes the temporary files of its own writes that
// a crash left, and no other file of its directory, whatever its name ends with.
func TestMISPFeedTmpFiles(t *testing.T) {
	dir := t.TempDir()
	a, _ := mispAgreement(t, "ssa-tmp", protocol.TLPGreen, 0)
	cfg := MISPFeedConfig{Dir: dir, Tidy: -1, Agreement: func(id string) (*cti.Agreement, bool) { return a, id == a.SSA },
		Log: slog.New(slog.DiscardHandler)}
	id := a.MISPEventUUID(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	files := []struct {
		name string
		kept bool
	}{
		{feedTmpPrefix + id + ".json", false},
		{feedTmpPrefix + "manifest.json", false},
		{feedTmpPrefix + "hashes.csv", false},
		{"notes.tmp", true},                    // the operator's
		{"index.html.tmp", true},               // a web server's
		{id + ".json.tmp", true},               // not a name the writer makes
		{"manifest.json.tmp", true},            // nor this
		{feedTmpPrefix + "notes.txt", true},    // the prefix alone is not the pattern
		{feedTmpPrefix + id + ".json.x", true}, // the pattern is anchored
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f, err := OpenMISPFeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range files {
		_, err := os.Stat(filepath.Join(dir, tc.name))
		if kept := err == nil; kept != tc.kept {
			t.Errorf("%s: kept %v, want %v (%v)", tc.name, kept, tc.kept, err)
		}
	}
	// The writer's own writes leave no temporary file behind.
	if err := f.Write(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, feedTmpPrefix+"*")); len(m) != 2 { // notes.txt and id.json.x
		t.Errorf("temporary files after a write: %v", m)
	}
}

// TestMISPFeedSkips: a record whose format the mapping cannot read, or that holds no
// observable, does not fail the Write: it is passed over and counted once by reason (by a
// Write that returned nil only), and the chunk's other records reach their event.
func TestMISPFeedSkips(t *testing.T) {
	dir := t.TempDir()
	a, p := mispAgreement(t, "ssa-skip", protocol.TLPGreen, 0)
	known := true
	cfg := MISPFeedConfig{Dir: dir, Tidy: -1, Agreement: func(id string) (*cti.Agreement, bool) { return a, known && id == a.SSA },
		Log: slog.New(slog.DiscardHandler)}
	f, err := OpenMISPFeed(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	recs := eveRecords(t, p, at)[:3]
	stats := Record{SSAID: a.SSA, Seq: 4, Received: at, Format: protocol.FormatEVE,
		Record: json.RawMessage(`{"timestamp":"2026-12-06T10:00:00.000000+0000","event_type":"stats","stats":{"uptime":1}}`)}
	cef := Record{SSAID: a.SSA, Seq: 5, Received: at, Format: "cef", Text: "CEF:0|Example|IDS|1.0|100|scan|5|"}
	chunk := append(slices.Clone(recs), stats, cef, cef)
	known = false // the SSA's agreement is gone: the Write fails, and counts nothing
	if err := f.Write(context.Background(), chunk); err == nil {
		t.Fatal("a Write without the SSA's agreement took the chunk")
	}
	if got := f.Skipped(); got != (Skips{}) {
		t.Errorf("a failed Write counted %+v skipped", got)
	}
	known = true
	for range 2 { // the chunk written again counts again: each Write that took it
		if err := f.Write(context.Background(), chunk); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := f.Skipped(), (Skips{Unmappable: 4, Unmapped: 2}); got != want {
		t.Errorf("skipped %+v, want %+v", got, want)
	}
	ev, err := f.load(a.MISPEventUUID(at))
	if err != nil || ev == nil || len(ev.Attribute) == 0 {
		t.Fatalf("the event of the chunk's mappable records: %v, %v", ev, err)
	}
}
