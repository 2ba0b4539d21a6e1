package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJSONLDropsTornLine: a JSON Lines file whose last line a crash left half-written gets
// that line cut when the sink opens it again, so that the records written next (the torn
// ones among them, not yet counted as forwarded) follow whole lines only.
func TestJSONLDropsTornLine(t *testing.T) {
	whole := `{"ssa_id":"ssa-1","seq":1,"format":"eve","text":"a"}` + "\n"
	long := strings.Repeat("x", 200<<10) // longer than one read of the file's end
	for _, tc := range []struct{ name, before, want string }{
		{"torn after whole lines", whole + whole + `{"ssa_id":"ssa-1","seq":3,"fo`, whole + whole},
		{"long torn line", whole + `{"text":"` + long, whole},
		{"only a torn line", `{"ssa_id":"ssa-1","seq":1`, ""},
		{"whole lines", whole, whole},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.jsonl")
			if err := os.WriteFile(path, []byte(tc.before), 0o600); err != nil {
				t.Fatal(err)
			}
			j := openTestJSONL(t, JSONLConfig{Path: path})
			if err := j.Write(context.Background(), []Record{{SSAID: "ssa-1", Seq: 3, Format: "eve", Text: "c"}}); err != nil {
				t.Fatal(err)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, []byte(tc.want)) {
				t.Fatalf("the file starts %.80q, want %.80q", got, tc.want)
			}
			for i, line := range bytes.Split(bytes.TrimSuffix(got, []byte("\n")), []byte("\n")) {
				if !json.Valid(line) {
					t.Fatalf("line %d is not a record: %.80q", i+1, line)
				}
			}
		})
	}
}
