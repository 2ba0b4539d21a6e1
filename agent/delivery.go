package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The provider's SSP enforcement point, delivery (Appendix I step ⑨): the records queued for
// an SSA go to its requester in order, in signed, numbered batches over
// /ssanet/exchange/1.0.0, only inside the schedule, at least once.

// Delivery tuning.
const (
	batchRecords  = 2048
	batchBytes    = 2 << 20
	retryDelivery = time.Second
	// maxScheduleWait is the longest a delivery loop sleeps waiting for its schedule's start.
	maxScheduleWait = time.Minute
	// deliveryWindow is how many batches may await acknowledgement.
	deliveryWindow = 4
	// deliveryIdle is how long a stream stays open with nothing to send or await.
	deliveryIdle = 10 * time.Second
)

// dialer opens a stream to a peer, finding its addresses first.
type dialer func(ctx context.Context, p peer.ID, proto libp2pprotocol.ID) (network.Stream, error)

// deliverer runs the delivery loops of the provider's runs: at most one per run, and only
// while it has records to send.
type deliverer struct {
	store     *storage.Store
	self      *protocol.Identity
	dial      dialer
	log       *slog.Logger
	now       func() time.Time
	timeout   time.Duration // of each message
	delivered prometheus.Counter
	// heldMethod counts the streams not used because the SSA does not list their method.
	heldMethod prometheus.Counter
	wg         sync.WaitGroup

	mu sync.Mutex
	// held says, per SSA, why its delivery waits: the method of the last stream opened
	// broke the SSA's (method.go). The provider's monitoring report carries it.
	held map[string]string
}

func newDeliverer(st *storage.Store, self *protocol.Identity, dial dialer, log *slog.Logger, now func() time.Time,
	timeout time.Duration, delivered, heldMethod prometheus.Counter) *deliverer {
	return &deliverer{store: st, self: self, dial: dial, log: log, now: now, timeout: timeout, delivered: delivered,
		heldMethod: heldMethod, held: map[string]string{}}
}

// heldWhy says why the delivery of SSA ssaID waits although records may be due, or "".
func (dl *deliverer) heldWhy(ssaID string) string {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.held[ssaID]
}

// hold records why the delivery of ssaID waits ("": it does not), and logs each change.
func (dl *deliverer) hold(run *agreementRun, why string) {
	dl.mu.Lock()
	was := dl.held[run.ssa.ID]
	if why == "" {
		delete(dl.held, run.ssa.ID)
	} else {
		dl.held[run.ssa.ID] = why
	}
	dl.mu.Unlock()
	switch {
	case why == was:
	case why == "":
		dl.log.Info("delivery resumes: the connection's method is one the SSA lists", "ssa", run.ssa.ID, "peer", run.peer)
	default:
		dl.log.Warn("delivery held: the SSA's method does not allow it", "ssa", run.ssa.ID, "peer", run.peer, "reason", why)
	}
}

// wake makes sure the delivery loop of a provider's run is going: it kicks the running loop,
// or starts one. A run that was halted gets none.
func (dl *deliverer) wake(run *agreementRun) {
	run.loopMu.Lock()
	defer run.loopMu.Unlock()
	switch {
	case run.ctx.Err() != nil:
	case run.looping != nil:
		select {
		case run.kick <- struct{}{}:
		default:
		}
	default:
		done := make(chan struct{})
		run.looping = done
		dl.wg.Add(1)
		go func() {
			defer dl.wg.Done()
			dl.loop(run.ctx, run)
			run.loopMu.Lock()
			if run.looping == done { // not parked: it failed or was halted
				run.looping = nil
			}
			run.loopMu.Unlock()
			close(done)
		}()
	}
}

// wait waits for every loop to end; they end when their runs are halted (manager.close).
func (dl *deliverer) wait() { dl.wg.Wait() }

// loop is step ⑨ for one SSA: it sends the queued records in order, in signed batches over
// one stream, with at most deliveryWindow batches awaiting acknowledgement (so a slow
// requester holds back the provider's disk queue, not its memory), only inside the schedule.
// After a failure it starts again from the last acknowledged record; the requester skips what
// it already holds. It ends when the SSA stops being in force, or when there is nothing to
// send and nothing to wait for (wake starts it again).
func (dl *deliverer) loop(ctx context.Context, run *agreementRun) {
	defer func() {
		if ctx.Err() != nil { // no longer in force: nothing is held
			dl.mu.Lock()
			delete(dl.held, run.ssa.ID)
			dl.mu.Unlock()
		}
	}()
	d := run.delivery
	if d == nil {
		st, err := dl.store.OutboxState(run.ssa.ID)
		if err != nil {
			dl.log.Error("read delivery state", "ssa", run.ssa.ID, "err", err)
			return // the next wake tries again
		}
		d = &delivery{dl: dl, run: run, acked: st.Acked}
		run.delivery = d
	}
	for ctx.Err() == nil {
		err := d.overStream(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			dl.log.Debug("delivery interrupted; will resume", "ssa", run.ssa.ID, "err", err)
		}
		if dur := d.retry(err); dur > 0 {
			if !d.wait(ctx, dur) {
				return
			}
		} else if run.park() {
			return
		}
	}
}

