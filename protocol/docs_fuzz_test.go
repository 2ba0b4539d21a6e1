package protocol

import (
	"bytes"
	"testing"
	"time"
)

// seedDocs returns valid signed documents of every kind, signed by testIdentity(t, 2).
func seedDocs(f *testing.F) (offers, batch, report []byte) {
	id := testIdentity(f, 2)
	o := exampleOffer(f, t0)
	o.Terms.Participants.Provider.PeerID = id.PeerID().String()
	offers, err := SealOffers(id, []*Offer{o}, t0, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	batch, err = SealBatch(id, &Batch{SSAID: "ssa-1", SSPHash: "00", First: 1, Format: FormatEVE,
		Records: [][]byte{[]byte(`{"src_ip":"1.1.1.0"}`), []byte(`{}`)}, Sent: t0.UnixMilli()})
	if err != nil {
		f.Fatal(err)
	}
	report, err = SealReport(id, &Report{SSAID: "ssa-1", SSPHash: "00", Time: t0.UnixMilli(), Ingested: 3, Refined: 2, Acked: 2})
	if err != nil {
		f.Fatal(err)
	}
	return offers, batch, report
}

// FuzzSignedDocs feeds every signed-document decoder: none may panic, and a document that
// opens must be the one signed (re-sealing the decoded value gives the same bytes: Ed25519
// signatures are deterministic).
func FuzzSignedDocs(f *testing.F) {
	offers, batch, report := seedDocs(f)
	for _, b := range [][]byte{offers, batch, report, {0xd2}, nil} {
		f.Add(b)
	}
	id := testIdentity(f, 2)
	f.Fuzz(func(t *testing.T, data []byte) {
		if os, err := OpenOffers(data, id.PeerID(), t0); err == nil {
			if _, err := SealOffers(id, os, t0, time.Hour); err != nil {
				t.Fatalf("opened offers do not seal again: %v", err)
			}
		}
		if b, err := OpenBatch(data, id.PeerID()); err == nil {
			if uint64(len(b.Records)) != b.Count || !bytes.Equal(recordsDigest(b.Records), b.Digest) {
				t.Fatal("an opened batch does not match its digest")
			}
		}
		if r, err := OpenReport(data, id.PeerID()); err == nil {
			again, err := SealReport(id, r)
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("report re-sealed differently: %v", err)
			}
		}
		if a, err := DecodeBatchAck(data); err == nil {
			if again, err := a.Encode(); err != nil || !bytes.Equal(again, data) {
				t.Fatalf("ack re-encoded differently: %v", err)
			}
		}
		if r, err := DecodeReportRequest(data); err == nil {
			if again, err := r.Encode(); err != nil || !bytes.Equal(again, data) {
				t.Fatalf("report request re-encoded differently: %v", err)
			}
		}
	})
}

func TestSignedDocsRefuseOtherSigners(t *testing.T) {
	other := testIdentity(t, 3).PeerID()
	id := testIdentity(t, 2)
	o := exampleOffer(t, t0)
	o.Terms.Participants.Provider.PeerID = id.PeerID().String()
	offers, _ := SealOffers(id, []*Offer{o}, t0, time.Hour)
	batch, _ := SealBatch(id, &Batch{SSAID: "s", First: 1, Format: FormatEVE, Records: [][]byte{[]byte("x")}, Sent: 1})
	report, _ := SealReport(id, &Report{SSAID: "s"})
	if _, err := OpenOffers(offers, other, t0); err == nil {
		t.Error("offers signed by another peer opened")
	}
	if _, err := OpenOffers(offers, id.PeerID(), t0.Add(2*time.Hour)); err == nil {
		t.Error("stale offers opened")
	}
	if _, err := OpenBatch(batch, other); err == nil {
		t.Error("batch signed by another peer opened")
	}
	if _, err := OpenReport(report, other); err == nil {
		t.Error("report signed by another peer opened")
	}
	// A record changed after signing breaks the digest.
	tampered := bytes.Replace(batch, []byte("x"), []byte("y"), 1)
	if _, err := OpenBatch(tampered, id.PeerID()); err == nil {
		t.Error("a batch with a changed record opened")
	}
	// A signature made for one kind of document never passes for another.
	if _, err := OpenReport(offers, id.PeerID()); err == nil {
		t.Error("an offer list opened as a report")
	}
}
