package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Free space. Badger maps its write-ahead logs (.mem) and value log files (.vlog) after
// growing them to their full size without allocating it, and writes into the mapping: on a
// full file system such a write is a SIGBUS, which kills the process (and again when the
// next start replays the logs). So the store never lets Badger near the end of the volume:
// every write is checked against the free space (statfs) before it is handed to Badger, and
// refused with ErrDiskFull when what is left after it would not cover what Badger may still
// write on its own between two of our writes:
//
//   - flushes: each of the NumMemtables memtables (numMemtables*memTableSize) becomes a level 0
//     table no larger than itself, and its write-ahead log is written up to about that size;
//   - value log garbage collection: a file rewritten keeps at most 1-gcDiscardRatio of it
//     (valueLogFileSize*(1-gcDiscardRatio)) until the old one is deleted;
//   - compactions: each writes its new tables before deleting the old ones, and writes no
//     more than it reads, so all of them together write at most the tables there are now
//     (the LSM tree's size on disk, read from Badger at each check).
//
// That is the margin (MinReserve plus the tree), below which nothing is written. Above it, the
// reserve (Options.Reserve, DefaultReserve plus the tree) is kept for the writes that do not
// grow the queues: records are enqueued (provider) or received (requester) only while the
// free space stays above the reserve, so a full disk pauses the record flow while
// negotiations, acknowledgements (which delete records) and the counters go on. The garbage
// collector runs only above the margin. Another program filling the volume past the margin
// is the one thing the checks cannot stop; they make sure this store never does.

// ErrDiskFull means a write was refused because the free space on the store's volume is below
// what it needs; nothing was written. Enqueue and Receive need the reserve, every other write
// the smaller margin. Freeing space lets the writes through again.
var ErrDiskFull = errors.New("storage: not enough free disk space")

// MinReserve is the least free space, besides the LSM tree's size, that Badger may fill on its
// own with these options (see Free space above): the margin below which nothing is written.
const MinReserve = numMemtables*memTableSize + valueLogFileSize*(100-gcDiscardPercent)/100

// DefaultReserve is the default free space, besides the LSM tree's size, below which records
// are no longer enqueued or received: the margin plus room for the writes that go on (the
// negotiations, acknowledgements and counters of a paused agent) while the memtables fill
// once more, plus the memtables once again: what a flush moves from the memtables to the
// tables leaves the free space and joins the tree, which the margin counts, and after a
// flush at the reserve the store must still open (checkOpenSpace). (The exchange records
// are in segment files since schema version 3, and count in the free space only.)
const DefaultReserve = MinReserve + 2*numMemtables*memTableSize

// Space is the free space of the store's volume and what the store keeps of it.
type Space struct {
	Free uint64 `json:"free_bytes"` // free to this process (statfs f_bavail)
	// Reserve and Margin are the free space records and any write need, tree included.
	Reserve uint64 `json:"reserve_bytes"`
	Margin  uint64 `json:"margin_bytes"`
	// Paused says records are refused: the free space is below the reserve, or below what the
	// last records refused needed (the reserve plus their size) and none were taken since.
	Paused bool `json:"paused"`
}

// freeBytes returns the bytes free to this process on the volume holding dir.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("storage: free space of %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Space measures the free space now.
func (s *Store) Space() (Space, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Space{}, ErrClosed
	}
	return s.space()
}

// space is Space for a caller that holds s.mu or is the committer.
func (s *Store) space() (Space, error) {
	free, err := freeBytes(s.dir)
	if err != nil {
		return Space{}, err
	}
	var tree uint64
	for _, t := range s.db.Tables() {
		tree += uint64(t.OnDiskSize)
	}
	sp := Space{Free: free, Reserve: s.reserve + tree, Margin: MinReserve + tree}
	sp.Paused = free < sp.Reserve || free < s.refusedNeed.Load()
	return sp, nil
}

// grower is a request that adds records to a queue: it needs the reserve, not the margin.
type grower interface {
	request
	// recordBytes is the size of the records it writes. Those kept in the tree count in cost
	// too: the bound is loose by that much.
	recordBytes() int
}

func (r *enqueueRequest) recordBytes() int {
	n := 0
	for _, p := range r.parts {
		n += sumLen(p.Records)
	}
	return n
}

func (r *receiveRequest) recordBytes() int { return sumLen(r.records) }

func sumLen(b [][]byte) int {
	n := 0
	for _, x := range b {
		n += len(x)
	}
	return n
}

// needs returns the free space r needs: the margin or the reserve, plus what it writes.
func needs(sp Space, r request) (uint64, bool) {
	b, _ := r.cost()
	if g, ok := r.(grower); ok {
		return sp.Reserve + uint64(b+g.recordBytes()), true
	}
	return sp.Margin + uint64(b), false
}

// admit answers with ErrDiskFull the requests of group that the free space cannot take and
// returns the others. If the free space cannot be read, every request is answered with that
// error: writing blind is what this check exists to prevent.
func (s *Store) admit(group []request) []request {
	sp, err := s.space()
	if err != nil {
		for _, r := range group {
			r.reply() <- err
		}
		return nil
	}
	kept := group[:0]
	for _, r := range group {
		need, grows := needs(sp, r)
		if sp.Free < need {
			if grows {
				s.refusedNeed.Store(need)
			}
			r.reply() <- diskFull(s.dir, sp.Free, need, grows)
			continue
		}
		if grows {
			s.refusedNeed.Store(0)
		}
		kept = append(kept, r)
	}
	return kept
}

// diskFull says how much is missing and what to do.
func diskFull(dir string, free, need uint64, records bool) error {
	what := "records are paused until then (storage-reserve-mib in config.yaml sets the part kept free for the store's own writes)"
	if !records {
		what = fmt.Sprintf("below %d MiB plus the LSM tree nothing is written, or Badger could crash the agent", MinReserve>>20)
	}
	return fmt.Errorf("%w: %d bytes free on the volume of %s, %d needed: free space there; %s",
		ErrDiskFull, free, dir, need, what)
}

// checkOpenSpace refuses to open a store whose volume has less free space than the margin:
// opening replays and flushes the write-ahead logs, which would crash on a full volume.
func checkOpenSpace(dir string) error {
	free, err := freeBytes(dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("storage: read %s: %w", dir, err)
	}
	need := uint64(MinReserve)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".sst") {
			continue
		}
		// A table that cannot be stat'ed is left out of the estimate: badger.Open, next,
		// reports an unreadable directory with a better error than this check could.
		if info, err := e.Info(); err == nil {
			need += uint64(info.Size())
		}
	}
	if free < need {
		return fmt.Errorf("storage: open %s: %w", filepath.Clean(dir), diskFull(dir, free, need, false))
	}
	return nil
}
