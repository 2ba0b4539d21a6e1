package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/storage"
)

// The provider's SSP enforcement point, refine-and-queue (Appendix I steps ⑦–⑧): raw records
// of one format go to every SSA in force that shares it, are refined under its SSP and queued
// durably for delivery, within the per-requester bound of the management point.

// ingestChunk is how many raw records are refined and queued together.
const ingestChunk = 2048

// readBlock is the size of the buffers that the raw records read share (a larger record gets
// one of its own).
const readBlock = 256 << 10

// provisions is what refine-and-queue needs of the management point.
type provisions interface {
	// providerRuns are the SSAs provided in force.
	providerRuns() []*agreementRun
	// reserve takes room for want[i] records of runs[i] under the per-requester bound and
	// says how many each got.
	reserve(runs []*agreementRun, want []int) []int
}

// queueMetrics are the counters of refine-and-queue.
type queueMetrics struct {
	ingested, queued prometheus.Counter
	// overflow counts refined records not queued because their requester's queue was full.
	overflow prometheus.Counter
}

// refiner is refine-and-queue. Its methods are safe for concurrent use; each call refines and
// queues its chunks in order.
type refiner struct {
	runs      provisions
	store     *storage.Store
	log       *slog.Logger
	now       func() time.Time
	metrics   queueMetrics
	maxQueued int64 // only said in the log line when a queue fills
	// queued is told of each run that got records, to deliver them (deliverer.wake).
	queued func(*agreementRun)
	// ledger counts what became of every raw record, per SSA (ledger.go).
	ledger *ledger
}

func newRefiner(runs provisions, st *storage.Store, log *slog.Logger, now func() time.Time, maxQueued int64,
	metrics queueMetrics, queued func(*agreementRun), l *ledger) *refiner {
	return &refiner{runs: runs, store: st, log: log, now: now, maxQueued: maxQueued, metrics: metrics, queued: queued, ledger: l}
}

// ingest reads records of format from r, refines and queues them; see Agent.Ingest. When from
// is not nil, r is a followed file read from there: each chunk is queued in one commit with
// the position where it ends in the file (the last one with the position of the end of r), so
// that a crash at any point neither repeats nor skips a record of the file.
func (q *refiner) ingest(ctx context.Context, format string, r io.Reader, from *storage.FilePos) (IngestStats, error) {
	st := IngestStats{Queued: map[string]int64{}}
	rr, err := policy.NewRecordReader(r, format)
	if err != nil {
		return st, err
	}
	refined := make(chan refinedChunk, 1)
	queueErr := make(chan error, 1)
	go func() { // the queueing stage, owned by this call: it ends when refined is closed
		var err error
		for c := range refined {
			if err == nil {
				err = q.enqueue(c, &st)
			}
		}
		queueErr <- err
	}()
	readErr := q.readChunks(ctx, format, rr, &st, ingestFlush, func(chunk [][]byte, starts []int64, bad badRecords, end int64) {
		c := q.refine(format, chunk, bad.n)
		c.malformedAt = bad.at
		if c.badIndex > 0 && c.badIndex <= len(starts) {
			base := int64(0) // where r starts in a followed file
			if from != nil {
				base = from.Offset
			}
			c.malformedAt = fmt.Sprintf("offset %d", base+starts[c.badIndex-1])
		}
		st.Malformed += c.malformed
		st.countOutcomes(c)
		if from != nil {
			c.pos = &storage.FilePos{Path: from.Path, Inode: from.Inode, Offset: from.Offset + end}
		}
		refined <- c
	})
	close(refined)
	return st, errors.Join(readErr, <-queueErr)
}

// queueChunk refines a chunk of raw records and queues the results.
func (q *refiner) queueChunk(format string, raws [][]byte) error {
	return q.enqueue(q.refine(format, raws, 0), &IngestStats{})
}

// notTaken counts n records of format that a source could not hand over: the store refused
// them (a full disk) or queueing failed. They were counted under no SSA.
func (q *refiner) notTaken(format string, n int, err error) {
	what := outcomeQueueError
	if errors.Is(err, storage.ErrDiskFull) {
		what = outcomeDiskFull
	}
	q.ledger.unshared(format, what, uint64(n))
}

// badRecords are the records of an input that could not be cut out since the last chunk: how
// many, and where the last one was.
type badRecords struct {
	n  int64
	at string
}

