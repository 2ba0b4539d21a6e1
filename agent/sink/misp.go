package sink

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ssanet/ssanet/policy/cti"
)

// A MISP feed is a directory a MISP instance pulls by URL ("Add feed", input source network,
// source format MISP feed): manifest.json lists the events by UUID, hashes.csv holds the MD5
// of every attribute value and the UUID of its event (for MISP's feed cache and correlation),
// and each event is EVENT-UUID.json, {"Event": {…}} in the MISP core format.

// DefaultMISPMaxAttributes bounds the attributes of one event (one SSA, one day).
const DefaultMISPMaxAttributes = 50000

// maxEventFile bounds an event file read back at start: far above what MaxAttributes lets the
// writer make, so that only a file that is not the writer's is refused.
const maxEventFile = 256 << 20

// ErrMISPFeed means a MISP feed directory cannot be used as configured, or holds a file the
// writer did not write where it expects its own.
var ErrMISPFeed = errors.New("sink: misp feed")

// MISPFeedConfig configures a MISPFeed.
type MISPFeedConfig struct {
	Name string // of the sink, for the log
	Dir  string // the feed directory, created if missing
	// MaxAttributes bounds each event (default DefaultMISPMaxAttributes); an observable that
	// finds its event full is left out, and its record counted by Truncated.
	MaxAttributes int
	// Agreement returns the agreement an SSA's records were shared under (its TLP, handling,
	// provider and masking); false for an SSA whose records the sink must not take.
	Agreement func(ssaID string) (*cti.Agreement, bool)
	// Now is the clock (default time.Now); Tidy, how often events past their retention are
	// deleted when no Write comes to do it (default DefaultTidy; negative: only at Open, Write
	// and Tidy).
	Now  func() time.Time
	Tidy time.Duration
	Log  *slog.Logger
}

// MISPFeed writes the records of SSAs as a MISP feed: one event per SSA and day of receipt,
// holding each observable of that day's records once. Every file is replaced whole (written
// beside it, synced, renamed, the directory synced), events first and the manifest last, so a
// crash leaves the previous or the next version of each file and the feed is rebuilt from
// the event files at the next start. An event whose day is past its SSA's retention is
// deleted.
type MISPFeed struct {
	cfg       MISPFeedConfig
	mu        sync.Mutex
	manifest  map[string]cti.MISPManifestEntry
	hashes    map[string][]string  // event UUID -> MD5 of each attribute value
	expires   map[string]time.Time // event UUID -> when it may be deleted; absent: never
	truncated uint64
	logged    time.Time
	// skipped counts the records passed over by the Writes that returned nil; skipLogged
	// holds the reasons logged already (once each).
	skipped    Skips
	skipLogged map[string]bool
	stop       chan struct{}
	wg         sync.WaitGroup
}

