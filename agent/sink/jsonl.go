package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ssanet/ssanet/policy/cti"
)

// ErrJSONLConfig means a JSONL sink's configuration is wrong.
var ErrJSONLConfig = errors.New("sink: jsonl config")

// rotatedLayout is the suffix of a rotated file: PATH.20261206T132000.000000000Z, the time
// it was rotated, in UTC.
const rotatedLayout = "20060102T150405.000000000Z"

// DefaultTidy is how often a JSONL sink looks for a file to rotate by age or to delete.
const DefaultTidy = time.Minute

// JSONLConfig configures a JSONL writer.
type JSONLConfig struct {
	Name string // of the sink, for the log
	Path string
	// MaxSize (bytes) and MaxAge rotate the file: it is renamed PATH.TIME (rotatedLayout)
	// before a record would take it past MaxSize, or once its first record was written
	// MaxAge ago (counted from the agent's start for a file found at start). 0: no limit.
	MaxSize int64
	MaxAge  time.Duration
	// Retention returns the retention of an SSA's records (from their receipt) and whether
	// the SSA has one; nil: no record has one. A file is rotated once its oldest record's
	// retention ran out, and a rotated file is deleted once every record in it is past its
	// SSA's retention; a file holding a record without one (or of an SSA not known) is kept.
	Retention func(ssaID string) (time.Duration, bool)
	// Now is the clock (default time.Now); Tidy, how often rotation by age and deletion are
	// checked (default DefaultTidy; negative: only when Tidy is called).
	Now  func() time.Time
	Tidy time.Duration
	Log  *slog.Logger
}

// fileSpan is what a JSONL file holds, for rotation and retention: the first and last time a
// record in it may be deleted, or keep when one of them may never be.
type fileSpan struct {
	records         int
	first, last     time.Time
	keep            bool
	started         time.Time // when its first record was written (current file only)
	unreadableLines int
}

func (s *fileSpan) add(ssaID string, received time.Time, retention func(string) (time.Duration, bool)) {
	s.records++
	if retention == nil {
		s.keep = true
		return
	}
	d, ok := retention(ssaID)
	if !ok || d <= 0 {
		s.keep = true
		return
	}
	exp := received.Add(d)
	if s.first.IsZero() || exp.Before(s.first) {
		s.first = exp
	}
	if exp.After(s.last) {
		s.last = exp
	}
}

// JSONL appends JSON Lines to a file; a regular file is synced (a pipe or a device cannot be),
// rotated and deleted as its JSONLConfig says.
type JSONL struct {
	cfg     JSONLConfig
	mu      sync.Mutex
	f       *os.File
	regular bool
	size    int64
	cur     fileSpan
	rotated map[string]*fileSpan // by path
	stop    chan struct{}
	wg      sync.WaitGroup
}

// OpenJSONL opens (or creates, mode 0600) the file at cfg.Path for appending, reads what the
// file and the rotated files next to it hold, and starts tidying them.
func OpenJSONL(cfg JSONLConfig) (*JSONL, error) {
	if cfg.Path == "" || cfg.MaxSize < 0 || cfg.MaxAge < 0 {
		return nil, fmt.Errorf("%w: want a path, and max-size and max-age of 0 or more", ErrJSONLConfig)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tidy == 0 {
		cfg.Tidy = DefaultTidy
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	j := &JSONL{cfg: cfg, rotated: map[string]*fileSpan{}, stop: make(chan struct{})}
	if err := j.open(); err != nil {
		return nil, err
	}
	if !j.regular {
		if cfg.MaxSize > 0 || cfg.MaxAge > 0 {
			j.f.Close()
			return nil, fmt.Errorf("%w: %s is not a regular file: it cannot be rotated", ErrJSONLConfig, cfg.Path)
		}
		return j, nil
	}
	if err := j.readRotated(); err != nil {
		j.f.Close()
		return nil, err
	}
	tidyEvery(cfg.Tidy, j.stop, &j.wg, j.Tidy, func(err error) {
		j.cfg.Log.Error("jsonl sink: rotate or delete files", "sink", j.cfg.Name, "err", err)
	})
	return j, nil
}

// tidyEvery runs tidy every interval (none if it is not positive) in a goroutine that wg
// counts, until stop is closed, passing its errors to failed.
func tidyEvery(every time.Duration, stop <-chan struct{}, wg *sync.WaitGroup, tidy func() error, failed func(error)) {
	if every <= 0 {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := tidy(); err != nil {
					failed(err)
				}
			}
		}
	}()
}

