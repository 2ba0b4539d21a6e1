package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chunkResult is one `ssanet ingest` of a feeder.
type chunkResult struct {
	first, n   int // the records first … first+n-1 of the stream
	start, end time.Time
	r          result
	v          ingestView
}

// feeder hands a stream to a provider in chunks, one `ssanet ingest` after another, in the
// background, until the chunks run out, an ingest fails, or stop is closed.
type feeder struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	results []chunkResult
	err     string // why it stopped early, if it did
}

// startFeeder feeds chunks records each, made by chunk(k) for k = 0, 1, … until it
// returns nil. It never fails the test itself.
func startFeeder(prov *agent, dir string, chunk func(k int) []eveRecord) *feeder {
	f := &feeder{stop: make(chan struct{}), done: make(chan struct{})}
	home := prov.home
	go func() {
		defer close(f.done)
		first := 0
		for k := 0; ; k++ {
			select {
			case <-f.stop:
				return
			default:
			}
			recs := chunk(k)
			if recs == nil {
				return
			}
			path, err := writeStream(dir, fmt.Sprintf("chunk-%03d.jsonl", k), recs)
			if err != nil {
				f.fail(err.Error())
				return
			}
			c := chunkResult{first: first, n: len(recs), start: time.Now()}
			c.r = runCLI("", nil, []string{"--home", home, "--json", "ingest", "--format", "eve", path})
			c.end = time.Now()
			ok := c.r.code == 0 && decode(c.r.stdout, &c.v) == nil
			f.mu.Lock()
			f.results = append(f.results, c)
			f.mu.Unlock()
			if !ok {
				f.fail(c.r.String())
				return
			}
			first += len(recs)
		}
	}()
	return f
}

func (f *feeder) fail(why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = why
}

// progress returns what the feeder did so far.
func (f *feeder) progress() (chunks []chunkResult, err string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]chunkResult(nil), f.results...), f.err
}

// wait waits for the feeder to end.
func (f *feeder) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(timeout):
		t.Fatalf("the feeder still ingests after %s", timeout)
	}
}

// queued sums what the successful ingests queued for the SSA.
func queuedFor(chunks []chunkResult, id string) (n int64, ingests int) {
	for _, c := range chunks {
		if c.r.code == 0 {
			n += c.v.Queued[id]
			ingests++
		}
	}
	return n, ingests
}

// waitSinkLines polls a sink file until it has at least want lines.
func waitSinkLines(t *testing.T, path string, want int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := sinkLines(path)
		if n >= want {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink %s has %d lines after %s, want %d", path, n, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitInbox polls the requester's monitor until it holds records 1..want of the SSA and the
// provider's report counts them acknowledged.
func waitInbox(t *testing.T, req *agent, id string, want int, timeout time.Duration) assessmentView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		as := req.monitor(id)
		if as.Local.Last >= uint64(want) && as.Provider != nil && as.Provider.Acked >= uint64(want) {
			return as
		}
		if time.Now().After(deadline) {
			t.Fatalf("the requester holds %d of %d records of %s after %s (verdict %s, reasons %v)",
				as.Local.Last, want, id, timeout, as.Verdict, as.Reasons)
		}
		time.Sleep(pollInterval * 2)
	}
}

// checkStream checks that the requester's store holds the stream exactly once and in
// order: record #i is the (i-1)th record of the stream (no filter: every record is shared).
func checkStream(t *testing.T, id string, held []recordView, stream []eveRecord) {
	t.Helper()
	checkDense(t, "requester's store", id, held, len(stream))
	seen := map[string]uint64{}
	wrong := 0
	for i, r := range held {
		ts := r.ts()
		if prev, dup := seen[ts]; dup {
			t.Errorf("the record of %s is stored twice: #%d and #%d", ts, prev, r.Seq)
		}
		seen[ts] = r.Seq
		if i < len(stream) && ts != stream[i].ts {
			if wrong++; wrong <= 3 {
				t.Errorf("record #%d is the record of %s, want the stream's record %d (%s)", r.Seq, ts, i, stream[i].ts)
			}
		}
	}
	if wrong > 3 {
		t.Errorf("%d records out of place in all", wrong)
	}
}

// forwardChunk is how many records a sink forwarder writes before it saves its progress.
const forwardChunk = 512

