package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// backupRecord is record seq of the queue q in the tests: its label, then size bytes in all
// that do not compress, so that a record's bytes show in a backup unless they are sealed.
func backupRecord(q string, seq uint64, size int) []byte {
	b := fmt.Appendf(nil, "%s %08d ", q, seq)
	r := rand.New(rand.NewPCG(seq, uint64(len(q))))
	for len(b) < size {
		b = binary.LittleEndian.AppendUint64(b, r.Uint64())
	}
	return b[:size]
}

// TestBackupUnderLoadRestores takes a backup while records are enqueued and acknowledged in
// one queue, received and deleted by retention in another, restores it in a new directory
// and checks the copy: the agreement, and queues that hold what the original held at one
// moment, record for record, with their counters (a consistent cut). The backup of an
// encrypted store holds none of the records' bytes; that of a store in clear does.
func TestBackupUnderLoadRestores(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, 32)} {
		t.Run(fmt.Sprintf("key%d", len(key)), func(t *testing.T) {
			opts := Options{EncryptionKey: key}
			s, err := Open(t.TempDir(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			f := approvedFixture(t)
			in := f.agreement.ID
			if err := s.Commit(&Negotiation{ID: testNID(1), SSAID: in}, f.msgs, f.agreement); err != nil {
				t.Fatal(err)
			}
			const (
				out                       = "ssa-out"
				batches, per, size        = 200, 50, 600 // bounded load: 6 MB a queue
				kept                      = 10           // batches not acknowledged or deleted yet
				beforeBackup       uint64 = 21 * per
			)
			batch := func(q string, b int) [][]byte {
				recs := make([][]byte, per)
				for i := range recs {
					recs[i] = backupRecord(q, uint64(b*per+i+1), size)
				}
				return recs
			}
			loadErr := make(chan error, 2)
			started := make(chan struct{}, 2)
			load := func(step func(b int) error) {
				signalled := false
				var err error
				for b := 0; b < batches && err == nil; b++ {
					if err = step(b); b == 20 {
						started <- struct{}{}
						signalled = true
					}
				}
				if !signalled {
					started <- struct{}{}
				}
				loadErr <- err
			}
			go load(func(b int) error { // the provider
				if _, err := s.Enqueue(out, batch("out", b), per, 0); err != nil || b < kept {
					return err
				}
				return s.Ack(out, uint64((b-kept)*per))
			})
			go load(func(b int) error { // the requester
				if _, _, err := s.Receive(in, uint64(b*per+1), batch("in", b), time.Unix(int64(b), 0), 0); err != nil {
					return err
				}
				_, err := s.DeleteRecordsReceivedBefore(in, time.Unix(int64(b-kept+1), 0))
				return err
			})
			<-started
			<-started
			var buf bytes.Buffer
			if err := s.Backup(&buf); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := <-loadErr; err != nil {
					t.Fatal(err)
				}
			}

			dir := filepath.Join(t.TempDir(), "data")
			if err := Restore(dir, bytes.NewReader(buf.Bytes()), opts); err != nil {
				t.Fatal(err)
			}
			r, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := r.Agreements()
			if err != nil || len(got) != 1 || got[0].ID != in {
				t.Fatalf("restored agreements %v, %v; want %s", got, err, in)
			}

			ost, err := r.OutboxState(out)
			if err != nil {
				t.Fatal(err)
			}
			if ost.Refined < beforeBackup || ost.Refined > batches*per || ost.Refined%per != 0 || ost.Ingested != ost.Refined ||
				ost.Acked%per != 0 || ost.Acked+kept*per > ost.Refined {
				t.Fatalf("restored outbox %+v: want whole batches, at least the 21 enqueued before the backup, %d not acknowledged", ost, kept)
			}
			pending, err := r.Pending(out, 0, 1<<30, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			var want []QueuedRecord
			for seq := ost.Acked + 1; seq <= ost.Refined; seq++ {
				want = append(want, QueuedRecord{seq, backupRecord("out", seq, size)})
			}
			if !reflect.DeepEqual(pending, want) {
				t.Fatalf("restored %d pending records, want the %d records %d to %d, equal", len(pending), len(want), ost.Acked+1, ost.Refined)
			}

			ist, err := r.InboxState(in)
			if err != nil {
				t.Fatal(err)
			}
			if ist.Last < beforeBackup || ist.Last > batches*per || ist.Last%per != 0 || ist.Stored+ist.Deleted != ist.Last ||
				ist.Deleted%per != 0 || ist.Stored < kept*per {
				t.Fatalf("restored inbox %+v: want whole batches, at least the 21 received before the backup, %d not deleted", ist, kept)
			}
			recs, err := r.Records(in, 0, 1<<30, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			var wantIn []StoredRecord
			for seq := ist.Deleted + 1; seq <= ist.Last; seq++ {
				wantIn = append(wantIn, StoredRecord{seq, backupRecord("in", seq, size), time.Unix(int64((seq-1)/per), 0)})
			}
			for i := range recs {
				recs[i].ReceivedAt = recs[i].ReceivedAt.Local()
			}
			if !reflect.DeepEqual(recs, wantIn) {
				t.Fatalf("restored %d inbox records, want the %d records %d to %d, equal", len(recs), len(wantIn), ist.Deleted+1, ist.Last)
			}
			t.Logf("backup of %d bytes holds records %d to %d of %d enqueued, %d to %d of %d received",
				buf.Len(), ost.Acked+1, ost.Refined, batches*per, ist.Deleted+1, ist.Last, batches*per)

			// Of a record, the bytes that do not compress: in the backup when it is in clear.
			for _, rec := range [][]byte{want[0].Data, want[len(want)-1].Data, wantIn[0].Data, wantIn[len(wantIn)-1].Data} {
				if found := bytes.Contains(buf.Bytes(), rec[size/2:]); found != (key == nil) {
					t.Errorf("backup of a store with key %x holds the bytes of record %q: %t", key, rec[:12], found)
				}
			}

			// A backup is restored with the key of its store only.
			other := Options{EncryptionKey: bytes.Repeat([]byte{8}, 32)}
			if key != nil {
				other = Options{}
			}
			for _, o := range []Options{other, {EncryptionKey: bytes.Repeat([]byte{9}, 16)}} {
				dir := filepath.Join(t.TempDir(), "d")
				if err := Restore(dir, bytes.NewReader(buf.Bytes()), o); !errors.Is(err, ErrBackupKey) {
					t.Fatalf("restore of a backup with key %x, with key %x: %v, want ErrBackupKey", key, o.EncryptionKey, err)
				}
			}
		})
	}
}

// TestBackupLeavesDeadRecordsOut: a backup holds the blocks that the index points at, not the
// files and parts of files that acknowledged records leave dead (removed or punched out);
// the restored store reads the records left, and deletes further ones.
func TestBackupLeavesDeadRecordsOut(t *testing.T) {
	s, err := open(t.TempDir(), Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const (
		ssa         = "ssa-out"
		size        = 60 << 10
		n, per, ack = 640, 20, 600 // 37.5 MiB: two files
	)
	for seq := uint64(1); seq <= n; seq += per {
		recs := make([][]byte, per)
		for i := range recs {
			recs[i] = backupRecord(ssa, seq+uint64(i), size)
		}
		if _, err := s.Enqueue(ssa, recs, per, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(ssa, ack); err != nil {
		t.Fatal(err)
	}
	if files, err := os.ReadDir(filepath.Join(s.dir, segmentDir)); err != nil || len(files) != 1 {
		t.Fatalf("the records' directory holds %d files after the acknowledgement, want the last one: %v", len(files), err)
	}
	var buf bytes.Buffer
	if err := s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	if max := (n-ack)*size + 1<<20; buf.Len() > max {
		t.Errorf("backup of %d bytes, want at most %d: the records pending and the rest of the store", buf.Len(), max)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := Restore(dir, bytes.NewReader(buf.Bytes()), Options{}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check := func(from uint64) {
		t.Helper()
		pending, err := r.Pending(ssa, 0, n, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != int(n-from) {
			t.Fatalf("restored store: %d records pending, want %d", len(pending), n-from)
		}
		for i, q := range pending {
			if seq := from + 1 + uint64(i); q.Seq != seq || !bytes.Equal(q.Data, backupRecord(ssa, seq, size)) {
				t.Fatalf("restored store: pending record %d is %d, %q…, want %d", i, q.Seq, q.Data[:12], seq)
			}
		}
	}
	check(ack)
	if err := r.Ack(ssa, ack+per); err != nil {
		t.Fatal(err)
	}
	check(ack + per)
}

// TestRestoreRefuses: what is not a backup, a newer one, a damaged one and a directory that
// holds a store are refused, and leave nothing behind.
func TestRestoreRefuses(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	with := func(i int, b byte) []byte {
		c := bytes.Clone(good)
		c[i] = b
		return c
	}
	full := filepath.Join(t.TempDir(), "full")
	if err := Restore(full, bytes.NewReader(good), Options{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		data []byte
		want error
	}{
		{"not a backup", "", []byte("{\"records\": []}\n"), ErrNotBackup},
		{"empty", "", nil, ErrNotBackup},
		{"newer format", "", with(len(backupMagic), backupFormatVersion+1), ErrBackupNewer},
		{"newer schema", "", with(len(backupMagic)+1, schemaVersion+1), ErrBackupNewer},
		{"unknown key check", "", with(len(backupMagic)+2, 2), ErrNotBackup},
		{"cut short", "", good[:len(good)-10], ErrBackupDamaged},
		{"no end", "", good[:len(good)-36], ErrBackupDamaged},
		{"checksum differs", "", with(len(good)-1, good[len(good)-1]^1), ErrBackupDamaged},
		{"store exists", full, good, ErrStoreExists},
		{"huge list", "", hugeList(t), ErrBackupDamaged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir
			if dir == "" {
				dir = filepath.Join(t.TempDir(), "data")
			}
			err := Restore(dir, bytes.NewReader(tt.data), Options{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Restore: %v, want %v", err, tt.want)
			}
			if tt.dir == "" {
				if entries, _ := os.ReadDir(dir); len(entries) > 0 {
					t.Fatalf("a refused restore left %d files in %s", len(entries), dir)
				}
			}
		})
	}
}

// hugeList is a well-framed backup (header, chunks, no files, checksum) whose Badger stream
// announces a list of 1<<40 bytes, which Load would allocate.
func hugeList(t *testing.T) []byte {
	var buf bytes.Buffer
	cw := &chunkWriter{w: bufio.NewWriter(&buf), sum: sha256.New()}
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], 1<<40)
	if err := cw.header(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cw.Write(l[:]); err != nil {
		t.Fatal(err)
	}
	if err := cw.endChunks(); err != nil {
		t.Fatal(err)
	}
	if _, err := cw.files().Write([]byte{0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := cw.end(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRestoreRefusesDamagedRecords: a backup whose records' files are damaged is refused,
// also when its checksum was made to fit, and leaves nothing behind.
func TestRestoreRefusesDamagedRecords(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := approvedFixture(t)
	in := f.agreement.ID
	if err := s.Commit(&Negotiation{ID: testNID(1), SSAID: in}, f.msgs, f.agreement); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 300; seq += 100 {
		recs := make([][]byte, 100)
		for i := range recs {
			recs[i] = backupRecord("rec", seq+uint64(i), 2000)
		}
		if _, err := s.Enqueue("ssa-out", recs, 100, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Receive(in, seq, recs, time.Unix(1, 0), 0); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := s.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	head, files := splitBackup(t, buf.Bytes())
	if err := Restore(filepath.Join(t.TempDir(), "data"), bytes.NewReader(resum(t, head, files)), Options{}); err != nil {
		t.Fatalf("restore of the backup as it was split and put together again: %v", err)
	}
	set := func(i int, b byte) []byte {
		c := bytes.Clone(files)
		c[i] = b
		return c
	}
	// The first file's first block starts after its header and offset.
	firstBlock := 4 + int(binary.BigEndian.Uint32(files)) + 8 + 4 + 8
	tests := []struct {
		name string
		data []byte
	}{
		{"files cut", head},
		{"files cut in a block", resum(t, head, files[:firstBlock+100])},
		{"no files", resum(t, head, []byte{0, 0, 0, 0})},
		{"block's payload altered", resum(t, head, set(len(files)-100, files[len(files)-100]^1))},
		{"block's header altered", resum(t, head, set(firstBlock+10, files[firstBlock+10]^1))},
		{"not a block", resum(t, head, set(firstBlock, 'x'))},
		{"index prefix not a queue's", resum(t, head, set(4, 'q'))},
		{"file ID 0", resum(t, head, append(append(bytes.Clone(files[:firstBlock-20]), make([]byte, 8)...), files[firstBlock-12:]...))},
		{"a file twice", resum(t, head, append(bytes.Clone(files[:len(files)-4]), files...))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := Restore(dir, bytes.NewReader(tt.data), Options{}); !errors.Is(err, ErrBackupDamaged) {
				t.Fatalf("Restore: %v, want ErrBackupDamaged", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Fatalf("a refused restore left %d files in %s", len(entries), dir)
			}
		})
	}
}

// splitBackup splits a backup of a store in clear into what comes up to the end of Badger's
// stream and the files (without the checksum).
func splitBackup(t *testing.T, b []byte) (head, files []byte) {
	t.Helper()
	i := len(backupMagic) + 3
	for {
		n := int(binary.BigEndian.Uint32(b[i:]))
		i += 4 + n
		if n == 0 {
			return b[:i], b[i : len(b)-sha256.Size]
		}
	}
}

// resum puts a backup of a store in clear together from head (as splitBackup gives it) and
// files, with the checksum that fits.
func resum(t *testing.T, head, files []byte) []byte {
	t.Helper()
	sum := sha256.New()
	sum.Write(head[:len(backupMagic)+3])
	for i := len(backupMagic) + 3; i < len(head); {
		n := int(binary.BigEndian.Uint32(head[i:]))
		sum.Write(head[i+4 : i+4+n])
		i += 4 + n
	}
	sum.Write(files)
	return sum.Sum(append(bytes.Clone(head), files...))
}

// TestRestoreFormat1 restores a backup of format 1 (Badger's stream only), taken of the store
// of schema version 1 in testdata: the restored store holds what the fixture holds.
func TestRestoreFormat1(t *testing.T) {
	db, err := badger.Open(badgerOptions(copyFixture(t), Options{}, false))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	cw := &chunkWriter{w: bufio.NewWriter(&buf), sum: sha256.New()}
	h := append([]byte(backupMagic), 1, 1, 0) // format 1, schema version 1, in clear
	cw.sum.Write(h)
	if _, err := cw.w.Write(h); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Backup(cw, 0); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(cw.endChunks(), cw.end(), db.Close()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := Restore(dir, bytes.NewReader(buf.Bytes()), Options{}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, s)
	checkV1Contents(t, s, readV1Contents(t))
}
