package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/protocol"
)

// waitIngested polls the agent's ingest counter until it reaches n.
func waitIngested(t *testing.T, a *Agent, n float64) {
	t.Helper()
	waitFor(t, 10*time.Second, func() (bool, string) {
		got := testutil.ToFloat64(a.counts.queue.ingested)
		if got > n {
			t.Fatalf("%v records ingested, want %v", got, n)
		}
		return got == n, fmt.Sprintf("%v records ingested, want %v", got, n)
	})
}

func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

func TestFollowSurvivesRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eve.json")
	appendLines(t, path, `{"event_type":"alert"}`, `{"event_type":"alert"}`)
	a := newTestAgent(t, "sensor", func(c *Config) {
		c.Ingest.Follow = []FollowConfig{{Path: path, Format: protocol.FormatEVE}}
	})
	waitIngested(t, a, 2)

	// A half-written line waits until it is complete (polled by hand: the agent's own
	// follower polls when it likes).
	half := filepath.Join(t.TempDir(), "half.json")
	fl := a.sources.newFollower(FollowConfig{Path: half, Format: protocol.FormatEVE})
	defer fl.close()
	f, err := os.OpenFile(half, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, part := range []string{`{"event_type":`, `"alert"}` + "\n"} {
		if _, err := f.WriteString(part); err != nil {
			t.Fatal(err)
		}
		if err := fl.poll(context.Background()); err != nil {
			t.Fatal(err)
		}
		if want := map[int]int64{0: 0, 1: 23}[i]; fl.st.Offset != want {
			t.Fatalf("after part %d of the line, read up to %d, want %d", i+1, fl.st.Offset, want)
		}
	}
	waitIngested(t, a, 3)

	// Rotation: what the sensor still writes to the old file is read before the new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path+".1", `{"event_type":"alert"}`)
	appendLines(t, path, `{"event_type":"alert"}`, `{"event_type":"alert"}`)
	waitIngested(t, a, 6)

	// A restart neither repeats nor skips: the offset is kept.
	home := a.home
	a.Close()
	appendLines(t, path, `{"event_type":"alert"}`)
	b, err := New(home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitIngested(t, b, 1)
}

// ctxCancelledAfter is a context whose Err turns Canceled after n checks, as when a Close
// comes in the middle of a drain.
type ctxCancelledAfter struct {
	context.Context
	n int
}

func (c *ctxCancelledAfter) Err() error {
	if c.n > 0 {
		c.n--
		return nil
	}
	return context.Canceled
}

// ingested is how many raw records the provider queued durably under s so far.
func ingested(t *testing.T, prov *Agent, s *protocol.SSA) uint64 {
	t.Helper()
	st, err := prov.store.OutboxState(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	return st.Ingested
}

// A drain stopped part-way saved where what it queued ends: the agent started again queues
// the rest of the file, and nothing twice.
func TestFollowInterruptedIngest(t *testing.T) {
	prov, _, s := exchangePair(t)
	const records = 3600 // 300 × 12: a backlog of two slices
	data := bytes.Repeat(sampleEVE(t), records/12)
	tests := []struct {
		name   string
		checks int // of the context before it is cancelled
		first  uint64
	}{
		{"cancelled before the first slice", 0, 0},
		{"cancelled after the first slice", 2, ingestChunk},
		{"cancelled after the last slice", 3, records},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := FollowConfig{Path: filepath.Join(t.TempDir(), "eve.json"), Format: protocol.FormatEVE}
			if err := os.WriteFile(cfg.Path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			before := ingested(t, prov, s)
			fl := prov.sources.newFollower(cfg)
			err := fl.poll(&ctxCancelledAfter{Context: context.Background(), n: tt.checks})
			fl.close()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("interrupted poll: %v, want %v", err, context.Canceled)
			}
			if got := ingested(t, prov, s) - before; got != tt.first {
				t.Errorf("interrupted poll: %d records ingested, want %d", got, tt.first)
			}

			again := prov.sources.newFollower(cfg) // from the offset saved on disk, as after a restart
			defer again.close()
			if err := again.poll(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := ingested(t, prov, s) - before; got != records {
				t.Errorf("%d records in the file, %d ingested", records, got)
			}
			if again.st.Offset != int64(len(data)) {
				t.Errorf("offset %d, want the file's end %d", again.st.Offset, len(data))
			}
		})
	}
}

// A line longer than the follower's buffer is skipped up to its newline and counted, and
// what follows it is read; a line still being written waits for its newline.
func TestFollowLongLine(t *testing.T) {
	prov, _, s := exchangePair(t)
	eve := string(sampleEVE(t))
	long := strings.Repeat("x", followBuffer+1<<20)
	tests := []struct {
		name      string
		writes    []string // appended in turn, each followed by a poll
		ingested  []uint64 // records ingested after each poll
		malformed int64
		restart   bool // a new follower, from the saved offset, for each poll
	}{
		{"long line, then records", []string{long + "\n" + eve}, []uint64{12}, 1, false},
		{"records around a long line", []string{eve + long + "\n" + eve}, []uint64{24}, 1, false},
		{"line over several buffers", []string{strings.Repeat(long, 3) + "\n" + eve}, []uint64{12}, 1, false},
		{"long line still being written", []string{long, long, "\n" + eve}, []uint64{0, 0, 12}, 1, false},
		{"long line being written across restarts", []string{long, long, "\n" + eve}, []uint64{0, 0, 12}, 1, true},
		{"incomplete line", []string{eve[:100], eve[100:]}, []uint64{0, 12}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := FollowConfig{Path: filepath.Join(t.TempDir(), "eve.json"), Format: protocol.FormatEVE}
			before := ingested(t, prov, s)
			fl := prov.sources.newFollower(cfg)
			defer func() { fl.close() }()
			var malformed int64
			for i, w := range tt.writes {
				f, err := os.OpenFile(cfg.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				_, err = f.WriteString(w)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					t.Fatal(err)
				}
				if tt.restart && i > 0 {
					malformed += fl.malformed
					fl.close()
					fl = prov.sources.newFollower(cfg)
				}
				if err := fl.poll(context.Background()); err != nil {
					t.Fatalf("poll %d: %v", i, err)
				}
				if got := ingested(t, prov, s) - before; got != tt.ingested[i] {
					t.Errorf("after poll %d: %d records ingested, want %d (offset %d)", i, got, tt.ingested[i], fl.st.Offset)
				}
			}
			if malformed += fl.malformed; malformed != tt.malformed {
				t.Errorf("%d lines counted malformed, want %d", malformed, tt.malformed)
			}
			info, err := os.Stat(cfg.Path)
			if err != nil {
				t.Fatal(err)
			}
			if fl.st.Offset != info.Size() || fl.st.InLongLine {
				t.Errorf("ended at %+v, want the file's end %d", fl.st, info.Size())
			}
		})
	}
}

