package protocol

import (
	"bytes"
	"crypto/ed25519"
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
// confirmation.
func (f *benchFixture) negotiate(b *testing.B) {
	r, err := NewRequester(f.rid, f.pid.PeerID(), f.nid)
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
// signatures, four verifications, four CBOR encodings and four decodings.
func (f *benchFixture) floor(b *testing.B) {
	pub := f.priv.Public().(ed25519.PublicKey)
	for range 4 {
		enc, err := encMode.Marshal(f.prop)
		if err != nil {
			b.Fatal(err)
		}
		var s SSA
		if err := decMode.Unmarshal(enc, &s); err != nil {
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
		for b.Loop() {
			f.negotiate(b)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "negotiations/s")
	})
	b.Run("floor", func(b *testing.B) {
		for b.Loop() {
			f.floor(b)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

// BenchmarkNegotiationOverhead runs a negotiation and the floor alternately, so that both see
// the same machine load, and reports how much slower the negotiation is than the floor.
func BenchmarkNegotiationOverhead(b *testing.B) {
	f := newBenchFixture(b)
	var neg, flo time.Duration
	for b.Loop() {
		start := time.Now()
		f.negotiate(b)
		mid := time.Now()
		f.floor(b)
		neg += mid.Sub(start)
		flo += time.Since(mid)
	}
	b.ReportMetric(float64(neg.Nanoseconds())/float64(b.N), "negotiation_ns")
	b.ReportMetric(float64(flo.Nanoseconds())/float64(b.N), "floor_ns")
	b.ReportMetric((float64(neg)/float64(flo)-1)*100, "overhead_%")
}
