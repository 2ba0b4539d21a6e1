package storage

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestBackupUnderLoadRestores takes a backup while records are received, restores it in a new
// directory and checks the copy: the agreement, and an inbox that is a prefix of the
// original's, record for record, with its counters (a consistent cut).
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
			ssa := f.agreement.ID
			if err := s.Commit(&Negotiation{ID: testNID(1), SSAID: ssa}, f.msgs, f.agreement); err != nil {
				t.Fatal(err)
			}
			const batches, per = 200, 50 // bounded load
			loadErr := make(chan error, 1)
			started := make(chan struct{})
			go func() {
				var err error
				for b := range batches {
					recs := make([][]byte, per)
					for i := range recs {
						recs[i] = fmt.Appendf(nil, `{"b":%d,"i":%d}`, b, i)
					}
					if _, _, err = s.Receive(ssa, uint64(b*per+1), recs, time.Unix(int64(b), 0), 0); err != nil {
						break
					}
					if b == 20 {
						close(started)
					}
				}
				loadErr <- err
			}()
			<-started
			var buf bytes.Buffer
			if err := s.Backup(&buf); err != nil {
				t.Fatal(err)
			}
			if err := <-loadErr; err != nil {
				t.Fatal(err)
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
			if err != nil || len(got) != 1 || got[0].ID != ssa {
				t.Fatalf("restored agreements %v, %v; want %s", got, err, ssa)
			}
			st, err := r.InboxState(ssa)
			if err != nil {
				t.Fatal(err)
			}
			if st.Last < 21*per || st.Last > batches*per || st.Last%per != 0 || st.Stored != st.Last {
				t.Fatalf("restored inbox %+v: want whole batches, at least the 21 received before the backup", st)
			}
			want, err := s.Records(ssa, 0, int(st.Last)+10, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			have, err := r.Records(ssa, 0, int(st.Last)+10, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			if len(have) != int(st.Last) || !reflect.DeepEqual(have, want[:st.Last]) {
				t.Fatalf("restored %d records, want the first %d of the original's, equal", len(have), st.Last)
			}
			t.Logf("backup of %d bytes holds %d of %d records", buf.Len(), st.Last, batches*per)

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

// hugeList is a well-framed backup (header, chunks, checksum) whose Badger stream announces
// a list of 1<<40 bytes, which Load would allocate.
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
	if err := cw.end(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