func TestSyslogListeners(t *testing.T) {
	udp, tcp := freePort(t, "udp"), freePort(t, "tcp")
	a := newTestAgent(t, "sensor", func(c *Config) { c.Ingest.SyslogUDP, c.Ingest.SyslogTCP = udp, tcp })
	msg := "<34>1 2026-11-23T10:00:00Z host app - ID47 - login failed from 93.184.216.34"
	conn, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		conn.Write([]byte(msg))
	}
	conn.Close()
	waitIngested(t, a, 3)
	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for range 2 {
		buf.WriteString(msg + "\n")
	}
	tc.Write(buf.Bytes())
	tc.Close()
	waitIngested(t, a, 5)
}

// TestFollowMultiLineRecords: a followed file whose records span lines (pretty-printed
// IDMEFv2) is not cut between the lines of a record, however many lines a read holds.
func TestFollowMultiLineRecords(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	record := "{\n  \"Version\": \"2.0.3\",\n  \"ID\": \"x\",\n  \"CreateTime\": \"2026-01-01T00:00:00Z\",\n  \"Analyzer\": {},\n  \"Note\": \"a\"\n}\n"
	const n = 2 * ingestChunk / 7 // records of 7 lines: twice ingestChunk lines, some cut by a slice
	cfg := FollowConfig{Path: filepath.Join(t.TempDir(), "alerts.json"), Format: protocol.FormatIDMEFv2}
	if err := os.WriteFile(cfg.Path, []byte(strings.Repeat(record, n)), 0o600); err != nil {
		t.Fatal(err)
	}
	fl := prov.sources.newFollower(cfg)
	defer fl.close()
	if err := fl.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(cfg.Path); err != nil || fl.malformed != 0 || fl.st.Offset != info.Size() {
		t.Fatalf("%d records malformed (a record cut between its lines), offset %d of %v (%v)", fl.malformed, fl.st.Offset, info.Size(), err)
	}
}