// TestDeliveryFaults streams 20,000 records (10,000 under -race) through an SSA in four
// chunks and breaks something while they flow: the provider is killed with SIGKILL (and
// restarted on the same home and port, and fed the records it had not queued), the
// requester is restarted (SIGTERM, then started again), the requester is frozen for 3 s
// (SIGSTOP, SIGCONT), or the requester is killed with SIGKILL and restarted. Afterwards the
// requester's store holds every record exactly once, in order, and the sink holds every
// record at least once (duplicates only across a requester restart).
func TestDeliveryFaults(t *testing.T) {
	// The fault comes once the sink has trigger records.
	total, chunk, trigger := 20000, 5000, 2000
	if raceEnabled {
		total, chunk = 10000, 2500 // daemons built with -race run several times slower
	}
	sample := sampleEVE(t)
	stream := eveStream(sample, streamBase, 0, total, nil)
	for _, tc := range []struct {
		name string
		// fault breaks the exchange; for the provider's crash it also returns once the
		// provider runs again.
		fault         func(t *testing.T, prov, req *agent, feed *feeder)
		killsProvider bool
		restartsReq   bool
	}{
		{"provider killed", func(t *testing.T, prov, req *agent, feed *feeder) {
			prov.kill()
			feed.wait(t, cliTimeout) // the ingest in flight fails with the provider
			time.Sleep(time.Second)
			prov.start()
		}, true, false},
		{"requester restarted", func(t *testing.T, prov, req *agent, feed *feeder) {
			req.stop()
			req.start()
		}, false, true},
		{"requester frozen 3s", func(t *testing.T, prov, req *agent, feed *feeder) {
			req.signal(syscall.SIGSTOP)
			time.Sleep(3 * time.Second)
			req.signal(syscall.SIGCONT)
		}, false, false},
		{"requester killed", func(t *testing.T, prov, req *agent, feed *feeder) {
			req.kill()
			req.start()
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
			dir := t.TempDir()
			sink := filepath.Join(dir, "siem.jsonl")
			prov := newAgent(t, "provider", port(), fastExchange...)
			req := newAgent(t, "requester", port(), append(fastExchange, withJSONLSink(sink))...)
			prov.offer("provider.yaml")
			id := agree(t, req, prov, requesterTemplate(t, "", "90d"))

			start := time.Now()
			feed := startFeeder(prov, dir, func(k int) []eveRecord {
				if k*chunk >= total {
					return nil
				}
				return stream[k*chunk : (k+1)*chunk]
			})
			atFault := waitSinkLines(t, sink, trigger, deliverBy)
			chunks, _ := feed.progress()
			faultAt := time.Since(start)
			tc.fault(t, prov, req, feed)
			recovered := time.Since(start)
			if atFault >= total {
				t.Errorf("the fault came after the whole stream was delivered (%d records in the sink)", atFault)
			}

			feed.wait(t, 2*cliTimeout)
			done, ferr := feed.progress()
			queued, ingests := queuedFor(done, id)
			resumedFrom := -1
			if tc.killsProvider {
				// The provider queued a prefix of the stream before it died: its signed
				// report says how much; the sensor hands it the rest.
				as := req.monitor(id)
				p := as.Provider
				if p == nil || p.Error != "" || p.Ingested != p.Refined {
					t.Fatalf("the restarted provider's report %+v (reasons %v): want ingested == refined", p, as.Reasons)
				}
				if p.Refined < uint64(queued) || p.Refined > uint64(total) {
					t.Fatalf("the restarted provider has %d records queued, though its successful ingests queued %d", p.Refined, queued)
				}
				resumedFrom = int(p.Refined)
				for from := resumedFrom; from < total; from += chunk {
					ing := prov.ingest(stream[from:min(from+chunk, total)])
					p.Refined += uint64(ing.Queued[id])
				}
				queued = int64(p.Refined)
			} else if ferr != "" || ingests != total/chunk {
				t.Fatalf("the feeder stopped after %d ingests: %s", ingests, ferr)
			}
			if queued != int64(total) {
				t.Fatalf("%d records queued in all, want %d", queued, total)
			}

			as := waitInbox(t, req, id, total, deliverBy)
			complete := time.Since(start)
			checkStream(t, id, req.records(id), stream)
			recs := waitSink(t, sink, id, total, deliverBy)
			_, bad := readSink(t, sink)
			if bad > 0 {
				t.Errorf("the sink has %d lines that are not records", bad)
			}
			dups := sinkCoverage(t, "sink", id, recs, total)
			if dups > 0 && !tc.restartsReq {
				t.Errorf("the sink holds %d duplicates, though the requester never restarted", dups)
			}
			p := as.Provider
			if as.Verdict == "violated" || p == nil || p.Acked != uint64(total) || as.Local.Violations != 0 {
				t.Errorf("monitor: verdict %s (reasons %v), report %+v, requester %+v; want %d acknowledged, no violation",
					as.Verdict, as.Reasons, p, as.Local, total)
			}
			var inFlight string
			if len(chunks) < total/chunk {
				inFlight = fmt.Sprintf(", ingest %d of %d in flight", len(chunks)+1, total/chunk)
			}
			var resumed string
			if resumedFrom >= 0 {
				failed := "none failed"
				for _, c := range done {
					if c.r.code != 0 {
						failed = fmt.Sprintf("the ingest of records %d-%d exited %d", c.first, c.first+c.n-1, c.r.code)
					}
				}
				resumed = fmt.Sprintf("; the provider had queued %d records when it died (%s), fed the other %d after the restart",
					resumedFrom, failed, total-resumedFrom)
			}
			t.Logf("%s: fault at %s with %d records in the sink and %d ingests done%s; recovered at %s%s; all %d stored once at %s; "+
				"sink: %d lines, %d duplicates; monitor: verdict %s %v, report acked %d, latency p99 %d ms",
				tc.name, faultAt.Round(time.Millisecond), atFault, len(chunks), inFlight, recovered.Round(time.Millisecond), resumed,
				total, complete.Round(time.Millisecond), len(recs), dups, as.Verdict, as.Reasons, p.Acked, p.LatencyP99)
			// A forwarder saves how far it got after each write of at most 512 records, so a
			// crash repeats at most that many.
			if dups > forwardChunk {
				t.Errorf("the sink repeats %d records after the requester's restart, more than one forwarding round (%d)", dups, forwardChunk)
			}
		})
	}
}

