package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

// TestJSONLFormats: a JSONL sink writes a record's Doc (a STIX bundle, an ECS document) in
// place of its envelope, and reads back from each line the SSA and time of receipt that its
// retention needs.
func TestJSONLFormats(t *testing.T) {
	a, p := mispAgreement(t, "ssa-fmt", protocol.TLPGreen, time.Hour)
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	recs := eveRecords(t, p, at)[:4]
	for _, format := range []string{cti.FormatRaw, cti.FormatSTIX, cti.FormatECS} {
		t.Run(format, func(t *testing.T) {
			out := make([]Record, len(recs))
			copy(out, recs)
			if format != cti.FormatRaw {
				for i := range out {
					doc, err := cti.Marshal(format, a, cti.Record{Seq: out[i].Seq, Received: out[i].Received, Format: out[i].Format, Data: out[i].Data()})
					if err != nil {
						t.Fatal(err)
					}
					out[i].Doc = doc
				}
			}
			path := filepath.Join(t.TempDir(), "out.jsonl")
			j, err := OpenJSONL(JSONLConfig{Path: path, Tidy: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if err := j.Write(context.Background(), out); err != nil {
				t.Fatal(err)
			}
			s, err := j.scan(path)
			if err != nil {
				t.Fatal(err)
			}
			if s.records != len(out) || s.unreadableLines != 0 {
				t.Fatalf("read back %d records, %d unreadable lines, want %d records", s.records, s.unreadableLines, len(out))
			}
			for i, line := range readLines(t, path) {
				if out[i].Doc != nil && !bytes.Equal(line, out[i].Doc) {
					t.Errorf("line %d is not the record's %s form: %.200s", i, format, line)
				}
				id, got, ok := lineMeta(line)
				if !ok || id != a.SSA || !got.Equal(at) {
					t.Errorf("line meta %q %v %v, want %s %v: %.200s", id, got, ok, a.SSA, at, line)
				}
			}
		})
	}
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSpace(b), []byte("\n"))
}

// FuzzLineMeta: no line a JSONL file holds makes the reading of its SSA and receipt panic.
func FuzzLineMeta(f *testing.F) {
	f.Add([]byte(`{"ssa_id":"s","seq":1,"received":"2026-12-06T09:00:00Z","format":"eve","record":{}}`))
	f.Add([]byte(`{"labels":{"ssa_id":"s"},"event":{"ingested":"2026-12-06T09:00:00Z"}}`))
	f.Add([]byte(`{"type":"bundle","objects":[{"type":"observed-data","created":"2026-12-06T09:00:00.000Z","extensions":{"` + cti.ExtensionID + `":{"ssa_id":"s"}}}]}`))
	f.Add([]byte(`{"objects":[{"extensions":{"x":1}}]}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		if id, _, ok := lineMeta(line); ok && id == "" {
			t.Fatal("a line read as a record of no SSA")
		}
	})
}

// FuzzMISPEventFile: no file in a feed directory makes the feed panic when it opens: it is
// an event, or refused.
func FuzzMISPEventFile(f *testing.F) {
	a, p := mispAgreement(f, "ssa-fuzz", protocol.TLPAmber, 0)
	ev := a.NewMISPEvent(time.Unix(0, 0), time.Unix(0, 0))
	recs := eveRecords(f, p, time.Unix(0, 0))
	attrs, _ := a.MISPAttributes(cti.Record{Seq: 1, Received: recs[0].Received, Format: recs[0].Format, Data: recs[0].Data()})
	ev.Add(attrs, time.Unix(0, 0), 0)
	b, _ := json.Marshal(cti.MISPFeedEvent{Event: ev})
	f.Add(b)
	f.Add([]byte(`{"Event":null}`))
	f.Add([]byte(`{"Event":{"uuid":"` + ev.UUID + `","Tag":[{"name":"ssanet:ssa=\"x"}],"date":"bad"}}`))
	id := ev.UUID
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, id+".json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = OpenMISPFeed(MISPFeedConfig{Dir: dir, Tidy: -1, Agreement: func(string) (*cti.Agreement, bool) { return a, true }})
	})
}

// TestWebhookECSBulk: a webhook with ECS documents and body es-bulk posts an index action and
// the ECS document (not the envelope) per record, as Elasticsearch's _bulk takes them.
func TestWebhookECSBulk(t *testing.T) {
	a, p := mispAgreement(t, "ssa-ecs", protocol.TLPGreen, 0)
	recs := eveRecords(t, p, time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC))[:3]
	for i := range recs {
		doc, err := cti.Marshal(cti.FormatECS, a, cti.Record{Seq: recs[i].Seq, Received: recs[i].Received, Format: recs[i].Format, Data: recs[i].Data()})
		if err != nil {
			t.Fatal(err)
		}
		recs[i].Doc = doc
	}
	var body []byte
	w, _ := newTestWebhook(t, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		_, _ = io.WriteString(rw, `{"errors":false,"items":[]}`)
	}), BodyESBulk, WebhookConfig{})
	if err := w.Write(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
	if len(lines) != 2*len(recs) {
		t.Fatalf("%d lines for %d records", len(lines), len(recs))
	}
	for i := 1; i < len(lines); i += 2 {
		var doc struct {
			Labels struct {
				SSAID string `json:"ssa_id"`
			} `json:"labels"`
			SSAID string `json:"ssa_id"`
		}
		if err := json.Unmarshal(lines[i], &doc); err != nil || doc.Labels.SSAID != a.SSA || doc.SSAID != "" {
			t.Errorf("line %d is no ECS document of the SSA (%v): %.200s", i, err, lines[i])
		}
	}
}
