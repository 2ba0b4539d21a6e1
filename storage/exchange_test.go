package storage

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/ssanet/ssanet/protocol"
)

// record returns the content of record seq of an SSA in these tests: size bytes (at least
// the tag and number), so that a record in the wrong place or of another SSA shows.
func record(ssaID string, seq uint64, size int) []byte {
	b := fmt.Appendf(nil, "%s#%d|", ssaID, seq)
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

// records returns records first..first+n-1 of an SSA, of size bytes each.
func records(ssaID string, first uint64, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = record(ssaID, first+uint64(i), size)
	}
	return out
}

// seqs returns the sequence numbers of queued records.
func seqs(rs []QueuedRecord) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// keysUnder counts the keys of the store under prefix, deleted ones not counted.
func keysUnder(t *testing.T, s *Store, prefix []byte) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// indexed returns the index entries of a queue (outboxPrefix or inboxPrefix), in order.
func indexed(t testing.TB, s *Store, prefix []byte) []blockRef {
	t.Helper()
	var refs []blockRef
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			err := it.Item().Value(func(v []byte) error {
				ref, err := decodeBlockRef(it.Item().Key(), len(prefix), v)
				refs = append(refs, ref)
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

// checkIndex checks that a queue's index holds the blocks of records head+1..last and no
// other: in order, without a gap, and none whose records are all at or before head (deleted).
func checkIndex(t testing.TB, s *Store, prefix []byte, head, last uint64) {
	t.Helper()
	refs := indexed(t, s, prefix)
	if head >= last {
		if len(refs) != 0 {
			t.Fatalf("index of %q: %d blocks from %d to %d, want none", prefix, len(refs), refs[0].first, refs[len(refs)-1].last)
		}
		return
	}
	if len(refs) == 0 {
		t.Fatalf("index of %q: no block, want records %d to %d", prefix, head+1, last)
	}
	if refs[0].first > head+1 || refs[0].last <= head || refs[len(refs)-1].last != last {
		t.Fatalf("index of %q: blocks of records %d to %d (first block to %d), want %d to %d", prefix, refs[0].first, refs[len(refs)-1].last, refs[0].last, head+1, last)
	}
	for i := 1; i < len(refs); i++ {
		if refs[i].first != refs[i-1].last+1 {
			t.Fatalf("index of %q: block %d to %d after a block to %d", prefix, refs[i].first, refs[i].last, refs[i-1].last)
		}
	}
}

func outbox(t *testing.T, s *Store, ssaID string) OutboxState {
	t.Helper()
	st, err := s.OutboxState(ssaID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func inbox(t *testing.T, s *Store, ssaID string) InboxState {
	t.Helper()
	st, err := s.InboxState(ssaID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// checkPending checks that the outbox holds exactly records from..to of the test content.
func checkPending(t *testing.T, s *Store, ssaID string, from, to uint64, size int) {
	t.Helper()
	got, err := s.Pending(ssaID, 0, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if want := span(from, to); !slices.Equal(seqs(got), want) {
		t.Fatalf("pending %v, want %d..%d", seqs(got), from, to)
	}
	for _, r := range got {
		if want := record(ssaID, r.Seq, size); !bytes.Equal(r.Data, want) {
			t.Fatalf("record %d is %q, want %q", r.Seq, r.Data, want)
		}
	}
}

func TestEnqueueSequence(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	steps := []struct {
		ssa               string
		n                 int
		ingested, dropped uint64
		wantLast          uint64
	}{
		{"ssa-a", 3, 5, 2, 3},
		{"ssa-a", 0, 4, 4, 3}, // counters only
		{"ssa-b", 1, 1, 0, 1}, // numbered per SSA
		{"ssa-a", 2, 2, 0, 5},
		{"ssa-a", 1000, 1200, 200, 1005},
	}
	next := map[string]uint64{}
	for i, st := range steps {
		last, err := s.Enqueue(st.ssa, records(st.ssa, next[st.ssa]+1, st.n, 100), st.ingested, st.dropped)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if last != st.wantLast {
			t.Fatalf("step %d: last %d, want %d", i, last, st.wantLast)
		}
		next[st.ssa] = last
	}
	want := map[string]OutboxState{
		"ssa-a": {Ingested: 5 + 4 + 2 + 1200, Refined: 1005, Dropped: 2 + 4 + 200},
		"ssa-b": {Ingested: 1, Refined: 1},
		"ssa-c": {},
	}
	for ssa, w := range want {
		if got := outbox(t, s, ssa); got != w {
			t.Errorf("%s: %+v, want %+v", ssa, got, w)
		}
	}
	checkPending(t, s, "ssa-a", 1, 1005, 100)
	checkPending(t, s, "ssa-b", 1, 1, 100)
}

func TestPendingLimits(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	// Records 1..10 of 100 bytes, then 11 of 1000 bytes, then 12..20 of 100.
	recs := records("ssa", 1, 10, 100)
	recs = append(recs, record("ssa", 11, 1000))
	recs = append(recs, records("ssa", 12, 9, 100)...)
	if _, err := s.Enqueue("ssa", recs, 20, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("ssa", 2); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		after         uint64
		max, maxBytes int
		want          []uint64
	}{
		{"all", 0, 100, 1 << 20, span(3, 20)},
		{"acked are not pending", 1, 100, 1 << 20, span(3, 20)},
		{"after", 15, 100, 1 << 20, span(16, 20)},
		{"max", 4, 3, 1 << 20, span(5, 7)},
		{"max 1", 19, 1, 1 << 20, []uint64{20}},
		{"max 0", 0, 0, 1 << 20, nil},
		{"maxBytes", 2, 100, 350, span(3, 5)},
		{"maxBytes exact", 2, 100, 300, span(3, 5)},
		{"maxBytes stops before a large record", 8, 100, 1000, span(9, 10)},
		{"at least one, over maxBytes", 10, 100, 50, []uint64{11}},
		{"at least one, maxBytes 0", 0, 100, 0, []uint64{3}},
		{"nothing pending", 20, 100, 1 << 20, nil},
		{"after beyond the last", 50, 100, 1 << 20, nil},
		{"after the largest sequence number", math.MaxUint64, 100, 1 << 20, nil},
		{"unknown SSA", 0, 100, 1 << 20, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ssa := "ssa"
			if tc.name == "unknown SSA" {
				ssa = "other"
			}
			got, err := s.Pending(ssa, tc.after, tc.max, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tc.want) {
				t.Fatalf("pending %v, want %v", seqs(got), tc.want)
			}
			for _, r := range got {
				if !bytes.Equal(r.Data, recs[r.Seq-1]) {
					t.Fatalf("record %d differs", r.Seq)
				}
				if cap(r.Data) != len(r.Data) {
					t.Fatalf("record %d: capacity %d beyond its length %d", r.Seq, cap(r.Data), len(r.Data))
				}
			}
		})
	}
}

func TestAck(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	if _, err := s.Enqueue("ssa", records("ssa", 1, 100, 200), 100, 0); err != nil {
		t.Fatal(err)
	}
	prefix := outboxPrefix("ssa")
	steps := []struct {
		ack       uint64
		wantErr   error
		wantAcked uint64
	}{
		{10, nil, 10},
		{10, nil, 10}, // again: no-op
		{5, nil, 10},  // backwards: no-op
		{0, nil, 10},
		{60, nil, 60},
		{101, ErrNotEnqueued, 60},
		{100, nil, 100},
	}
	for i, st := range steps {
		err := s.Ack("ssa", st.ack)
		if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
			t.Fatalf("step %d: ack %d: %v, want %v", i, st.ack, err, st.wantErr)
		}
		got := outbox(t, s, "ssa")
		if got.Acked != st.wantAcked || got.Sent != st.wantAcked {
			t.Fatalf("step %d: acked %d sent %d, want %d", i, got.Acked, got.Sent, st.wantAcked)
		}
		// The blocks of records acknowledged leave the index (and the disk: TestReleaseDisk).
		checkIndex(t, s, prefix, st.wantAcked, 100)
		if st.wantAcked < 100 {
			checkPending(t, s, "ssa", st.wantAcked+1, 100, 200)
		}
	}
	if _, err := s.Enqueue("ssa", records("ssa", 101, 5, 200), 5, 0); err != nil {
		t.Fatal(err)
	}
	checkPending(t, s, "ssa", 101, 105, 200)
	if err := s.Ack("unknown", 1); !errors.Is(err, ErrNotEnqueued) {
		t.Fatalf("ack of an unknown SSA: %v", err)
	}
}

// TestAckLong acknowledges more records at once than one transaction could delete by
// tombstones: one transaction moves Head and takes their blocks out of the index.
func TestAckLong(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const n = 2*deleteChunk + 100
	for first := uint64(1); first <= n; first += 1000 {
		if _, err := s.Enqueue("ssa", records("ssa", first, min(1000, n-int(first)+1), 50), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	groups := s.groups.Load()
	if err := s.Ack("ssa", n-10); err != nil {
		t.Fatal(err)
	}
	if g := s.groups.Load() - groups; g != 1 {
		t.Errorf("ack of %d records in %d transactions, want 1", n-10, g)
	}
	checkIndex(t, s, outboxPrefix("ssa"), n-10, n)
	checkPending(t, s, "ssa", n-9, n, 50)
}

func TestOutboxCounters(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	type step struct {
		name    string
		do      func() error
		want    OutboxState
		wantErr error
	}
	enqueue := func(n int, ingested, dropped uint64) func() error {
		return func() error {
			st, err := s.OutboxState("ssa")
			if err != nil {
				return err
			}
			_, err = s.Enqueue("ssa", records("ssa", st.Refined+1, n, 80), ingested, dropped)
			return err
		}
	}
	steps := []step{
		{"enqueue", enqueue(10, 15, 5), OutboxState{Ingested: 15, Refined: 10, Dropped: 5}, nil},
		{"mark sent", func() error { return s.MarkSent("ssa", 6) }, OutboxState{Ingested: 15, Refined: 10, Dropped: 5, Sent: 6}, nil},
		{"mark sent backwards", func() error { return s.MarkSent("ssa", 3) }, OutboxState{Ingested: 15, Refined: 10, Dropped: 5, Sent: 6}, nil},
		{"mark sent beyond", func() error { return s.MarkSent("ssa", 11) }, OutboxState{Ingested: 15, Refined: 10, Dropped: 5, Sent: 6}, ErrNotEnqueued},
		{"mark sent all", func() error { return s.MarkSent("ssa", 10) }, OutboxState{Ingested: 15, Refined: 10, Dropped: 5, Sent: 10}, nil},
		{"ack", func() error { return s.Ack("ssa", 4) }, OutboxState{Ingested: 15, Refined: 10, Dropped: 5, Acked: 4, Sent: 10}, nil},
		{"all dropped", enqueue(0, 7, 7), OutboxState{Ingested: 22, Refined: 10, Dropped: 12, Acked: 4, Sent: 10}, nil},
		{"drop outbox", dropOutbox(s, "ssa"), OutboxState{Ingested: 22, Refined: 10, Dropped: 12, Acked: 4, Sent: 10}, nil},
		{"enqueue after drop", enqueue(3, 3, 0), OutboxState{Ingested: 25, Refined: 13, Dropped: 12, Acked: 4, Sent: 10}, nil},
		{"ack after drop", func() error { return s.Ack("ssa", 11) }, OutboxState{Ingested: 25, Refined: 13, Dropped: 12, Acked: 11, Sent: 11}, nil},
	}
	for _, st := range steps {
		if err := st.do(); !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.wantErr)
		}
		if got := outbox(t, s, "ssa"); got != st.want {
			t.Fatalf("%s: %+v, want %+v", st.name, got, st.want)
		}
	}
	checkPending(t, s, "ssa", 12, 13, 80)
	checkIndex(t, s, outboxPrefix("ssa"), 11, 13)
}

// dropOutbox returns a step that drops the outbox and checks that nothing is pending.
func dropOutbox(s *Store, ssaID string) func() error {
	return func() error {
		if err := s.DropOutbox(ssaID); err != nil {
			return err
		}
		if n, err := s.Pending(ssaID, 0, 100, 1<<20); err != nil || len(n) != 0 {
			return fmt.Errorf("%d records pending after DropOutbox (%v)", len(n), err)
		}
		return nil
	}
}

// TestMarkSentPersisted checks that Sent is stored with the next write of the outbox state.
func TestMarkSentPersisted(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue("ssa", records("ssa", 1, 10, 50), 10, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSent("ssa", 8); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("ssa", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSent("ssa", 9); err != nil { // not written before Close
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if got := outbox(t, s, "ssa"); got.Sent != 8 || got.Acked != 3 {
		t.Fatalf("after reopening: %+v, want sent 8, acked 3", got)
	}
}

func TestReceive(t *testing.T) {
	at := t0
	type step struct {
		first      uint64
		n          int
		violations uint64
		wantStored int
		wantLast   uint64
		wantErr    error
	}
	tests := []struct {
		name           string
		steps          []step
		wantViolations uint64
	}{
		{"in order", []step{{1, 5, 1, 5, 5, nil}, {6, 5, 0, 5, 10, nil}, {11, 1, 1, 1, 11, nil}}, 2},
		{"duplicate batch", []step{{1, 5, 2, 5, 5, nil}, {1, 5, 2, 0, 5, nil}}, 2},
		{"old batch", []step{{1, 10, 0, 10, 10, nil}, {3, 4, 1, 0, 10, nil}}, 0},
		{"partial overlap", []step{{1, 5, 0, 5, 5, nil}, {3, 6, 6, 3, 8, nil}}, 3},
		{"overlap by one", []step{{1, 5, 0, 5, 5, nil}, {5, 2, 0, 1, 6, nil}}, 0},
		{"gap", []step{{1, 5, 0, 5, 5, nil}, {7, 3, 1, 0, 0, ErrGap}, {6, 3, 1, 3, 8, nil}}, 1},
		{"gap first", []step{{2, 3, 0, 0, 0, ErrGap}, {1, 1, 0, 1, 1, nil}}, 0},
		{"empty batch", []step{{1, 2, 0, 2, 2, nil}, {9, 0, 0, 0, 2, nil}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, t.TempDir(), Options{})
			var last uint64
			for i, st := range tc.steps {
				before := snapshot(t, s)
				stored, gotLast, err := s.Receive("ssa", st.first, records("ssa", st.first, st.n, 120), at.Add(time.Duration(i)*time.Second), st.violations)
				if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
					t.Fatalf("step %d: %v, want %v", i, err, st.wantErr)
				}
				if err != nil {
					if !maps.Equal(before, snapshot(t, s)) {
						t.Fatalf("step %d: a refused batch changed the store", i)
					}
					continue
				}
				if stored != st.wantStored || gotLast != st.wantLast {
					t.Fatalf("step %d: stored %d last %d, want %d %d", i, stored, gotLast, st.wantStored, st.wantLast)
				}
				last = gotLast
			}
			want := InboxState{Last: last, Stored: last, Violations: tc.wantViolations}
			if got := inbox(t, s, "ssa"); got != want {
				t.Fatalf("%+v, want %+v", got, want)
			}
			checkRecords(t, s, "ssa", 1, last, 120)
		})
	}
}

// checkRecords checks that the inbox holds exactly records from..to of the test content.
func checkRecords(t *testing.T, s *Store, ssaID string, from, to uint64, size int) []StoredRecord {
	t.Helper()
	got, err := s.Records(ssaID, 0, 1<<30, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	var gotSeqs []uint64
	for _, r := range got {
		gotSeqs = append(gotSeqs, r.Seq)
		if want := record(ssaID, r.Seq, size); !bytes.Equal(r.Data, want) {
			t.Fatalf("record %d is %q, want %q", r.Seq, r.Data, want)
		}
	}
	if want := span(from, to); !slices.Equal(gotSeqs, want) {
		t.Fatalf("records %v, want %d..%d", gotSeqs, from, to)
	}
	return got
}

func TestRecords(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	// Four batches of five records received a minute apart, all of 60 bytes but record 11,
	// the first of the third batch, of 1000.
	recs := records("ssa", 1, 20, 60)
	recs[10] = record("ssa", 11, 1000)
	for i := range 4 {
		first := uint64(i*5 + 1)
		if _, _, err := s.Receive("ssa", first, recs[first-1:first+4], t0.Add(time.Duration(i)*time.Minute), 0); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name          string
		after         uint64
		max, maxBytes int
		want          []uint64
	}{
		{"all", 0, 100, 1 << 20, span(1, 20)},
		{"max", 0, 3, 1 << 20, span(1, 3)},
		{"after", 7, 4, 1 << 20, span(8, 11)},
		{"the last", 19, 10, 1 << 20, []uint64{20}},
		{"nothing after", 20, 10, 1 << 20, nil},
		{"after the largest sequence number", math.MaxUint64, 10, 1 << 20, nil},
		{"max 0", 0, 0, 1 << 20, nil},
		{"maxBytes", 0, 100, 150, span(1, 2)},
		{"maxBytes exact", 0, 100, 180, span(1, 3)},
		{"maxBytes stops before a large record", 7, 100, 1000, span(8, 10)},
		{"at least one, over maxBytes", 10, 100, 50, []uint64{11}},
		{"at least one, maxBytes 0", 0, 100, 0, []uint64{1}},
		{"unknown SSA", 0, 10, 1 << 20, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ssa := "ssa"
			if tc.name == "unknown SSA" {
				ssa = "other"
			}
			got, err := s.Records(ssa, tc.after, tc.max, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			var gotSeqs []uint64
			for _, r := range got {
				gotSeqs = append(gotSeqs, r.Seq)
				if want := t0.Add(time.Duration((r.Seq-1)/5) * time.Minute); !r.ReceivedAt.Equal(want) {
					t.Errorf("record %d received at %s, want %s", r.Seq, r.ReceivedAt, want)
				}
				if !bytes.Equal(r.Data, recs[r.Seq-1]) {
					t.Errorf("record %d differs", r.Seq)
				}
				if cap(r.Data) != len(r.Data) {
					t.Errorf("record %d: capacity %d beyond its length %d", r.Seq, cap(r.Data), len(r.Data))
				}
			}
			if !slices.Equal(gotSeqs, tc.want) {
				t.Fatalf("records %v, want %v", gotSeqs, tc.want)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	// Batches of 10 records received a minute apart: 1..10 at t0, 11..20 at t0+1m, …
	const batches = 6
	for i := range batches {
		first := uint64(i*10 + 1)
		if _, _, err := s.Receive("ssa", first, records("ssa", first, 10, 70), t0.Add(time.Duration(i)*time.Minute), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Receive("keep", 1, records("keep", 1, 10, 70), t0, 0); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		before      time.Time
		wantDeleted int
		wantFirst   uint64 // first record left
	}{
		{t0, 0, 1},
		{t0.Add(time.Nanosecond), 10, 11},
		{t0.Add(time.Nanosecond), 0, 11},
		{t0.Add(150 * time.Second), 20, 31},
		{t0.Add(-time.Hour), 0, 31},
		{t0.Add(time.Hour), 30, 61},
	}
	for i, st := range steps {
		n, err := s.DeleteRecordsReceivedBefore("ssa", st.before)
		if err != nil {
			t.Fatal(err)
		}
		if n != st.wantDeleted {
			t.Fatalf("step %d: %d deleted, want %d", i, n, st.wantDeleted)
		}
		deleted := st.wantFirst - 1
		want := InboxState{Last: 60, Stored: 60 - deleted, Deleted: deleted}
		if got := inbox(t, s, "ssa"); got != want {
			t.Fatalf("step %d: %+v, want %+v", i, got, want)
		}
		if deleted < 60 {
			checkRecords(t, s, "ssa", st.wantFirst, 60, 70)
		}
		checkIndex(t, s, inboxPrefix("ssa"), deleted, 60)
		if n := keysUnder(t, s, runPrefix("ssa")); n != (60-int(deleted))/10 {
			t.Fatalf("step %d: %d runs stored, want %d", i, n, (60-deleted)/10)
		}
	}
	// Records of a deleted range coming again are duplicates, not new.
	if stored, last, err := s.Receive("ssa", 55, records("ssa", 55, 10, 70), t0.Add(time.Hour), 0); err != nil || stored != 4 || last != 64 {
		t.Fatalf("receive after retention: %d %d %v", stored, last, err)
	}
	checkRecords(t, s, "ssa", 61, 64, 70)
	checkRecords(t, s, "keep", 1, 10, 70)
}

// TestRetentionLong deletes more records than one transaction does.
func TestRetentionLong(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const n = 2*deleteChunk + 500
	for first := uint64(1); first <= n; first += 1000 {
		at := t0
		if first > n-1000 {
			at = t0.Add(time.Hour) // the last 1000 (or fewer) are recent
		}
		if _, _, err := s.Receive("ssa", first, records("ssa", first, min(1000, n-int(first)+1), 40), at, 0); err != nil {
			t.Fatal(err)
		}
	}
	recent := n % 1000
	if recent == 0 {
		recent = 1000
	}
	deleted, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if deleted != n-recent {
		t.Fatalf("%d deleted, want %d", deleted, n-recent)
	}
	checkRecords(t, s, "ssa", uint64(n-recent+1), n, 40)
}

func TestEvidence(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ev := []Evidence{
		{SSAID: "ssa", First: 101, Batch: []byte("batch 101"), Findings: []byte(`[{"seq":102}]`), ReceivedAt: t0.Add(time.Minute)},
		{SSAID: "ssa", First: 1, Batch: bytes.Repeat([]byte{0xA5}, 200<<10), Findings: []byte(`[]`), ReceivedAt: t0},
		{SSAID: "ssa", First: 101, Batch: []byte("batch 101 again"), ReceivedAt: t0.Add(time.Hour)},
		{SSAID: "ssa-2", First: 7, Batch: []byte("other"), Findings: []byte("x"), ReceivedAt: t0},
	}
	for _, e := range ev {
		if err := s.PutEvidence(e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Evidence("ssa")
	if err != nil {
		t.Fatal(err)
	}
	want := []Evidence{ev[1], ev[0], ev[2]}
	if len(got) != len(want) {
		t.Fatalf("%d evidence, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.SSAID != w.SSAID || g.First != w.First || !bytes.Equal(g.Batch, w.Batch) || !bytes.Equal(g.Findings, w.Findings) || !g.ReceivedAt.Equal(w.ReceivedAt) {
			t.Fatalf("evidence %d: %s %d at %s, want %s %d at %s", i, g.SSAID, g.First, g.ReceivedAt, w.SSAID, w.First, w.ReceivedAt)
		}
	}
	if got, err := s.Evidence("none"); err != nil || len(got) != 0 {
		t.Fatalf("evidence of an unknown SSA: %v %v", got, err)
	}
	if err := s.PutEvidence(Evidence{SSAID: ""}); err == nil {
		t.Fatal("evidence without an SSA ID was stored")
	}

	// An SSA keeps its first MaxEvidence batches; a kept one can still be replaced.
	for i := range uint64(MaxEvidence + 3) {
		err := s.PutEvidence(Evidence{SSAID: "full", First: i + 1, Batch: []byte("b"), ReceivedAt: t0})
		if i < MaxEvidence && err != nil || i >= MaxEvidence && !errors.Is(err, ErrEvidenceFull) {
			t.Fatalf("evidence %d of %d: %v", i+1, MaxEvidence, err)
		}
	}
	if err := s.PutEvidence(Evidence{SSAID: "full", First: 1, Batch: []byte("again"), ReceivedAt: t0}); err != nil {
		t.Fatalf("replacing kept evidence: %v", err)
	}
	if got, err := s.Evidence("full"); err != nil || len(got) != MaxEvidence || string(got[0].Batch) != "again" {
		t.Fatalf("%d evidence kept, first %q, %v", len(got), got[0].Batch, err)
	}

	// And at most MaxEvidenceBytes of it.
	half := make([]byte, MaxEvidenceBytes/2-64)
	for i, want := range []error{nil, nil, ErrEvidenceFull} {
		err := s.PutEvidence(Evidence{SSAID: "large", First: uint64(i + 1), Batch: half, ReceivedAt: t0})
		if !errors.Is(err, want) || want == nil && err != nil {
			t.Fatalf("batch %d of %d bytes: %v, want %v", i+1, len(half), err, want)
		}
	}
}

// TestSSAIDsApart checks that SSA IDs that are prefixes of one another keep their records
// apart.
func TestSSAIDsApart(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	ids := []string{"a", "a/", "a/b", "ab", "a\x00", strings.Repeat("z", maxIDLen)}
	for i, id := range ids {
		if _, err := s.Enqueue(id, records(id, 1, i+1, 30), 0, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Receive(id, 1, records(id, 1, i+1, 30), t0, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.PutEvidence(Evidence{SSAID: id, First: 1, Batch: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		checkPending(t, s, id, 1, uint64(i+1), 30)
		checkRecords(t, s, id, 1, uint64(i+1), 30)
		ev, err := s.Evidence(id)
		if err != nil || len(ev) != 1 || string(ev[0].Batch) != id {
			t.Fatalf("evidence of %q: %v %v", id, ev, err)
		}
	}
	if _, err := s.Enqueue(strings.Repeat("z", maxIDLen+1), nil, 0, 0); err == nil {
		t.Fatal("an SSA ID over the limit was accepted")
	}
	if _, _, err := s.Receive("", 1, records("", 1, 1, 10), t0, 0); err == nil {
		t.Fatal("an empty SSA ID was accepted")
	}
}

func TestExchangeRefusals(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	big := make([]byte, MaxRecordSize+1)
	calls := map[string]func() error{
		"enqueue oversized record": func() error { _, err := s.Enqueue("ssa", [][]byte{big}, 1, 0); return err },
		"receive oversized record": func() error { _, _, err := s.Receive("ssa", 1, [][]byte{big}, t0, 0); return err },
		"receive from 0":           func() error { _, _, err := s.Receive("ssa", 0, records("ssa", 0, 1, 10), t0, 0); return err },
		"evidence oversized": func() error {
			return s.PutEvidence(Evidence{SSAID: "ssa", Batch: make([]byte, protocol.MaxBatchSize+1)})
		},
	}
	before := snapshot(t, s)
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if !maps.Equal(before, snapshot(t, s)) {
		t.Fatal("a refused call changed the store")
	}
}

// TestExchangeRestart closes and reopens the store between the steps of both queues.
func TestExchangeRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *Store {
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	if _, err := s.Enqueue("out", records("out", 1, 300, 150), 400, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack("out", 120); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Receive("in", 1, records("in", 1, 250, 150), t0, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRecordsReceivedBefore("in", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEvidence(Evidence{SSAID: "in", First: 1, Batch: []byte("b"), Findings: []byte("f"), ReceivedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open()
	if got, want := outbox(t, s, "out"), (OutboxState{Ingested: 400, Refined: 300, Dropped: 100, Acked: 120, Sent: 120}); got != want {
		t.Fatalf("outbox after reopening: %+v, want %+v", got, want)
	}
	checkPending(t, s, "out", 121, 300, 150)
	if got, want := inbox(t, s, "in"), (InboxState{Last: 250, Stored: 250, Violations: 3}); got != want {
		t.Fatalf("inbox after reopening: %+v, want %+v", got, want)
	}
	checkRecords(t, s, "in", 1, 250, 150)
	// Both go on where they were.
	if last, err := s.Enqueue("out", records("out", 301, 1, 150), 1, 0); err != nil || last != 301 {
		t.Fatalf("enqueue after reopening: %d %v", last, err)
	}
	if stored, last, err := s.Receive("in", 240, records("in", 240, 20, 150), t0.Add(time.Hour), 0); err != nil || stored != 9 || last != 259 {
		t.Fatalf("receive after reopening: %d %d %v", stored, last, err)
	}
	if n, err := s.DeleteRecordsReceivedBefore("in", t0.Add(time.Minute)); err != nil || n != 250 {
		t.Fatalf("retention after reopening: %d %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open()
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	checkPending(t, s, "out", 121, 301, 150)
	checkRecords(t, s, "in", 251, 259, 150)
	if ev, err := s.Evidence("in"); err != nil || len(ev) != 1 {
		t.Fatalf("evidence after reopening: %v %v", ev, err)
	}
}

func TestExchangeClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Enqueue":     func() error { _, err := s.Enqueue("ssa", records("ssa", 1, 1, 10), 1, 0); return err },
		"Pending":     func() error { _, err := s.Pending("ssa", 0, 1, 1); return err },
		"MarkSent":    func() error { return s.MarkSent("ssa", 1) },
		"Ack":         func() error { return s.Ack("ssa", 1) },
		"OutboxState": func() error { _, err := s.OutboxState("ssa"); return err },
		"DropOutbox":  func() error { return s.DropOutbox("ssa") },
		"Receive":     func() error { _, _, err := s.Receive("ssa", 1, records("ssa", 1, 1, 10), t0, 0); return err },
		"InboxState":  func() error { _, err := s.InboxState("ssa"); return err },
		"Records":     func() error { _, err := s.Records("ssa", 0, 1, 1); return err },
		"Retention":   func() error { _, err := s.DeleteRecordsReceivedBefore("ssa", t0); return err },
		"PutEvidence": func() error { return s.PutEvidence(Evidence{SSAID: "ssa"}) },
		"Evidence":    func() error { _, err := s.Evidence("ssa"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestCorruptQueueState alters the state records behind the store's back.
func TestCorruptQueueState(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	if _, err := s.Enqueue("ssa", records("ssa", 1, 5, 10), 5, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Receive("ssa", 1, records("ssa", 1, 5, 10), t0, 0); err != nil {
		t.Fatal(err)
	}
	bad := func(v any) []byte {
		b, err := protocol.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name       string
		key, value []byte
		call       func() error
	}{
		{"outbox garbage", outboxStateKey("ssa"), []byte{0xff}, func() error { _, err := s.OutboxState("ssa"); return err }},
		{"outbox acked beyond", outboxStateKey("ssa"), bad(&outboxRecord{Refined: 5, Acked: 6}), func() error { _, err := s.Enqueue("ssa", nil, 1, 0); return err }},
		{"outbox record missing", outboxStateKey("ssa"), bad(&outboxRecord{Refined: 6}), func() error { _, err := s.Pending("ssa", 0, 10, 1<<20); return err }},
		{"inbox garbage", inboxStateKey("ssa"), []byte("x"), func() error { _, _, err := s.Receive("ssa", 6, records("ssa", 6, 1, 10), t0, 0); return err }},
		{"inbox head beyond", inboxStateKey("ssa"), bad(&inboxRecord{Last: 5, Head: 6}), func() error { _, err := s.InboxState("ssa"); return err }},
		{"inbox record missing", inboxStateKey("ssa"), bad(&inboxRecord{Last: 6}), func() error { _, err := s.Records("ssa", 0, 10, 1<<20); return err }},
		{"inbox run missing", seqKey(runPrefix("ssa"), 5), nil, func() error { _, err := s.DeleteRecordsReceivedBefore("ssa", t0.Add(time.Hour)); return err }},
		{"inbox run short", seqKey(runPrefix("ssa"), 5), []byte{1, 2}, func() error { _, err := s.Records("ssa", 0, 10, 1<<20); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setRaw(t, s, tc.key, tc.value)
			if err := tc.call(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
		})
	}
}

// TestConcurrentEnqueue enqueues to one SSA from several goroutines, and acknowledges and
// receives at the same time: sequence numbers stay unique and dense, and the writes share
// transactions.
func TestConcurrentEnqueue(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const goroutines, batches, perBatch = 6, 25, 40
	var wg sync.WaitGroup
	errs := make(chan error, goroutines+2)
	lasts := make([][]uint64, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for b := range batches {
				recs := make([][]byte, perBatch)
				for i := range recs {
					recs[i] = fmt.Appendf(nil, "g%d-b%d-r%d", g, b, i)
				}
				last, err := s.Enqueue("ssa", recs, perBatch, 0)
				if err != nil {
					errs <- err
					return
				}
				lasts[g] = append(lasts[g], last)
			}
		})
	}
	wg.Go(func() { // the requester's side, in the same store
		for b := range batches {
			first := uint64(b*perBatch + 1)
			if _, _, err := s.Receive("in", first, records("in", first, perBatch, 50), t0, 0); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() { // acks follow the queue
		for range batches {
			st, err := s.OutboxState("ssa")
			if err == nil {
				err = s.Ack("ssa", st.Refined/2)
			}
			if err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = goroutines * batches * perBatch
	st := outbox(t, s, "ssa")
	if st.Refined != total || st.Ingested != total {
		t.Fatalf("%+v, want %d refined and ingested", st, total)
	}
	if err := s.Ack("ssa", 0); err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending("ssa", 0, total, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if want := span(st.Acked+1, total); !slices.Equal(seqs(pending), want) {
		t.Fatalf("pending %d records from %d, want %d..%d", len(pending), pending[0].Seq, st.Acked+1, total)
	}
	// Each batch is consecutive and ends at the last seq its Enqueue returned; batches of one
	// goroutine come in order.
	ends := map[uint64]string{}
	for g, ls := range lasts {
		if !slices.IsSorted(ls) {
			t.Fatalf("goroutine %d got lasts out of order: %v", g, ls)
		}
		for b, last := range ls {
			ends[last] = fmt.Sprintf("g%d-b%d-", g, b)
		}
	}
	for _, r := range pending {
		end := r.Seq + perBatch - 1 - (r.Seq-1)%perBatch
		want := fmt.Sprintf("%sr%d", ends[end], (r.Seq-1)%perBatch)
		if string(r.Data) != want {
			t.Fatalf("record %d is %q, want %q", r.Seq, r.Data, want)
		}
	}
	checkRecords(t, s, "in", 1, batches*perBatch, 50)
	writes := goroutines*batches + 2*batches
	if g := s.groups.Load(); g >= int64(writes) {
		t.Errorf("%d writes in %d transactions: none shared an fsync", writes, g)
	} else {
		t.Logf("%d writes in %d transactions", writes, g)
	}
}

// TestSharedFsync checks that Enqueue, Receive, Commit and PutEvidence calls made at once
// share a transaction.
func TestSharedFsync(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	f := approvedFixture(t)
	// Hold the committer with a request that waits, so that the next ones gather.
	hold := &holdRequest{waiter: newWaiter(), release: make(chan struct{}), applied: make(chan struct{})}
	go func() {
		if err := s.commit(hold); err != nil {
			t.Error(err)
		}
	}()
	<-hold.applied
	groups := s.groups.Load()
	var wg sync.WaitGroup
	calls := []func() error{
		func() error { _, err := s.Enqueue("out", records("out", 1, 100, 300), 100, 0); return err },
		func() error { _, _, err := s.Receive("in", 1, records("in", 1, 100, 300), t0, 0); return err },
		func() error { return s.Commit(&Negotiation{ID: testNID(1), SSAID: "ssa-1"}, f.msgs, nil) },
		func() error { return s.PutEvidence(Evidence{SSAID: "in", First: 1, Batch: []byte("b")}) },
	}
	for _, call := range calls {
		wg.Go(func() {
			if err := call(); err != nil {
				t.Error(err)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); s.waiting.Load() < int32(len(calls)); {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls waiting for the committer, want %d", s.waiting.Load(), len(calls))
		}
		time.Sleep(time.Millisecond)
	}
	close(hold.release)
	wg.Wait()
	// The held request's group, then the rest: in one transaction, unless one of the calls
	// was still on its way to the committer when it took the others.
	if g := s.groups.Load() - groups - 1; g >= int64(len(calls)) {
		t.Fatalf("%d calls written in %d transactions: none shared an fsync", len(calls), g)
	} else {
		t.Logf("%d calls written in %d transactions", len(calls), g)
	}
	checkPending(t, s, "out", 1, 100, 300)
	checkRecords(t, s, "in", 1, 100, 300)
}

// holdRequest blocks the committer in apply until released.
type holdRequest struct {
	waiter
	release, applied chan struct{}
}

func (*holdRequest) cost() (int, int) { return 0, 0 }

func (r *holdRequest) apply(*badger.Txn) (refused, failed error) {
	close(r.applied)
	<-r.release
	return nil, nil
}

// TestLargeBatches writes batches of more records than a group holds entries: each goes in
// one transaction (an index entry per block of records), whole.
func TestLargeBatches(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	const n = maxGroupEntries*2 + 17
	small := records("ssa", 1, n, 100)
	if _, err := s.Enqueue("ssa", small[:1], 1, 0); err != nil {
		t.Fatal(err)
	}
	groups := s.groups.Load()
	if last, err := s.Enqueue("ssa", small[1:], n-1, 0); err != nil || last != n {
		t.Fatalf("large enqueue: %d %v", last, err)
	}
	if g := s.groups.Load() - groups; g != 1 {
		t.Errorf("large enqueue in %d transactions, want 1", g)
	}
	checkPending(t, s, "ssa", 1, n, 100)
	if got := outbox(t, s, "ssa"); got.Ingested != n || got.Refined != n {
		t.Fatalf("%+v", got)
	}
	checkIndex(t, s, outboxPrefix("ssa"), 0, n)

	if _, _, err := s.Receive("ssa", 1, small[:5], t0, 0); err != nil {
		t.Fatal(err)
	}
	stored, last, err := s.Receive("ssa", 3, small[2:], t0, 2) // overlaps the first batch
	if err != nil || stored != n-5 || last != n {
		t.Fatalf("large receive: %d %d %v", stored, last, err)
	}
	checkRecords(t, s, "ssa", 1, n, 100)
	if got := inbox(t, s, "ssa"); got.Violations != 2 {
		t.Fatalf("%+v", got)
	}
	checkIndex(t, s, inboxPrefix("ssa"), 0, n)
	if _, _, err := s.Receive("ssa", n+2, small, t0, 0); !errors.Is(err, ErrGap) {
		t.Fatalf("large batch after a gap: %v", err)
	}
}

// TestValueLogGC acknowledges and expires 59 MB of records of valueThreshold bytes, which
// Badger would put in its value log: they go to the segment files instead, so the value log
// stays small, and the segment files give the disk of the records deleted back. The value
// log's garbage collector runs beside writes (Store.gcMu), and what is left reads back.
// Badger is tuned down (8 MiB value log files, a compaction for every memtable flushed), as
// it was when the records went to the value log.
func TestValueLogGC(t *testing.T) {
	dir := t.TempDir()
	tune := func(o badger.Options) badger.Options {
		return o.WithValueLogFileSize(8 << 20).WithNumLevelZeroTables(1).WithNumLevelZeroTablesStall(2)
	}
	s, err := open(dir, Options{}, false, tune) // no fsync: this is about the value log
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	const per = 20                               // records a batch: 1.3 MB
	recs := records("x", 1, per, valueThreshold) // the same batch each time
	const batches, kept = 45, 4                  // 59 MB in all (each queue), 5.2 MB kept
	for b := range batches {
		first := uint64(b*per + 1)
		if _, err := s.Enqueue("out", recs, per, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Receive("in", first, recs, t0.Add(time.Duration(b)*time.Second), 0); err != nil {
			t.Fatal(err)
		}
		if b >= kept {
			if err := s.Ack("out", uint64(b-kept+1)*per); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.DeleteRecordsReceivedBefore("in", t0.Add((batches-kept)*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := vlogSize(t, dir); n > 1<<20 {
		t.Errorf("value log of %d bytes after %d MB of records", n, 2*batches*per*valueThreshold>>20)
	}
	// The records kept are alike: they compress into much less than a block each.
	if alloc, _ := recordsDisk(t, dir); alloc > 2*kept*per*valueThreshold/10 {
		t.Errorf("the segment files take %d bytes, for %d records kept", alloc, 2*kept*per)
	}
	if s, err = open(dir, Options{}, false, tune); err != nil {
		t.Fatal(err)
	}
	// Records keep coming while the garbage is collected, as they do in an agent: Badger's
	// GC must not run beside a write (see Store.gcMu; -race saw it read the memtable's
	// version while a write set it).
	stopWriting, written := make(chan struct{}), make(chan error, 1)
	go func() {
		small := records("y", 1, 10, 100)
		for {
			select {
			case <-stopWriting:
				written <- nil
				return
			default:
			}
			if _, err := s.Enqueue("busy", small, 10, 0); err != nil {
				written <- err
				return
			}
		}
	}()
	for range 10 {
		if !s.gcOnce() {
			break
		}
	}
	close(stopWriting)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	const first = (batches-kept)*per + 1
	pending, err := s.Pending("out", 0, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != kept*per || pending[0].Seq != first {
		t.Fatalf("%d records pending", len(pending))
	}
	for _, r := range pending {
		if !bytes.Equal(r.Data, recs[(r.Seq-1)%per]) {
			t.Fatalf("record %d differs", r.Seq)
		}
	}
	got, err := s.Records("in", 0, 1<<30, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != kept*per || got[0].Seq != first {
		t.Fatalf("%d records stored", len(got))
	}
	for _, r := range got {
		if !bytes.Equal(r.Data, recs[(r.Seq-1)%per]) {
			t.Fatalf("record %d differs", r.Seq)
		}
	}
}

// vlogSize returns the size of the value log files in dir.
func vlogSize(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// bulkRequest sets keys to values.
type bulkRequest struct {
	waiter
	keys, values [][]byte
}

func (r *bulkRequest) cost() (int, int) {
	size := 0
	for i, k := range r.keys {
		size += entrySize(len(k), len(r.values[i]))
	}
	return size, len(r.keys)
}

func (r *bulkRequest) apply(txn *badger.Txn) (refused, failed error) {
	for i, k := range r.keys {
		if err := txn.Set(k, r.values[i]); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// TestGroupBounds writes groups as large as the committer makes them, in entries and in
// bytes, with the values that cost a Badger batch the most (the largest kept in the tree):
// Badger takes them in one transaction.
func TestGroupBounds(t *testing.T) {
	for _, p := range []Profile{ProfileDefault, ProfileSensor} {
		t.Run(string(p), func(t *testing.T) { testGroupBounds(t, p) })
	}
}

func testGroupBounds(t *testing.T, p Profile) {
	s := openTest(t, t.TempDir(), Options{Profile: p})
	bulk := func(prefix string, n, valueSize int) *bulkRequest {
		r := &bulkRequest{waiter: newWaiter()}
		for i := range n {
			r.keys = append(r.keys, fmt.Appendf(nil, "z/%s/%08d", prefix, i)) // a prefix of no data
			r.values = append(r.values, bytes.Repeat([]byte{1}, valueSize))
		}
		return r
	}
	tests := []struct {
		name  string
		group []request
	}{
		{"entries", []request{bulk("a", s.groupEntries/2, 0), bulk("b", s.groupEntries/2, 0)}},
		{"bytes", []request{bulk("c", s.groupBytes/entrySize(13, valueThreshold-1), valueThreshold-1)}},
		{"value log", []request{bulk("d", s.groupEntries, 4*valueThreshold)}}, // pointers in the tree
		{"small values", []request{bulk("e", s.groupBytes/entrySize(13, 700), 700)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			size, entries := 0, 0
			for _, r := range tc.group {
				b, n := r.cost()
				size, entries = size+b, entries+n
			}
			if size > s.groupBytes || entries > s.groupEntries {
				t.Fatalf("group of %d bytes in %d entries is over the bounds", size, entries)
			}
			t.Logf("%d bytes in %d entries", size, entries)
			s.writeGroup(tc.group)
			for _, r := range tc.group {
				if err := <-r.reply(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
