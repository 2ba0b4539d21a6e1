package agent

import (
	"bufio"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ssanet/ssanet/protocol"
)

const bareProtocol = "/ssanet/bench-bare/1.0.0"

// bareServer answers two signed messages per stream with two signed messages: the building
// block of a negotiation with no state machine and no storage.
func bareServer(id *protocol.Identity, ssa *protocol.SSA) network.StreamHandler {
	return func(st network.Stream) {
		defer st.Close()
		r := bufio.NewReader(st)
		for _, t := range []protocol.MsgType{protocol.MsgProposal, protocol.MsgConfirmation} {
			raw, err := readFrame(r, protocol.MaxMessageSize)
			if err != nil {
				st.Reset()
				return
			}
			in, err := protocol.Open(raw)
			if err != nil {
				st.Reset()
				return
			}
			out, err := protocol.Seal(id, protocol.Header{Type: t, Negotiation: in.Header.Negotiation,
				ID: in.Header.ID, Time: time.Now().UnixMilli(), Prev: in.Hash()}, ssa)
			if err != nil || writeFrame(st, out.Bytes()) != nil {
				st.Reset()
				return
			}
		}
	}
}

// bareNegotiation sends two signed messages on one stream and reads two answers.
func bareNegotiation(ctx context.Context, from, to *Agent, ssa *protocol.SSA, seq uint64) error {
	st, err := from.host.NewStream(ctx, to.ID(), bareProtocol)
	if err != nil {
		return err
	}
	defer st.Close()
	r := bufio.NewReader(st)
	nid := []byte(fmt.Sprintf("%016d", seq))
	var prev []byte
	for _, t := range []protocol.MsgType{protocol.MsgRequest, protocol.MsgAcceptance} {
		env, err := protocol.Seal(from.self, protocol.Header{Type: t, Negotiation: nid, ID: nid,
			Time: time.Now().UnixMilli(), Prev: prev}, ssa)
		if err != nil {
			return err
		}
		if err := writeFrame(st, env.Bytes()); err != nil {
			return err
		}
		raw, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			return err
		}
		in, err := protocol.Open(raw)
		if err != nil {
			return err
		}
		prev = in.Hash()
	}
	return nil
}

// benchPair is a provider and a requester on loopback with durable storage.
func benchPair(b *testing.B) (prov, req *Agent, tmpl *protocol.SSA) {
	// The benchmarks agree thousands of SSAs between one pair: far past a sensor's bound.
	prov = newTestAgent(b, "provider", func(c *Config) { c.MaxAgreementsPerPeer = 1 << 30 })
	req = newTestAgent(b, "requester", nil)
	o, err := protocol.ParseOfferYAML(protocol.ExampleProvider, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := prov.store.PutOffer(o); err != nil {
		b.Fatal(err)
	}
	tmpl, err = protocol.ParseSSAYAML(protocol.ExampleRequester, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	prov.host.SetStreamHandler(bareProtocol, bareServer(prov.self, tmpl))
	if err := req.host.Connect(context.Background(), addrInfo(prov)); err != nil {
		b.Fatal(err)
	}
	return prov, req, tmpl
}

// runConcurrent does n negotiations with c concurrent workers and returns how long they took.
func runConcurrent(b *testing.B, n, c int, one func(ctx context.Context, seq uint64) error) time.Duration {
	var next atomic.Uint64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq := next.Add(1)
				if seq > uint64(n) {
					return
				}
				if err := one(context.Background(), seq); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkNegotiation measures, in one run, negotiations per second over libp2p on
// loopback with durable storage (1 and 16 concurrent negotiators) and the bare building
// block (four signed messages over one stream, no state machine, no storage, 16 concurrent),
// and reports the ratio of the agent at 16 to the bare figure. Both are warmed up first, and
// the bare exchange and the agent at 16 take turns (two rounds each), so that a change of
// the machine's load during the run weighs on both alike.
func BenchmarkNegotiation(b *testing.B) {
	prov, req, tmpl := benchPair(b)
	var seq atomic.Uint64 // bare negotiation IDs, unique across rounds
	bare := func(ctx context.Context, _ uint64) error {
		return bareNegotiation(ctx, req, prov, tmpl, seq.Add(1))
	}
	full := func(ctx context.Context, _ uint64) error {
		rec, err := req.Request(ctx, addrInfo(prov), tmpl)
		if err == nil && rec.State != protocol.StateApproved {
			err = fmt.Errorf("negotiation ended %s", rec.State)
		}
		return err
	}
	n := max(b.N, 200)
	runConcurrent(b, 50, 16, bare)
	runConcurrent(b, 50, 16, full)
	b.ResetTimer()
	var bareTime, fullTime time.Duration
	for range 2 {
		bareTime += runConcurrent(b, n/2, 16, bare)
		fullTime += runConcurrent(b, n/2, 16, full)
	}
	oneTime := runConcurrent(b, n/4, 1, full)
	rate := func(count int, d time.Duration) float64 { return float64(count) / d.Seconds() }
	bareRate, sixteen := rate(2*(n/2), bareTime), rate(2*(n/2), fullTime)
	b.ReportMetric(bareRate, "bare-neg/s")
	b.ReportMetric(rate(n/4, oneTime), "agent-c1-neg/s")
	b.ReportMetric(sixteen, "agent-c16-neg/s")
	b.ReportMetric(100*sixteen/bareRate, "c16-%-of-bare")
}