// delivery is the state of one SSA's delivery loop (owned by its goroutine).
type delivery struct {
	dl    *deliverer
	run   *agreementRun
	acked uint64
}

// retry is how long the loop waits, after a stream that ended with err, before it tries
// again without new records: retryDelivery after a failure, until the schedule starts
// (maxScheduleWait at most, so that a change of the wall clock is seen) before it does;
// otherwise 0: it waits for new records only, without a goroutine, so an idle SSA costs
// nothing.
func (d *delivery) retry(err error) time.Duration {
	now := d.dl.now()
	switch start := d.run.ssa.Schedule.Start; {
	case err != nil:
		return retryDelivery
	case start != 0 && now.Before(start.Std()):
		return min(start.Std().Sub(now), maxScheduleWait)
	}
	return 0
}

// wait waits for new records (a kick) or for dur; it reports false when ctx ends.
func (d *delivery) wait(ctx context.Context, dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-d.run.kick:
	case <-t.C:
	}
	return true
}

// overStream delivers over one stream until there is nothing to send for a while, the stream
// fails, or ctx ends.
func (d *delivery) overStream(ctx context.Context) error {
	if due, err := d.due(); !due {
		return err
	}
	st, err := d.open(ctx)
	if err != nil {
		return err
	}
	acks := readAcks(st)
	defer acks.close()
	w := window{sent: d.acked}
	idle := time.NewTimer(deliveryIdle)
	defer idle.Stop()
	for {
		if err := d.fill(st, &w); err != nil {
			return err
		}
		if err := st.SetReadDeadline(time.Now().Add(d.dl.timeout)); err != nil {
			return fmt.Errorf("set the acknowledgement deadline: %w", err)
		}
		if end, err := d.await(ctx, acks, &w, idle.C); end {
			return err
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(deliveryIdle)
	}
}

// due reports whether a stream has work to carry: the schedule is open and records wait.
func (d *delivery) due() (bool, error) {
	if !d.run.inSchedule(d.dl.now()) {
		return false, nil
	}
	recs, err := d.dl.store.Pending(d.run.ssa.ID, d.acked, 1, 1)
	return err == nil && len(recs) > 0, err
}

// errMethod means a delivery stream's protocol or connection security is not one the SSA
// lists: nothing is sent over it.
var errMethod = errors.New("agent: the stream's method is not the SSA's")

// open opens the exchange stream to the requester, over a method the SSA lists: a stream
// whose protocol or connection security it does not list is reset unused (errMethod), and
// the delivery waits.
func (d *delivery) open(ctx context.Context) (network.Stream, error) {
	octx, cancel := context.WithTimeout(ctx, d.dl.timeout)
	defer cancel()
	st, err := d.dl.dial(octx, d.run.peer, ProtocolExchange)
	if err != nil {
		return nil, fmt.Errorf("open exchange stream: %w", err)
	}
	if why, security := methodBreach(d.run.ssa.Method, st.Protocol(), connState(st.Conn())); why != "" {
		if security {
			why += "; a connection uses the first security of its dialler's config key security that both agents have: list only agreed ones there on either agent"
		}
		st.Reset()
		d.dl.heldMethod.Inc()
		d.dl.hold(d.run, why)
		return nil, fmt.Errorf("%w: %s", errMethod, why)
	}
	d.dl.hold(d.run, "")
	return st, nil
}

// window is what one stream has sent and not yet had acknowledged.
type window struct {
	sent     uint64   // the last record sent
	inflight []uint64 // the last record of each unacknowledged batch
}

// fill sends batches while the window has room, records wait and the schedule is open.
func (d *delivery) fill(st network.Stream, w *window) error {
	for len(w.inflight) < deliveryWindow && d.run.inSchedule(d.dl.now()) {
		recs, err := d.dl.store.Pending(d.run.ssa.ID, w.sent, batchRecords, batchBytesOn(st.Conn()))
		if err != nil || len(recs) == 0 {
			return err
		}
		last, err := d.send(st, recs)
		if err != nil {
			return err
		}
		w.inflight, w.sent = append(w.inflight, last), last
	}
	return nil
}

// await waits for one event on the stream: an acknowledgement, new records, the end of ctx
// or of the idle time. It reports whether the stream's delivery ends, and why.
func (d *delivery) await(ctx context.Context, acks *ackReader, w *window, idle <-chan time.Time) (bool, error) {
	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case err := <-acks.err:
		return true, fmt.Errorf("read acknowledgement: %w", err)
	case ack := <-acks.acks:
		if err := d.take(ack, w); err != nil {
			return true, err
		}
	case <-d.run.kick:
	case <-idle:
		if len(w.inflight) == 0 {
			return true, nil // nothing to send for a while: let the stream go
		}
	}
	return false, nil
}