// open opens the current file and reads what it holds; j.f stays nil when it fails.
func (j *JSONL) open() error {
	cut, err := dropTornLine(j.cfg.Path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if cut > 0 {
		j.cfg.Log.Warn("jsonl sink: cut a half-written last line (its records are written again)",
			"sink", j.cfg.Name, "path", j.cfg.Path, "bytes", cut)
	}
	f, err := os.OpenFile(j.cfg.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := j.read(f); err != nil {
		f.Close()
		return err
	}
	j.f = f
	return nil
}

// read reads what f, the current file just opened, holds.
func (j *JSONL) read(f *os.File) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	j.regular, j.size, j.cur = info.Mode().IsRegular(), info.Size(), fileSpan{}
	if !j.regular || j.size == 0 {
		return nil
	}
	if j.cur, err = j.scan(j.cfg.Path); err != nil {
		return err
	}
	j.cur.started = j.cfg.Now()
	return nil
}

// scan reads what a file holds. A line that is not a record (cut by a crash: the sink wrote
// the record again after it) is counted, not held against deletion.
func (j *JSONL) scan(path string) (fileSpan, error) {
	var s fileSpan
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if id, at, ok := lineMeta(line); !ok {
				s.unreadableLines++
			} else {
				s.add(id, at, j.cfg.Retention)
			}
		}
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
	}
}

// lineMeta reads the SSA and the time of receipt of a record a JSONL sink wrote: from its
// envelope (format raw), its labels.ssa_id and event.ingested (ecs), or its bundle's ssanet
// extension and the creation time of its observed-data (stix).
func lineMeta(line []byte) (string, time.Time, bool) {
	var rec struct {
		SSAID    string    `json:"ssa_id"`
		Received time.Time `json:"received"`
		Labels   struct {
			SSAID string `json:"ssa_id"`
		} `json:"labels"`
		Event struct {
			Ingested time.Time `json:"ingested"`
		} `json:"event"`
		Objects []struct {
			Type       string                     `json:"type"`
			Created    time.Time                  `json:"created"`
			Extensions map[string]json.RawMessage `json:"extensions"`
		} `json:"objects"`
	}
	if json.Unmarshal(line, &rec) != nil {
		return "", time.Time{}, false
	}
	switch {
	case rec.SSAID != "":
		return rec.SSAID, rec.Received, true
	case rec.Labels.SSAID != "":
		return rec.Labels.SSAID, rec.Event.Ingested, true
	}
	for _, o := range rec.Objects {
		var ext struct {
			SSAID string `json:"ssa_id"`
		}
		if o.Type == "observed-data" && json.Unmarshal(o.Extensions[cti.ExtensionID], &ext) == nil && ext.SSAID != "" {
			return ext.SSAID, o.Created, true
		}
	}
	return "", time.Time{}, false
}

// readRotated finds the rotated files next to the current one.
func (j *JSONL) readRotated() error {
	dir, base := filepath.Split(j.cfg.Path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if _, err := time.Parse(rotatedLayout, suffix); err != nil {
			continue
		}
		path := filepath.Join(dir, e.Name())
		s, err := j.scan(path)
		if err != nil {
			return err
		}
		if s.unreadableLines > 0 {
			// A rotated file with no record the sink can read holds nothing whose retention it
			// knows: it is kept for the operator rather than deleted at the next tidy.
			s.keep = s.keep || s.records == 0
			j.cfg.Log.Warn("jsonl sink: rotated file holds lines that are not records",
				"sink", j.cfg.Name, "file", path, "unreadable", s.unreadableLines, "records", s.records, "kept", s.keep)
		}
		j.rotated[path] = &s
	}
	return nil
}

// Rotated lists the rotated files, oldest first.
func (j *JSONL) Rotated() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]string, 0, len(j.rotated))
	for p := range j.rotated {
		out = append(out, p)
	}
	sort.Strings(out) // rotatedLayout sorts by time
	return out
}

