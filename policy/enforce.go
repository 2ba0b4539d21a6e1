package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// MaxRecordSize is the largest record accepted, in bytes.
const MaxRecordSize = 1 << 20

// MaxBadReported is how many bad records Stats keeps the details of.
const MaxBadReported = 100

// Config configures an Enforcer. The zero value is valid.
type Config struct {
	// Logger receives one Debug line per record the engine rejects (never the record
	// itself). Nil discards.
	Logger *slog.Logger
	// Year is given to RFC 3164 syslog time stamps, which carry none. Zero leaves such
	// records without @timestamp: a summarisation then cannot place them in a window.
	Year int
	// Now is the clock the SSA's schedule is checked against (clause 9.2, the period of
	// sharing): a record that reaches the enforcement point before the schedule's start or
	// from its end on is not shared, whatever its own time. Nil is time.Now. Limits on the
	// record's own time are a filter's: r["@timestamp"] >= timestamp("2025-01-01T00:00:00Z").
	Now func() time.Time
}

// Stats counts what an Enforcer did.
type Stats struct {
	Records         int64 // records read
	Refined         int64 // refined records written
	Filtered        int64 // excluded by a filter
	FilterErrors    int64 // excluded because a filter could not be evaluated (missing field, cost limit)
	OutsideSchedule int64 // not shared: they reached the enforcement point outside the schedule
	Summaries       int64 // summary records written
	Untimed         int64 // under a summarisation, records without @timestamp: no window takes them
	Malformed       int64 // records that could not be parsed
	// FilteredBy splits Filtered by filter, aligned with the SSA's policy.filtering list
	// (at most MaxFilters): FilteredBy[i] counts the records filter i was the first to
	// exclude. Its sum is Filtered; nil without filters.
	FilteredBy []int64
	// Bad details the first MaxBadReported malformed records.
	Bad []BadRecord
}

// BadRecord locates a record that could not be refined.
type BadRecord struct {
	Line   int   // line of the record's first byte, from 1
	Offset int64 // byte offset of the record's first byte, from 0
	Err    error
}

func (b BadRecord) Error() string {
	return fmt.Sprintf("line %d (byte %d): %v", b.Line, b.Offset, b.Err)
}

// Enforcer is the SSP enforcement point of clause 8 for one stream of records of one format:
// raw records in, refined records out. It fails closed: a record it cannot parse, whose
// filter cannot be evaluated or that reaches it outside the schedule is not emitted. An
// Enforcer is not safe for concurrent use; use one per stream.
type Enforcer struct {
	ssp     *SSP
	spec    *formatSpec
	codec   codec
	w       walker
	act     *viewActivation // the filters' activation over w.view
	sum     *summarizer
	log     *slog.Logger
	stats   Stats
	now     func() time.Time
	bounded bool // the schedule has a start or an end
}

// NewEnforcer returns the enforcement point of p for records of format.
func NewEnforcer(p *SSP, format string, cfg Config) (*Enforcer, error) {
	spec, ok := p.format(format)
	if !ok {
		return nil, refuse(ProblemUnsupportedFormat, "information", "the SSP covers %v, not %q", p.Formats(), format)
	}
	m, err := p.newMasker()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enforcer{ssp: p, spec: spec, codec: spec.codec(cfg.Year), log: log.With("ssa", p.ssaID),
		now: cfg.Now, bounded: p.schedule.Start != 0 || p.schedule.End != 0}
	if e.now == nil {
		e.now = time.Now
	}
	e.w = walker{kinds: spec.fields, mask: m}
	if len(p.filters) > 0 || p.summary != nil {
		e.w.view = map[string]any{}
		e.act = newViewActivation(e.w.view)
	}
	if len(p.filters) > 0 {
		e.stats.FilteredBy = make([]int64, len(p.filters))
	}
	if p.summary != nil {
		e.w.mview = map[string]any{}
		e.sum = newSummarizer(*p.summary, p.Hash())
	}
	rel := map[string]bool{}
	for _, f := range p.filters {
		for _, k := range f.fields {
			e.w.wantIPs = e.w.wantIPs || k == fieldRelatedIP
			rel[k] = true
		}
	}
	if p.summary != nil {
		rel[fieldTimestamp] = true
	}
	if p.summary != nil {
		rel[p.summary.GroupBy], rel[p.summary.RankBy] = true, true
	}
	for _, m := range p.masks {
		for _, f := range m.Fields {
			rel[f] = true
		}
	}
	e.w.relevant = rel
	return e, nil
}

// Stats returns the counts so far (a copy: later records do not change it).
func (e *Enforcer) Stats() Stats {
	s := e.stats
	s.FilteredBy = slices.Clone(s.FilteredBy)
	s.Bad = slices.Clone(s.Bad)
	return s
}