// TestIngestCountsMalformed: records that the enforcement point cannot parse are counted
// malformed, with those the reader cannot cut out; the well-formed ones are all queued.
func TestIngestCountsMalformed(t *testing.T) {
	prov, _, s := exchangePair(t)
	sample := sampleEVE(t)
	good := int64(bytes.Count(sample, []byte("\n")))
	tests := []struct {
		name      string
		input     string
		malformed int64
	}{
		{"well-formed", string(sample), 0},
		{"garbage lines", "hello world\n{not json\n[1,2,3]\n\"a string\"\n", 4},
		{"garbage among records", "garbage\n" + string(sample) + "{\"truncated\":\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := prov.Ingest(context.Background(), protocol.FormatEVE, strings.NewReader(tt.input))
			if err != nil {
				t.Fatal(err)
			}
			if st.Malformed != tt.malformed {
				t.Errorf("%d records counted malformed, want %d (%+v)", st.Malformed, tt.malformed, st)
			}
			wantQueued := int64(0)
			if strings.Contains(tt.input, string(sample)) {
				wantQueued = good
			}
			if st.Queued[s.ID] != wantQueued {
				t.Errorf("%d records queued, want %d", st.Queued[s.ID], wantQueued)
			}
		})
	}
}

// TestFollowMigratesOffsetFile: the offset an earlier version saved in HOME/follow is moved
// into the store at the first start, and its file removed: an upgrade reads on from there,
// and a restart after it too.
func TestFollowMigratesOffsetFile(t *testing.T) {
	prov, _, s := exchangePair(t)
	sample := sampleEVE(t)
	cfg := FollowConfig{Path: filepath.Join(t.TempDir(), "eve.json"), Format: protocol.FormatEVE}
	if err := os.WriteFile(cfg.Path, bytes.Repeat(sample, 2), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	// As the earlier version left it: the first copy of the sample read.
	sum := sha256.Sum256([]byte(cfg.Path))
	old := filepath.Join(prov.home, "follow", hex.EncodeToString(sum[:8])+".json")
	if err := os.MkdirAll(filepath.Dir(old), 0o700); err != nil {
		t.Fatal(err)
	}
	legacy := fmt.Sprintf(`{"inode":%d,"offset":%d}`, inodeOf(info), len(sample))
	if err := os.WriteFile(old, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}

	before := ingested(t, prov, s)
	fl := prov.sources.newFollower(cfg)
	if err := fl.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	fl.close()
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old offset file is still there: %v", err)
	}
	want := uint64(bytes.Count(sample, []byte("\n")))
	if got := ingested(t, prov, s) - before; got != want {
		t.Errorf("%d records ingested after the upgrade, want the second copy's %d", got, want)
	}
	again := prov.sources.newFollower(cfg)
	defer again.close()
	if err := again.poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ingested(t, prov, s) - before; got != want || again.st.Offset != info.Size() {
		t.Errorf("after a restart: %d records ingested, offset %d; want %d and %d", got, again.st.Offset, want, info.Size())
	}
}