// Confirms reports whether a Write that returned nil synced its records: true for a regular
// file, false for a pipe or a device.
func (j *JSONL) Confirms() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.regular
}

// Write encodes one record at a time, so that it holds one encoded record, not a chunk,
// rotates the file before a record would take it past MaxSize, and syncs a regular file
// before the caller records its progress.
func (j *JSONL) Write(_ context.Context, recs []Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.reopen(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(j.f, 64<<10)
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	for _, r := range recs {
		line.Reset()
		if err := r.encode(enc, &line); err != nil {
			return err
		}
		if j.regular && j.cfg.MaxSize > 0 && j.size > 0 && j.size+int64(line.Len()) > j.cfg.MaxSize {
			if err := w.Flush(); err != nil {
				return err
			}
			if err := j.rotate(); err != nil {
				return err
			}
			w.Reset(j.f)
		}
		if _, err := w.Write(line.Bytes()); err != nil {
			return err
		}
		if j.cur.records == 0 {
			j.cur.started = j.cfg.Now()
		}
		j.size += int64(line.Len())
		j.cur.add(r.SSAID, r.Received, j.cfg.Retention)
	}
	if err := w.Flush(); err != nil || !j.regular {
		return err
	}
	return j.f.Sync()
}

// rotate syncs and closes the current file, renames it PATH.TIME and opens a new one.
func (j *JSONL) rotate() error {
	if err := j.f.Sync(); err != nil {
		return err
	}
	err := j.f.Close()
	j.f = nil // reopened by the next Write or Tidy, whatever happens below
	if err != nil {
		return err
	}
	t := j.cfg.Now().UTC()
	var to string
	for i := 0; ; i++ { // two rotations in one nanosecond of the clock: the next free name
		to = j.cfg.Path + "." + t.Add(time.Duration(i)).Format(rotatedLayout)
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		} else if i == 1000 {
			return fmt.Errorf("rotate %s: no free name", j.cfg.Path)
		}
	}
	if err := os.Rename(j.cfg.Path, to); err != nil {
		return err
	}
	span := j.cur
	j.rotated[to] = &span
	if err := j.open(); err != nil { // the rotated file stays; the next Write tries again
		return err
	}
	return SyncDir(filepath.Dir(j.cfg.Path))
}

// Tidy rotates the current file when its first record was written MaxAge ago or its oldest
// record's retention ran out, and deletes each rotated file all of whose records are past
// their SSA's retention. The sink calls it every JSONLConfig.Tidy.
func (j *JSONL) Tidy() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.regular {
		return nil
	}
	if err := j.reopen(); err != nil {
		return err
	}
	now := j.cfg.Now()
	old := j.cfg.MaxAge > 0 && !now.Before(j.cur.started.Add(j.cfg.MaxAge))
	expired := !j.cur.first.IsZero() && !now.Before(j.cur.first)
	if j.cur.records > 0 && (old || expired) {
		if err := j.rotate(); err != nil {
			return err
		}
	}
	var errs []error
	for path, s := range j.rotated {
		if s.keep || (s.records > 0 && now.Before(s.last)) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		delete(j.rotated, path)
		j.cfg.Log.Info("jsonl sink: file deleted, the retention of every record in it ran out",
			"sink", j.cfg.Name, "file", path, "records", s.records)
	}
	return errors.Join(errs...)
}

// reopen opens the current file again after a rotation that failed half-way.
func (j *JSONL) reopen() error {
	if j.f != nil {
		return nil
	}
	return j.open()
}

// SyncDir syncs a directory, so that the entries made in it last (a rename, a new file)
// survive a crash. The agent uses it for its own files too.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFileAtomic replaces path with b (mode perm): written to path+".tmp", synced, closed and
// renamed, the temporary file removed if any step fails, so that a crash leaves the old or
// the new content, never a part. It does not sync the directory; SyncDir does.
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	return writeAtomic(path, path+".tmp", b, perm)
}

// writeAtomic is WriteFileAtomic with the temporary file at tmp, in path's directory.
func writeAtomic(path, tmp string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// Close stops tidying and closes the file.
func (j *JSONL) Close() error {
	close(j.stop)
	j.wg.Wait()
	if j.f == nil {
		return nil
	}
	return j.f.Close()
}