// take applies an acknowledgement to the window.
func (d *delivery) take(ack *protocol.BatchAck, w *window) error {
	if ack.Error != "" {
		return fmt.Errorf("the requester refused the batch: %s", ack.Error)
	}
	if err := d.acknowledge(ack.Last); err != nil {
		return err
	}
	for len(w.inflight) > 0 && w.inflight[0] <= ack.Last {
		w.inflight = w.inflight[1:]
	}
	if ack.Last < w.sent && len(w.inflight) == 0 {
		w.sent = ack.Last // the requester lacks records: send again from there
	}
	return nil
}

// ackReader reads a stream's acknowledgements in its own goroutine, owned by overStream.
type ackReader struct {
	st         network.Stream
	acks       chan *protocol.BatchAck
	err        chan error
	stop, done chan struct{}
}

func readAcks(st network.Stream) *ackReader {
	r := &ackReader{st: st, acks: make(chan *protocol.BatchAck, deliveryWindow), err: make(chan error, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *ackReader) run() {
	defer close(r.done)
	br := bufio.NewReader(r.st)
	for {
		raw, err := readFrame(br, protocol.MaxMessageSize)
		var ack *protocol.BatchAck
		if err == nil {
			ack, err = protocol.DecodeBatchAck(raw)
		}
		if err != nil {
			r.err <- err
			return
		}
		select {
		case r.acks <- ack:
		case <-r.stop:
			return
		}
	}
}

// close resets the stream, which ends the reader's read, and waits for the reader.
func (r *ackReader) close() {
	close(r.stop)
	r.st.Reset()
	<-r.done
}

// send signs recs (up to a change of format) as one batch and writes it.
func (d *delivery) send(st network.Stream, recs []storage.QueuedRecord) (uint64, error) {
	run := d.run
	tag := recs[0].Data[0]
	b := &protocol.Batch{SSAID: run.ssa.ID, SSPHash: run.ssp.Hash(), First: recs[0].Seq, Sent: d.dl.now().UnixMilli()}
	b.Format, _ = run.untag(recs[0].Data)
	mark := run.ssp.Marking()
	b.TLP, b.Marking = mark.TLP, mark.MarkingRef
	for _, r := range recs {
		if r.Data[0] != tag {
			break // the next batch carries the next format
		}
		_, rec := run.untag(r.Data)
		b.Records = append(b.Records, rec)
	}
	raw, err := protocol.SealBatch(d.dl.self, b)
	if err != nil {
		return 0, err
	}
	if err := st.SetWriteDeadline(time.Now().Add(d.dl.timeout)); err != nil {
		return 0, fmt.Errorf("set the batch's write deadline: %w", err)
	}
	if err := writeFrame(st, raw); err != nil {
		return 0, err
	}
	if !run.inSchedule(d.dl.now()) {
		run.sentOutside.Add(1)
	}
	if err := d.dl.store.MarkSent(run.ssa.ID, b.Last()); err != nil {
		d.dl.log.Debug("record sent counter", "ssa", run.ssa.ID, "err", err)
	}
	return b.Last(), nil
}

// acknowledge records durably that the requester holds every record up to last.
func (d *delivery) acknowledge(last uint64) error {
	if last <= d.acked {
		return nil
	}
	if err := d.dl.store.Ack(d.run.ssa.ID, last); err != nil {
		return fmt.Errorf("record acknowledgement: %w", err)
	}
	d.run.acknowledged(last, d.dl.now())
	d.run.backlog.Add(-int64(last - d.acked))
	d.dl.delivered.Add(float64(last - d.acked))
	d.acked = last
	return nil
}