// TestCancelStopsDelivery: while a long stream is being delivered (chunks of 2,000 records
// ingested one after another), one party cancels the SSA. No record is stored at the
// requester later than one second after `ssa cancel` returns, the requester's inbox does not
// grow afterwards, and records ingested after the cancellation are never queued nor
// delivered. Once by the requester, once by the provider.
func TestCancelStopsDelivery(t *testing.T) {
	const (
		chunk     = 2000
		maxChunks = 40
		trigger   = 4000 // records in the sink before the cancellation
		bound     = time.Second
		watch     = 3 * time.Second
	)
	prov := newAgent(t, "provider", "", fastExchange...)
	sink := filepath.Join(t.TempDir(), "siem.jsonl")
	req := newAgent(t, "requester", "", append(fastExchange, withJSONLSink(sink))...)
	prov.offer("provider.yaml")
	sample := sampleEVE(t)
	for i, by := range []string{"requester", "provider"} {
		t.Run("by "+by, func(t *testing.T) {
			req, prov := req.in(t), prov.in(t)
			canceller, other := req, prov
			if by == "provider" {
				canceller, other = prov, req
			}
			id := agree(t, req, prov, requesterTemplate(t, "", "90d"))
			base := streamBase.Add(time.Duration(i) * 24 * time.Hour)
			stream := func(from, n int) []eveRecord { return eveStream(sample, base, from, n, nil) }

			before := sinkLines(sink)
			feed := startFeeder(prov, t.TempDir(), func(k int) []eveRecord {
				if k == maxChunks {
					return nil
				}
				return stream(k*chunk, chunk)
			})
			atCancel := waitSinkLines(t, sink, before+trigger, deliverBy) - before
			asked := time.Now()
			r := canceller.cli("--json", "ssa", "cancel", id, "--wait", "20s")
			cancelled := time.Now()
			close(feed.stop)
			inbox := watchInbox(req, id, watch)
			var v negView
			if r.code != 0 || decode(r.stdout, &v) != nil || v.State != "annulled" {
				t.Fatalf("ssa cancel by the %s: %s", by, r)
			}
			other.waitState(id, "annulled", settle)
			feed.wait(t, 2*cliTimeout)
			chunks, ferr := feed.progress()
			if ferr != "" {
				t.Fatalf("an ingest failed: %s", ferr)
			}
			queued, _ := queuedFor(chunks, id)
			var lateQueued int64
			for _, c := range chunks {
				if c.start.After(cancelled) {
					lateQueued += c.v.Queued[id]
				}
			}
			if lateQueued > 0 {
				t.Errorf("ingests started after the cancellation returned queued %d records for %s", lateQueued, id)
			}
			after := stream(maxChunks*chunk, chunk) // never handed to the feeder
			if ing := prov.ingest(after); len(ing.Queued) != 0 {
				t.Errorf("ingest after the cancellation: %+v, want nothing queued", ing)
			}

			// The requester's inbox, sampled from the moment ssa cancel returned.
			samples := <-inbox
			if len(samples) == 0 {
				t.Fatalf("no reading of the requester's inbox after the cancellation")
			}
			first, final := samples[0], samples[len(samples)-1]
			lastGrowth := first.at
			for k := 1; k < len(samples); k++ {
				if samples[k].last != samples[k-1].last {
					lastGrowth = samples[k].at
				}
			}
			if d := lastGrowth.Sub(cancelled); final.last != first.last && d > bound {
				t.Errorf("the requester's inbox grew from %d to %d records, the last time %s after ssa cancel returned", first.last, final.last, d)
			}

			held := req.records(id)
			checkStream(t, id, held, stream(0, len(held)))
			var lastStored time.Time
			afterTS := map[string]bool{}
			for _, rec := range after {
				afterTS[rec.ts] = true
			}
			for _, rec := range held {
				if rec.Received.After(lastStored) {
					lastStored = rec.Received
				}
				if afterTS[rec.ts()] {
					t.Errorf("record #%d was ingested after the cancellation, yet delivered", rec.Seq)
				}
			}
			if uint64(len(held)) != final.last {
				t.Errorf("the requester lists %d records, its monitor counted %d", len(held), final.last)
			}
			if lag := lastStored.Sub(cancelled); lag > bound {
				t.Errorf("a record was stored %s after ssa cancel returned, want at most %s", lag, bound)
			}
			sunk, _ := readSink(t, sink)
			forwarded := 0
			for _, rec := range sunk {
				if rec.SSAID == id {
					forwarded++
				}
			}
			t.Logf("cancel by the %s with %d records in the sink: ssa cancel took %s; %d records queued by %d ingests, %d delivered; "+
				"last record stored %s after ssa cancel returned (%s after it was called); inbox %d records %s after the return, %d at %s (%d readings); "+
				"%d records ingested afterwards, none queued; the sink has %d of the %d stored",
				by, atCancel, cancelled.Sub(asked).Round(time.Millisecond), queued, len(chunks), len(held),
				lastStored.Sub(cancelled).Round(time.Millisecond), lastStored.Sub(asked).Round(time.Millisecond),
				first.last, first.at.Sub(cancelled).Round(time.Millisecond), final.last, final.at.Sub(cancelled).Round(time.Millisecond),
				len(samples), len(after), forwarded, len(held))
			if forwarded < len(held) {
				t.Errorf("%d of the %d records stored before the cancellation never reached the sink, %s after it", len(held)-forwarded, len(held), time.Since(cancelled).Round(time.Millisecond))
			}
		})
	}
}

// inboxSample is one reading of a requester's inbox.
type inboxSample struct {
	at   time.Time // when the reading returned
	last uint64
}

// watchInbox reads the requester's inbox (monitor) every pollInterval for d, in the
// background, and delivers the readings. It never fails the test itself.
func watchInbox(req *agent, id string, d time.Duration) <-chan []inboxSample {
	out := make(chan []inboxSample, 1)
	args := []string{"--home", req.home, "--json", "monitor", id}
	go func() {
		var samples []inboxSample
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(pollInterval) {
			r := runCLI("", nil, args)
			var as assessmentView
			if (r.code == 0 || r.code == verdictCodes["degraded"] || r.code == verdictCodes["violated"]) && json.Unmarshal([]byte(r.stdout), &as) == nil {
				samples = append(samples, inboxSample{at: time.Now(), last: as.Local.Last})
			}
		}
		out <- samples
	}()
	return out
}
