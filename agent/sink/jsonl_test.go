package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// clock is a clock the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// readJSONL reads the records of a JSONL file.
func readJSONL(t *testing.T, path string) []Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %q: %v", path, sc.Bytes(), err)
		}
		out = append(out, r)
	}
	return out
}

func openTestJSONL(t *testing.T, cfg JSONLConfig) *JSONL {
	t.Helper()
	cfg.Tidy = -1 // the test calls Tidy
	j, err := OpenJSONL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// recordsAt are n records of ssa received at at.
func recordsAt(ssa string, first, n int, at time.Time) []Record {
	recs := testRecords(ssa, first, n)
	for i := range recs {
		recs[i].Received = at
	}
	return recs
}

// TestJSONLRotateBySize: no file grows past max-size; every record is in exactly one file, in
// order.
func TestJSONLRotateBySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	c := &clock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
	one, _ := json.Marshal(testRecords("ssa-1", 1, 1)[0])
	j := openTestJSONL(t, JSONLConfig{Path: path, MaxSize: int64(3*(len(one)+1) + 10), Now: c.now})
	for i := range 4 {
		if err := j.Write(context.Background(), testRecords("ssa-1", 1+i*2, 2)); err != nil {
			t.Fatal(err)
		}
		c.add(time.Second)
	}
	rotated := j.Rotated()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if len(rotated) != 2 {
		t.Fatalf("rotated %q, want 2 files", rotated)
	}
	var seqs []uint64
	for _, p := range append(rotated, path) {
		if info, err := os.Stat(p); err != nil || info.Size() > int64(3*(len(one)+1)+10) || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", p, info, err)
		}
		for _, r := range readJSONL(t, p) {
			seqs = append(seqs, r.Seq)
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) || len(seqs) != 8 {
			t.Fatalf("records across the files: %v", seqs)
		}
	}
}

// TestJSONLRetention: a rotated file goes once every record in it is past its SSA's retention
// (and not before); a file with a record of an SSA without retention stays; the current file
// is rotated by age, and when its oldest record's retention ran out. The same after a
// restart, from what the files hold.
func TestJSONLRetention(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	c := &clock{t: t0}
	retention := func(ssa string) (time.Duration, bool) {
		switch ssa {
		case "ssa-short":
			return time.Hour, true
		case "ssa-long":
			return 3 * time.Hour, true
		}
		return 0, false
	}
	cfg := JSONLConfig{Path: path, MaxAge: 24 * time.Hour, Retention: retention, Now: c.now}
	j := openTestJSONL(t, cfg)
	ctx := context.Background()
	write := func(recs []Record) {
		t.Helper()
		if err := j.Write(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	tidy := func() []string {
		t.Helper()
		if err := j.Tidy(); err != nil {
			t.Fatal(err)
		}
		return j.Rotated()
	}
	// File A: short and long records; rotated by age below.
	write(recordsAt("ssa-short", 1, 2, t0))
	write(recordsAt("ssa-long", 1, 2, t0))
	if r := tidy(); len(r) != 0 {
		t.Fatalf("rotated %q at once", r)
	}
	c.add(time.Hour) // the short records' retention ran out: the file is rotated, kept
	a := tidy()
	if len(a) != 1 {
		t.Fatalf("rotated %q after the oldest record's retention, want 1 file", a)
	}
	// File B: a record of an SSA without retention, then one with.
	write(recordsAt("ssa-none", 1, 1, c.now()))
	write(recordsAt("ssa-short", 3, 1, c.now()))
	c.add(time.Hour)
	if r := tidy(); len(r) != 2 { // B rotated (its short record expired); A not yet deleted
		t.Fatalf("rotated %q, want A and B", r)
	}
	c.add(time.Hour - time.Second)
	if r := tidy(); len(r) != 2 {
		t.Fatalf("a second before A's long records expire: %q", r)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// Restart: what the files hold is read again.
	c.add(time.Second)
	j = openTestJSONL(t, cfg)
	defer j.Close()
	r := tidy()
	if len(r) != 1 || r[0] == a[0] {
		t.Fatalf("after A's last retention ran out: %q, want B only", r)
	}
	if _, err := os.Stat(a[0]); !os.IsNotExist(err) {
		t.Fatalf("A still there: %v", err)
	}
	c.add(1000 * time.Hour)
	if r := tidy(); len(r) != 1 {
		t.Fatalf("B holds a record without retention, yet: %q", r)
	}
	// Age: a file is rotated MaxAge after its first record, whatever its records.
	write(recordsAt("ssa-none", 2, 1, c.now()))
	c.add(24*time.Hour - time.Second)
	if r := tidy(); len(r) != 1 {
		t.Fatalf("rotated before max-age: %q", r)
	}
	c.add(time.Second)
	if r := tidy(); len(r) != 2 {
		t.Fatalf("not rotated at max-age: %q", r)
	}
}

// TestJSONLKeepsUnreadableRotated: a rotated file with no line the sink can read as a record
// has no retention it knows, so a tidy keeps it; one that also holds a record whose retention
// ran out goes.
func TestJSONLKeepsUnreadableRotated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	junk := path + "." + t0.Format(rotatedLayout)
	mixed := path + "." + t0.Add(time.Second).Format(rotatedLayout)
	if err := os.WriteFile(junk, []byte("not json\n{\"seq\":1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := `{"ssa_id":"ssa-short","received":"` + t0.Format(time.RFC3339Nano) + `"}` + "\n"
	if err := os.WriteFile(mixed, []byte("not json\n"+rec), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &clock{t: t0.Add(2 * time.Hour)}
	retention := func(string) (time.Duration, bool) { return time.Hour, true }
	j := openTestJSONL(t, JSONLConfig{Path: path, Retention: retention, Now: c.now})
	defer j.Close()
	if err := j.Tidy(); err != nil {
		t.Fatal(err)
	}
	if r := j.Rotated(); len(r) != 1 || r[0] != junk {
		t.Fatalf("rotated after tidy: %q, want only %s", r, junk)
	}
	if _, err := os.Stat(junk); err != nil {
		t.Fatalf("the unreadable file was deleted: %v", err)
	}
}
