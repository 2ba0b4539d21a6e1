package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	ssanet "github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// The cheating provider: this test process takes the place of a provider agent after a real
// negotiation, and delivers what no agent would, through the wire protocol alone.

// cheatBatch is how many records the cheating provider signs in one batch.
const cheatBatch = 100

// cheater is a provider agent's identity on an in-test libp2p host, connected to a requester.
type cheater struct {
	t    *testing.T
	self *protocol.Identity
	host host.Host
	req  peer.ID
}

// impersonate stops prov's daemon and starts, on loopback, a libp2p host with prov's identity
// key (read from its home) and opts (libp2p's defaults otherwise), connected to req. The host
// is closed with the test.
func impersonate(t *testing.T, prov, req *agent, opts ...libp2p.Option) *cheater {
	t.Helper()
	prov.stop()
	key, err := ssanet.LoadKey(prov.home)
	if err != nil {
		t.Fatal(err)
	}
	self, err := protocol.NewIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(append([]libp2p.Option{libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	info, err := peer.AddrInfoFromString(req.addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, *info); err != nil {
		t.Fatalf("connect to the requester as the provider: %v", err)
	}
	return &cheater{t: t, self: self, host: h, req: info.ID}
}

// deliverRaw sends recs, unrefined, for the SSA ssaID (exported by the requester) as the
// agent's delivery does: numbered from 1 in batches signed with the provider's key and
// labelled with the agreed SSP, each acknowledged by the requester before the next goes out.
func (c *cheater) deliverRaw(ssaID string, agreed []byte, recs []eveRecord) {
	c.t.Helper()
	ssp, st := c.openExchange(agreed)
	defer st.Close()
	acks := bufio.NewReader(st)
	mark := ssp.Marking()
	for first := 0; first < len(recs); first += cheatBatch {
		b := &protocol.Batch{SSAID: ssaID, SSPHash: ssp.Hash(), First: uint64(first) + 1, Format: protocol.FormatEVE,
			TLP: mark.TLP, Marking: mark.MarkingRef, Sent: time.Now().UnixMilli()}
		for _, r := range recs[first:min(first+cheatBatch, len(recs))] {
			b.Records = append(b.Records, r.line)
		}
		c.send(st, acks, b)
	}
	c.claimCompliance(ssp.Hash(), uint64(len(recs)))
}

// openExchange compiles the agreed SSP (its hash and marking need no key) and opens an
// exchange stream to the requester with the delivery deadline set; the caller closes it.
func (c *cheater) openExchange(agreed []byte) (*policy.SSP, network.Stream) {
	c.t.Helper()
	ssa, err := protocol.DecodeSSA(agreed)
	if err != nil {
		c.t.Fatal(err)
	}
	ssp, err := policy.Compile(ssa, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliverBy)
	defer cancel() // the context bounds the opening only, not the stream
	st, err := c.host.NewStream(ctx, c.req, ssanet.ProtocolExchange)
	if err != nil {
		c.t.Fatalf("open %s: %v", ssanet.ProtocolExchange, err)
	}
	st.SetDeadline(time.Now().Add(deliverBy))
	return ssp, st
}

// claimCompliance answers the requester's report requests (step ⑬) as a provider that hides
// what it did: every record refined under the agreed SSP, sent and acknowledged.
func (c *cheater) claimCompliance(sspHash string, n uint64) {
	c.host.SetStreamHandler(ssanet.ProtocolMonitor, func(st network.Stream) {
		st.SetDeadline(time.Now().Add(10 * time.Second))
		body, err := readFrame(bufio.NewReader(st))
		var req *protocol.ReportRequest
		if err == nil {
			req, err = protocol.DecodeReportRequest(body)
		}
		var raw []byte
		if err == nil {
			raw, err = protocol.SealReport(c.self, &protocol.Report{SSAID: req.SSAID, SSPHash: sspHash, Time: time.Now().UnixMilli(),
				Ingested: n, Refined: n, Sent: n, Acked: n, InSchedule: true})
		}
		if err == nil {
			err = writeFrame(st, raw)
		}
		if err != nil {
			st.Reset() // the requester's monitor says the provider did not report
			return
		}
		st.Close()
	})
}

// send seals a batch, writes it as one length-prefixed frame, and checks its acknowledgement.
func (c *cheater) send(st network.Stream, acks *bufio.Reader, b *protocol.Batch) {
	c.t.Helper()
	raw, err := protocol.SealBatch(c.self, b)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := writeFrame(st, raw); err != nil {
		c.t.Fatalf("send the batch from record %d: %v", b.First, err)
	}
	body, err := readFrame(acks)
	if err != nil {
		c.t.Fatalf("acknowledgement of the batch from record %d: %v", b.First, err)
	}
	ack, err := protocol.DecodeBatchAck(body)
	if err != nil {
		c.t.Fatal(err)
	}
	if ack.Error != "" || ack.Last != b.Last() {
		c.t.Fatalf("the requester acknowledged the batch of records %d-%d with last %d, error %q", b.First, b.Last(), ack.Last, ack.Error)
	}
}

// writeFrame writes b as one frame: its length as an unsigned varint, then b.
func writeFrame(w io.Writer, b []byte) error {
	_, err := w.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...))
	return err
}

// readFrame reads one length-prefixed frame, of at most a protocol message.
func readFrame(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > protocol.MaxMessageSize {
		return nil, fmt.Errorf("frame of %d bytes announced", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}