// Refine refines one raw record and appends what is to be sent to dst: nothing (the record
// reached it outside the schedule, is filtered out, or is counted in a summary), the refined
// record, or a summary record when the record closed a window. Each record appended ends
// with a newline. A malformed record is an error and appends nothing; outside the schedule
// a record is not read at all.
func (e *Enforcer) Refine(dst, raw []byte) ([]byte, error) {
	e.stats.Records++
	if e.bounded && !e.ssp.schedule.Contains(protocol.FromTime(e.now())) {
		e.stats.OutsideSchedule++
		return dst, nil
	}
	if len(raw) > MaxRecordSize {
		e.stats.Malformed++
		return dst, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxRecordSize)
	}
	e.w.reset()
	mark := len(dst)
	out, err := e.codec.refine(dst, raw, &e.w)
	if err != nil {
		e.stats.Malformed++
		return dst[:mark], err
	}
	if !e.keep() {
		return dst[:mark], nil
	}
	if e.sum != nil {
		return e.summarise(dst[:mark])
	}
	e.stats.Refined++
	return append(out, '\n'), nil
}

// keep applies the filters to the view as read.
func (e *Enforcer) keep() bool {
	small := e.w.small()
	for i, f := range e.ssp.filters {
		ok, err := f.evalIn(e.act, small)
		if err != nil {
			e.stats.FilterErrors++
			e.log.Debug("filter not evaluated: record excluded", "err", err)
			return false
		}
		if !ok {
			e.stats.Filtered++
			e.stats.FilteredBy[i]++
			return false
		}
	}
	return true
}

func (e *Enforcer) summarise(dst []byte) ([]byte, error) {
	ts, ok := e.w.view[fieldTimestamp].(time.Time)
	if !ok {
		e.stats.Untimed++
		return dst, nil
	}
	key, hasKey := summaryKey(e.w.mview[e.sum.spec.GroupBy])
	weight := int64(1)
	if r := e.sum.spec.RankBy; r != protocol.RankByCount {
		weight, _ = e.w.view[r].(int64)
	}
	if s := e.sum.add(ts, key, hasKey, weight); s != nil {
		return e.emit(dst, s)
	}
	return dst, nil
}

func (e *Enforcer) emit(dst []byte, s *Summary) ([]byte, error) {
	out, err := encodeSummary(dst, s)
	if err != nil {
		return dst, err
	}
	e.stats.Summaries++
	return append(out, '\n'), nil
}

// Flush appends the summary of the open window, if any: call it at the end of a stream.
func (e *Enforcer) Flush(dst []byte) ([]byte, error) {
	if e.sum == nil {
		return dst, nil
	}
	if s := e.sum.flush(); s != nil {
		return e.emit(dst, s)
	}
	return dst, nil
}

// Run refines every record read from r and writes the results to w, then flushes. A
// malformed record is counted, located in Stats.Bad and skipped: the others are still
// refined. The error is that of reading, writing or ctx.
func (e *Enforcer) Run(ctx context.Context, r io.Reader, w io.Writer) (Stats, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	sp := newSplitter(r, e.spec.framing)
	var buf []byte
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return e.stats, err
			}
		}
		rec, line, off, err := sp.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			buf, err = e.Refine(buf[:0], rec)
		} else if ioErr := (*readError)(nil); errors.As(err, &ioErr) {
			return e.stats, ioErr.err
		} else {
			e.stats.Records++
			e.stats.Malformed++
		}
		if err != nil {
			if len(e.stats.Bad) < MaxBadReported {
				e.stats.Bad = append(e.stats.Bad, BadRecord{Line: line, Offset: off, Err: err})
			}
			e.log.Debug("record rejected", "line", line, "offset", off, "err", err)
			continue
		}
		if _, err := bw.Write(buf); err != nil {
			return e.stats, err
		}
	}
	buf, err := e.Flush(buf[:0])
	if err != nil {
		return e.stats, err
	}
	if _, err := bw.Write(buf); err != nil {
		return e.stats, err
	}
	return e.stats, bw.Flush()
}

// Enforce refines a single record with a fresh enforcer: the refined record without its
// newline, or nil if it is not to be sent. With a summarisation it returns the one-record
// summary.
func Enforce(p *SSP, format string, raw []byte) ([]byte, error) {
	e, err := NewEnforcer(p, format, Config{})
	if err != nil {
		return nil, err
	}
	out, err := e.Refine(nil, raw)
	if err != nil {
		return nil, err
	}
	if out, err = e.Flush(out); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out[:len(out)-1], nil
}