var eventFile = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json$`)

// feedTmpPrefix starts the name of the temporary file a feed file is written to before it is
// renamed: .ssanet-feed-tmp.manifest.json, .ssanet-feed-tmp.EVENT-UUID.json, …. Only files of
// that pattern are the writer's own; it deletes those a crash left, and no other file.
const feedTmpPrefix = ".ssanet-feed-tmp."

// ownTmp reports whether a directory entry is a temporary file of the feed writer.
func ownTmp(name string) bool {
	rest, ok := strings.CutPrefix(name, feedTmpPrefix)
	return ok && (rest == "manifest.json" || rest == "hashes.csv" || eventFile.MatchString(rest))
}

// OpenMISPFeed opens (or creates) a feed directory and rebuilds its manifest and hashes from
// the event files it holds.
func OpenMISPFeed(cfg MISPFeedConfig) (*MISPFeed, error) {
	if cfg.Dir == "" || cfg.Agreement == nil || cfg.MaxAttributes < 0 {
		return nil, fmt.Errorf("%w: want a directory, the SSAs' agreements and max-attributes of 0 or more", ErrMISPFeed)
	}
	if cfg.MaxAttributes == 0 {
		cfg.MaxAttributes = DefaultMISPMaxAttributes
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
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	f := &MISPFeed{cfg: cfg, manifest: map[string]cti.MISPManifestEntry{}, hashes: map[string][]string{}, expires: map[string]time.Time{},
		skipLogged: map[string]bool{}, stop: make(chan struct{})}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	for _, e := range ents {
		name := e.Name()
		if ownTmp(name) && e.Type().IsRegular() { // a write a crash cut short
			if err := os.Remove(filepath.Join(cfg.Dir, name)); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
			}
			continue
		}
		if !eventFile.MatchString(name) || !e.Type().IsRegular() {
			continue
		}
		ev, err := f.load(strings.TrimSuffix(name, ".json"))
		if err != nil {
			return nil, err
		}
		f.index(ev)
	}
	if err := f.expire(cfg.Now()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	if err := f.writeIndex(); err != nil {
		return nil, err
	}
	tidyEvery(cfg.Tidy, f.stop, &f.wg, f.Tidy, func(err error) {
		f.cfg.Log.Error("misp feed: delete events past their retention", "sink", f.cfg.Name, "err", err)
	})
	return f, nil
}

// Tidy deletes the events past their SSA's retention and, if it deleted one, rewrites the
// manifest and hashes: an SSA whose records stopped coming has no Write to do it. The sink
// calls it every MISPFeedConfig.Tidy.
func (f *MISPFeed) Tidy() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.manifest)
	if err := f.expire(f.cfg.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	if len(f.manifest) == n {
		return nil
	}
	return f.writeIndex()
}

// load reads an event file; a missing one is (nil, nil).
func (f *MISPFeed) load(id string) (*cti.MISPEvent, error) {
	path := filepath.Join(f.cfg.Dir, id+".json")
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxEventFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMISPFeed, err)
	}
	if len(b) > maxEventFile {
		return nil, fmt.Errorf("%w: %s is over %d MiB: not an event this sink wrote; move it out of the feed", ErrMISPFeed, path, maxEventFile>>20)
	}
	var fe cti.MISPFeedEvent
	if err := json.Unmarshal(b, &fe); err != nil || fe.Event == nil || fe.Event.UUID != id {
		return nil, fmt.Errorf("%w: %s is not an event this sink wrote (%v); move it out of the feed", ErrMISPFeed, path, err)
	}
	return fe.Event, nil
}

// index records an event in the manifest, the hashes and the expiries.
func (f *MISPFeed) index(ev *cti.MISPEvent) {
	f.manifest[ev.UUID] = ev.Manifest()
	hs := make([]string, 0, len(ev.Attribute))
	for _, a := range ev.Attribute {
		sum := md5.Sum([]byte(a.Value))
		hs = append(hs, hex.EncodeToString(sum[:]))
	}
	f.hashes[ev.UUID] = hs
	delete(f.expires, ev.UUID)
	for _, t := range ev.Tag {
		id, ok := strings.CutPrefix(t.Name, `ssanet:ssa="`)
		if !ok {
			continue
		}
		a, ok := f.cfg.Agreement(strings.TrimSuffix(id, `"`))
		day, err := time.Parse(time.DateOnly, ev.Date)
		if ok && a.Retention > 0 && err == nil {
			f.expires[ev.UUID] = day.Add(24 * time.Hour).Add(a.Retention)
		}
	}
}

// Confirms: a Write that returned nil synced every file.
func (f *MISPFeed) Confirms() bool { return true }

// Truncated is how many records had an observable left out of a full event.
func (f *MISPFeed) Truncated() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.truncated
}

// Skipped counts the records passed over, by reason: unmappable (a format the mapping does
// not read) and unmapped (no observable: nothing to add to an event).
func (f *MISPFeed) Skipped() Skips {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.skipped
}

