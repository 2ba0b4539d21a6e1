package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"slices"
	"testing"
	"time"
)

// benchFixture is what every benchmark shares: two fixed identities, the example request and
// the proposal the provider makes from it, and one sealed proposal message.
type benchFixture struct {
	rid, pid *Identity
	nid      []byte
	req      *SSA // the requester's template
	prop     *SSA // the provider's answer (Meet's result, computed once: the meet is policy, not protocol)
	propEnv  *Envelope
	priv     ed25519.PrivateKey // the provider's raw key, for the floor
}

func newBenchFixture(b *testing.B) *benchFixture {
	b.Helper()
	f := &benchFixture{rid: testIdentity(b, 1), pid: testIdentity(b, 2), nid: testNID(7), req: exampleRequest(b, t0)}
	pr := newPair(b)
	out := pr.step(pr.r, Start{f.req})
	pr.deliver(pr.p, out.Send)
	prop, conflicts := Meet(pr.p.Pending(), pr.offer, FromTime(t0))
	if conflicts != nil {
		b.Fatalf("meet: %v", conflicts)
	}
	f.prop = prop
	f.propEnv = pr.step(pr.p, Propose{prop}).Send
	f.priv = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize)) // testIdentity(2)'s key
	return f
}

// negotiate runs the success scenario in memory, both roles, every message sealed by its
// sender and opened from its bytes by its receiver: request, proposal, acceptance,
// confirmation. Run i has its own negotiation ID, so every run signs and verifies other
// bytes: Ed25519 verification takes a time that depends on the signature, and a benchmark
// that verified the same four signatures again and again would measure those four.
func (f *benchFixture) negotiate(b *testing.B, i uint64) {
	nid := bytes.Clone(f.nid)
	binary.BigEndian.PutUint64(nid[8:], i)
	r, err := NewRequester(f.rid, f.pid.PeerID(), nid)
	if err != nil {
		b.Fatal(err)
	}
	p := NewProvider(f.pid)
	send := func(n *Negotiation, ev Event) *Envelope {
		out, err := n.Step(t0, ev)
		if err != nil {
			b.Fatalf("%s %T: %v", n.Role(), ev, err)
		}
		return out.Send
	}
	recv := func(n *Negotiation, e *Envelope) *Envelope {
		env, err := Open(e.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		return send(n, Receive{env})
	}
	recv(p, send(r, Start{f.req}))
	recv(r, send(p, Propose{f.prop}))
	recv(r, recv(p, send(r, Accept{})))
	if r.State() != StateApproved || p.State() != StateApproved {
		b.Fatalf("states %s/%s", r.State(), p.State())
	}
}

// floor is the least any signed four-message exchange of this SSA costs: four Ed25519
// signatures, four verifications, four CBOR encodings and four decodings. As in negotiate,
// run i signs other bytes than the other runs (the SSA's date differs).
func (f *benchFixture) floor(b *testing.B, i uint64) {
	pub := f.priv.Public().(ed25519.PublicKey)
	for k := range uint64(4) {
		s := *f.prop
		s.Date = Time(4*i + k + 1)
		enc, err := encMode.Marshal(&s)
		if err != nil {
			b.Fatal(err)
		}
		var d SSA
		if err := decMode.Unmarshal(enc, &d); err != nil {
			b.Fatal(err)
		}
		sig := ed25519.Sign(f.priv, enc)
		if !ed25519.Verify(pub, enc, sig) {
			b.Fatal("floor: signature does not verify")
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	f := newBenchFixture(b)
	h := f.propEnv.Header
	for b.Loop() {
		if _, err := Seal(f.pid, h, f.prop); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "seals/s")
}

func BenchmarkOpen(b *testing.B) {
	f := newBenchFixture(b)
	raw := f.propEnv.Bytes()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Open(raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "opens/s")
}

func BenchmarkEncodeSSA(b *testing.B) {
	f := newBenchFixture(b)
	enc, err := f.prop.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := f.prop.Encode(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "encodes/s")
}

func BenchmarkDecodeSSA(b *testing.B) {
	f := newBenchFixture(b)
	enc, err := f.prop.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := DecodeSSA(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decodes/s")
}

// BenchmarkNegotiation measures a whole negotiation in memory and, in the same run, the floor
// it is compared with.
func BenchmarkNegotiation(b *testing.B) {
	f := newBenchFixture(b)
	b.Run("protocol", func(b *testing.B) {
		for i := uint64(0); b.Loop(); i++ {
			f.negotiate(b, i)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "negotiations/s")
	})
	b.Run("floor", func(b *testing.B) {
		for i := uint64(0); b.Loop(); i++ {
			f.floor(b, i)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

// BenchmarkNegotiationOverhead runs a negotiation and the floor alternately, so that both see
// the same machine load, and reports how much slower the negotiation is than the floor. The
// figures are medians of the per-iteration times: on a shared machine, a burst of load hits a
// few iterations of either kind, not the comparison.
func BenchmarkNegotiationOverhead(b *testing.B) {
	f := newBenchFixture(b)
	var neg, flo []time.Duration
	for i := uint64(0); b.Loop(); i++ {
		start := time.Now()
		f.negotiate(b, i)
		mid := time.Now()
		f.floor(b, i)
		neg = append(neg, mid.Sub(start))
		flo = append(flo, time.Since(mid))
	}
	n, fl := median(neg), median(flo)
	b.ReportMetric(float64(n.Nanoseconds()), "negotiation_ns")
	b.ReportMetric(float64(fl.Nanoseconds()), "floor_ns")
	b.ReportMetric((float64(n)/float64(fl)-1)*100, "overhead_%")
}

func median(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[len(d)/2]
}