// readChunks cuts records out of rr and hands them to refine in chunks, with the count of
// malformed records cut out since the last chunk (bad, each logged with its line) and the
// offset in rr's input where each chunk ends (those malformed records included). A chunk is handed
// over when it holds ingestChunk records, or when a record has waited flush in it and no
// further one is ready (a pipe or socket that stays open streams: its records are queued
// within about flush of arriving). The last chunk, at the end of the input, ends there, and
// is handed over even when it is empty.
//
// The records are cut by a goroutine owned by this call, so that a partial chunk can be
// handed over while a read waits for more input. It ends with the input; when ctx ends first,
// this call returns at once and the goroutine ends after the read under way (the control
// API's connection closes with the daemon), handing nothing more over.
func (q *refiner) readChunks(ctx context.Context, format string, rr *policy.RecordReader, st *IngestStats, flush time.Duration,
	refine func(chunk [][]byte, starts []int64, bad badRecords, end int64)) error {
	type next struct {
		rec []byte
		end int64 // rr.Offset() after rec
		bad *policy.BadRecord
		err error // io.EOF at the end of the input
	}
	done := make(chan struct{})
	defer close(done)
	recs := make(chan next, 64)
	go func() { // the reader: it ends at the end of the input, on an error, or with done
		var block []byte // the records cut share blocks of readBlock bytes
		for {
			rec, err := rr.Next()
			n := next{end: rr.Offset()}
			var bad *policy.BadRecord
			switch {
			case errors.As(err, &bad):
				n.bad = bad
			case err != nil:
				n.err = err
			default:
				if cap(block)-len(block) < len(rec) {
					block = make([]byte, 0, max(readBlock, len(rec)))
				}
				start := len(block)
				block = append(block, rec...)
				n.rec = block[start:len(block):len(block)]
			}
			select {
			case recs <- n:
			case <-done:
				return
			}
			if n.err != nil {
				return
			}
		}
	}()
	chunk := make([][]byte, 0, ingestChunk)
	starts := make([]int64, 0, ingestChunk) // where each record of chunk starts in the input
	var bad badRecords                      // malformed records since the last chunk handed over
	end := int64(0)                         // where the last record read ends
	handOver := func(at int64) {
		refine(chunk, starts, bad, at)
		chunk, starts, bad = make([][]byte, 0, ingestChunk), starts[:0:0], badRecords{}
	}
	timer := time.NewTimer(flush)
	timer.Stop()
	defer timer.Stop()
	for {
		var n next
		select { // a record ready goes first: the timer hands over a chunk only when none is
		case n = <-recs:
		default:
			select {
			case n = <-recs:
			case <-timer.C:
				if len(chunk) > 0 || bad.n > 0 {
					handOver(end)
				}
				continue
			case <-ctx.Done():
				return ctx.Err() // the records of chunk are not queued, as when a read fails
			}
		}
		switch {
		case errors.Is(n.err, io.EOF):
			handOver(n.end)
			return nil
		case n.err != nil:
			if len(chunk) > 0 || bad.n > 0 {
				handOver(end)
			}
			return n.err
		case n.bad != nil:
			st.Malformed++
			bad.n++
			bad.at = fmt.Sprintf("line %d", n.bad.Line)
			end = n.end
			if len(chunk) == 0 && bad.n == 1 {
				timer.Reset(flush) // a stream of malformed records is counted as it comes too
			}
			q.log.Debug("malformed record skipped", "format", format, "line", n.bad.Line, "err", n.bad.Err)
			continue
		}
		st.Records++
		starts = append(starts, end)
		end = n.end
		if chunk = append(chunk, n.rec); len(chunk) == 1 && bad.n == 0 {
			timer.Reset(flush)
		}
		if len(chunk) == ingestChunk {
			timer.Stop()
			handOver(end)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
}

// refinedChunk is a chunk of raw records refined for every SSA that shares its format.
type refinedChunk struct {
	raws      int
	bad       int64 // records before these that could not be cut out of the input: malformed
	malformed int64 // raw records an enforcement point could not parse
	// badIndex is 1 + the index in the chunk of the first record an enforcement point could
	// not parse (0: none); malformedAt says where a malformed record was in the input ("" if
	// unknown), for the log.
	badIndex    int
	malformedAt string
	runs        []*agreementRun
	refined     [][][]byte
	counts      []refineCounts // what became of the raw records, per run
	format      string
	err         error
	pos         *storage.FilePos // where the chunk ends in a followed file, committed with it
}

// refine runs the enforcement points of the provider SSAs that share format over raws:
// once for each distinct refinement (policy.SSP.RefinementID), whose records every SSA that
// shares it gets (the same slice, or a copy where its format's tag differs). bad records of
// the input could not be cut out: each SSA counts them as malformed.
func (q *refiner) refine(format string, raws [][]byte, bad int64) refinedChunk {
	c := refinedChunk{raws: len(raws), bad: bad, format: format}
	if len(raws) == 0 && bad == 0 {
		return c
	}
	year := q.now().Year()
	first := map[string]int{} // the first run of each refinement, by its index in c.runs
	for _, run := range q.runs.providerRuns() {
		if !slices.Contains(run.ssp.Formats(), format) {
			continue
		}
		var out [][]byte
		var n refineCounts
		if i, ok := first[run.refineID]; ok {
			out, n = c.refined[i], c.counts[i]
			if tag := run.formatTag(format); c.runs[i].formatTag(format) != tag {
				out = retag(out, tag)
			}
		} else {
			var err error
			if out, n, err = run.refine(format, raws, year, q.now); err != nil {
				c.err = err
				return c
			}
			// Parsing does not depend on the SSP: a record one enforcement point cannot
			// parse, the others cannot either.
			c.malformed = max(c.malformed, n.malformed)
			if c.badIndex == 0 {
				c.badIndex = n.badIndex
			}
			first[run.refineID] = len(c.runs)
		}
		run.noteSchedule(q.log, n.outside, int64(len(raws)))
		c.runs, c.refined, c.counts = append(c.runs, run), append(c.refined, out), append(c.counts, n)
	}
	return c
}

// enqueue queues a refined chunk durably, for every SSA (and with its position in a followed
// file) in one commit, and wakes the delivery loops. A requester whose queued records reach
// max-queued-per-peer gets no more until it acknowledges some: what is left out is counted
// in st and in a metric, and logged when a queue fills.
func (q *refiner) enqueue(c refinedChunk, st *IngestStats) (err error) {
	if c.err != nil {
		return c.err
	}
	q.metrics.ingested.Add(float64(c.raws))
	if len(c.runs) == 0 {
		// Counted when the chunk is taken: a followed file's position is committed below,
		// and a chunk whose commit fails is read again.
		defer func() {
			if err == nil {
				q.ledger.noSSA(c.format, uint64(c.raws)+uint64(c.bad))
			}
		}()
	}
	want := make([]int, len(c.runs))
	for i := range c.runs {
		want[i] = len(c.refined[i])
	}
	room := q.runs.reserve(c.runs, want)
	batches := make([]storage.Batch, len(c.runs))
	for i, run := range c.runs {
		refined := c.refined[i]
		n := room[i]
		q.noteRoom(run, len(refined), n)
		batches[i] = storage.Batch{SSAID: run.ssa.ID, Records: refined[:n], Ingested: uint64(c.raws), Dropped: uint64(c.raws - len(refined))}
	}
	if len(batches) == 0 && c.pos == nil {
		return nil
	}
	now := q.now()
	lasts, err := q.store.EnqueueAll(batches, c.pos)
	if err != nil {
		for i, run := range c.runs {
			run.backlog.Add(-int64(room[i]))
		}
		return fmt.Errorf("queue records: %w", err)
	}
	for i, run := range c.runs {
		refined, last := batches[i].Records, lasts[i]
		st.count(run.ssa.ID, len(refined), len(c.refined[i])-len(refined))
		out := c.counts[i].outcomes(len(c.refined[i]), len(refined))
		out[outMalformed] += uint64(c.bad)
		q.ledger.provided(run, uint64(c.raws)+uint64(c.bad), &out, c.counts[i].filteredBy, c.malformedAt)
		q.metrics.queued.Add(float64(len(refined)))
		if len(refined) > 0 {
			run.mu.Lock()
			run.enqueued = append(run.enqueued, enqueueMark{last: last, at: now})
			run.mu.Unlock()
			q.queued(run)
		}
	}
	return nil
}

// noteRoom counts and logs, when it changes, that a run's requester has no room for all of
// its refined records (room of them queued).
func (q *refiner) noteRoom(run *agreementRun, refined, room int) {
	if room < refined {
		q.metrics.overflow.Add(float64(refined - room))
		if !run.full.Swap(true) {
			q.log.Warn("records not queued until the requester acknowledges some: its queue is full", "ssa", run.ssa.ID,
				"peer", run.peer, "max-queued-per-peer", q.maxQueued)
		}
	} else if refined > 0 && run.full.Swap(false) {
		q.log.Info("records queued again: the requester acknowledged some", "ssa", run.ssa.ID, "peer", run.peer)
	}
}