// Write adds the observables of recs to their events and rewrites the feed's files. A record
// that has no attribute (its format is not one the mapping reads, or it holds no observable)
// is passed over, counted by Skipped and logged once per reason: it will never have one.
func (f *MISPFeed) Write(ctx context.Context, recs []Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.cfg.Now()
	events := map[string]*cti.MISPEvent{}
	var order []string
	var skipped Skips
	type skip struct {
		rec *Record
		err error
	}
	first := map[string]skip{} // the first record passed over, by reason
	// A chunk's records are those of one SSA, as a rule: look its agreement up once, not once
	// a record (the lookup walks the agent's runs under its manager's lock).
	var a *cti.Agreement
	for i := range recs {
		r := &recs[i]
		if a == nil || a.SSA != r.SSAID {
			var ok bool
			if a, ok = f.cfg.Agreement(r.SSAID); !ok {
				return fmt.Errorf("%w: no agreement in force for SSA %s", ErrMISPFeed, r.SSAID)
			}
		}
		attrs, err := a.MISPAttributes(cti.Record{Seq: r.Seq, Received: r.Received, Format: r.Format, Data: r.Data()})
		reason := ""
		switch {
		case err != nil:
			reason, skipped.Unmappable = SkipUnmappable, skipped.Unmappable+1
		case len(attrs) == 0:
			reason, skipped.Unmapped = SkipUnmapped, skipped.Unmapped+1
		}
		if reason != "" {
			if _, ok := first[reason]; !ok {
				first[reason] = skip{r, err}
			}
			continue
		}
		id := a.MISPEventUUID(r.Received)
		ev := events[id]
		if ev == nil {
			if ev, err = f.load(id); err != nil {
				return err
			}
			if ev == nil {
				ev = a.NewMISPEvent(r.Received, now)
			}
			events[id] = ev
			order = append(order, id)
		}
		if _, dropped := ev.Add(attrs, now, f.cfg.MaxAttributes); dropped > 0 {
			f.truncated++
		}
	}
	for _, id := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := json.Marshal(cti.MISPFeedEvent{Event: events[id]})
		if err != nil {
			return err
		}
		if err := writeFeedFile(filepath.Join(f.cfg.Dir, id+".json"), b); err != nil {
			return err
		}
		f.index(events[id])
	}
	if err := f.expire(now); err != nil {
		return err
	}
	if err := f.writeIndex(); err != nil {
		return err
	}
	f.skipped.Add(skipped)
	for _, reason := range []string{SkipUnmappable, SkipUnmapped} {
		sk, ok := first[reason]
		if !ok || f.skipLogged[reason] {
			continue
		}
		f.skipLogged[reason] = true
		msg := "misp feed: records passed over, they have no observable to add to an event (logged once; counted in the sink's skipped records)"
		if reason == SkipUnmappable {
			msg = "misp feed: records passed over, their format cannot be mapped to MISP attributes (logged once; counted in the sink's skipped records)"
		}
		attrs := []any{"sink", f.cfg.Name, "ssa", sk.rec.SSAID, "seq", sk.rec.Seq, "format", sk.rec.Format, "reason", reason}
		if sk.err != nil {
			attrs = append(attrs, "err", sk.err)
		}
		f.cfg.Log.Warn(msg, attrs...)
	}
	if f.truncated > 0 && now.Sub(f.logged) >= time.Minute {
		f.cfg.Log.Warn("misp feed: events full, observables left out; raise max-attributes", "sink", f.cfg.Name,
			"max_attributes", f.cfg.MaxAttributes, "records", f.truncated)
		f.logged = now
	}
	return nil
}

// expire deletes the events past their SSA's retention.
func (f *MISPFeed) expire(now time.Time) error {
	for id, at := range f.expires {
		if now.Before(at) {
			continue
		}
		if err := os.Remove(filepath.Join(f.cfg.Dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		delete(f.manifest, id)
		delete(f.hashes, id)
		delete(f.expires, id)
	}
	return nil
}

// writeIndex rewrites hashes.csv and manifest.json and syncs the directory.
func (f *MISPFeed) writeIndex() error {
	ids := make([]string, 0, len(f.hashes))
	for id := range f.hashes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var csv bytes.Buffer
	for _, id := range ids {
		for _, h := range f.hashes[id] {
			fmt.Fprintf(&csv, "%s,%s\n", h, id)
		}
	}
	if err := writeFeedFile(filepath.Join(f.cfg.Dir, "hashes.csv"), csv.Bytes()); err != nil {
		return err
	}
	b, err := json.Marshal(f.manifest)
	if err != nil {
		return err
	}
	if err := writeFeedFile(filepath.Join(f.cfg.Dir, "manifest.json"), b); err != nil {
		return err
	}
	return SyncDir(f.cfg.Dir)
}

// writeFeedFile replaces a feed file whole: written beside it (feedTmpPrefix), synced,
// renamed. Mode 0640: the web server that serves the feed reads it through its group.
func writeFeedFile(path string, b []byte) error {
	dir, base := filepath.Split(path)
	if err := writeAtomic(path, filepath.Join(dir, feedTmpPrefix+base), b, 0o640); err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrMISPFeed, path, err)
	}
	return nil
}

// Close stops tidying: every Write left the feed complete.
func (f *MISPFeed) Close() error {
	close(f.stop)
	f.wg.Wait()
	return nil
}
