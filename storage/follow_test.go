package storage

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestEnqueueAllWithPosition queues a chunk for three SSAs with a followed file's position,
// of more records than a group holds entries (one transaction all the same), and then a
// second such chunk whose transaction fails after its records were written to the segment
// files, as a crash before its commit would leave it: after the next Open neither its
// records nor its position are there, so the file is read again from the end of the first
// chunk, exactly once.
func TestEnqueueAllWithPosition(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	ssas := []string{"ssa-a", "ssa-b", "ssa-c"}
	const n = maxGroupEntries/2 + 10 // three of them are more than a transaction
	chunk := func(first uint64) []Batch {
		var bs []Batch
		for _, id := range ssas {
			bs = append(bs, Batch{SSAID: id, Records: records(id, first, n, 50), Ingested: n + 2, Dropped: 2})
		}
		return bs
	}
	pos1 := FilePos{Path: "/var/log/suricata/eve.json", Inode: 42, Offset: 123456}

	if got, err := s.FilePos(pos1.Path); !errors.Is(err, ErrNotFound) || got != (FilePos{Path: pos1.Path}) {
		t.Fatalf("position of a file never read: %+v %v", got, err)
	}
	groups := s.groups.Load()
	last, err := s.EnqueueAll(chunk(1), &pos1)
	if err != nil {
		t.Fatal(err)
	}
	if g := s.groups.Load() - groups; g != 1 {
		t.Fatalf("a chunk of %d records in %d transactions, want 1", 3*n, g)
	}
	for i, id := range ssas {
		if last[i] != n {
			t.Errorf("%s: last %d, want %d", id, last[i], n)
		}
	}

	// A second chunk whose transaction fails at its commit (the committer is idle: the test
	// may write a group itself).
	pos2 := FilePos{Path: pos1.Path, Inode: 42, Offset: 999999, InLongLine: true}
	r, err := newEnqueueRequest(s, chunk(n+1), &pos2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writeTxn([]request{r, &failRequest{s: s, conflict: outboxStateKey(ssas[0])}}); err == nil {
		t.Fatal("the transaction meant to fail committed")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	if got, err := s.FilePos(pos1.Path); err != nil || got != pos1 {
		t.Fatalf("position after a crash in a chunk: %+v %v, want %+v", got, err, pos1)
	}
	for _, id := range ssas {
		checkPending(t, s, id, 1, n, 50)
		if got := outbox(t, s, id); got.Ingested != n+2 || got.Dropped != 2 || got.Refined != n {
			t.Errorf("%s: %+v", id, got)
		}
		checkIndex(t, s, outboxPrefix(id), 0, n)
	}
	checkSegmentFiles(t, s)

	// The chunk read again goes in whole, with its position.
	if _, err := s.EnqueueAll(chunk(n+1), &pos2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.FilePos(pos1.Path); err != nil || got != pos2 {
		t.Fatalf("position: %+v %v, want %+v", got, err, pos2)
	}
	for _, id := range ssas {
		checkPending(t, s, id, 1, 2*n, 50)
	}

	// A position alone (a rotation, a skipped long line).
	pos3 := FilePos{Path: pos1.Path, Inode: 43}
	if last, err := s.EnqueueAll(nil, &pos3); err != nil || len(last) != 0 {
		t.Fatalf("position alone: %v %v", last, err)
	}
	if got, err := s.FilePos(pos1.Path); err != nil || got != pos3 {
		t.Fatalf("position: %+v %v, want %+v", got, err, pos3)
	}
}

// TestEnqueueAllRefused: what EnqueueAll refuses, with a reason, writing nothing.
func TestEnqueueAllRefused(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	one := records("x", 1, 1, 10)
	tests := []struct {
		name    string
		batches []Batch
		pos     *FilePos
		want    string
	}{
		{"an SSA twice", []Batch{{SSAID: "x", Records: one}, {SSAID: "x", Records: one}}, nil, "named twice"},
		{"no path", []Batch{{SSAID: "x", Records: one}}, &FilePos{Offset: 1}, "path of 0 bytes"},
		{"a path too long", nil, &FilePos{Path: "/" + strings.Repeat("a", maxPathLen)}, fmt.Sprintf("want 1 to %d", maxPathLen)},
		{"a negative offset", nil, &FilePos{Path: "/f", Offset: -1}, "negative offset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.EnqueueAll(tc.batches, tc.pos); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one that says %q", err, tc.want)
			}
			if got := outbox(t, s, "x"); got.Refined != 0 {
				t.Fatalf("written: %+v", got)
			}
		})
	}
}
