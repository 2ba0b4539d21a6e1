package sink

import (
	"bytes"
	"context"
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
			for _, line := range readLines(t, path) {
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
