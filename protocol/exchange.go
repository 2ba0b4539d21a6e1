package protocol

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The Exchange phase (Appendix I steps ⑨–⑩) and SSA monitoring (steps ⑫–⑬).

// Batch is a run of refined records delivered under an SSA, signed by the provider. Records
// are numbered from First, consecutively, per SSA; the batch is bound to the SSA and to the
// hash of the SSP that refined it, and carries the TLP marking of the SSA's handling policy.
type Batch struct {
	SSAID   string   `cbor:"1,keyasint"`
	SSPHash string   `cbor:"2,keyasint"`
	First   uint64   `cbor:"3,keyasint"`
	Format  string   `cbor:"4,keyasint"`
	Records [][]byte `cbor:"5,keyasint"`
	// TLP is the handling label and Marking its STIX 2.1 TLP 2.0 marking-definition ID.
	TLP     string `cbor:"6,keyasint,omitempty"`
	Marking string `cbor:"7,keyasint,omitempty"`
	// Sent is when the provider sent the batch, in milliseconds since the Unix epoch.
	Sent int64 `cbor:"8,keyasint"`
}

// Last is the sequence number of the batch's last record.
func (b *Batch) Last() uint64 { return b.First + uint64(len(b.Records)) - 1 }

// SealBatch signs a batch.
func SealBatch(id *Identity, b *Batch) ([]byte, error) {
	if len(b.Records) == 0 || b.First == 0 {
		return nil, fmt.Errorf("protocol: a batch holds at least one record, numbered from 1")
	}
	return sealDoc(id, docBatch, b)
}

// OpenBatch verifies a batch signed by provider.
func OpenBatch(raw []byte, provider peer.ID) (*Batch, error) {
	var b Batch
	if err := openDoc(raw, provider, docBatch, &b); err != nil {
		return nil, err
	}
	if len(b.Records) == 0 || b.First == 0 {
		return nil, fmt.Errorf("%w: empty batch or record number 0", ErrMalformed)
	}
	return &b, nil
}

// BatchAck is the requester's answer to a batch: it holds every record up to Last. A
// requester that refuses the batch says why in Error (and the provider stops sending).
type BatchAck struct {
	SSAID string `cbor:"1,keyasint"`
	Last  uint64 `cbor:"2,keyasint"`
	Error string `cbor:"3,keyasint,omitempty"`
}

// Encode returns the canonical encoding of the ack.
func (a *BatchAck) Encode() ([]byte, error) { return marshal(a) }

// DecodeBatchAck decodes an ack strictly.
func DecodeBatchAck(b []byte) (*BatchAck, error) {
	var a BatchAck
	if err := unmarshalCanonical(b, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// ReportRequest asks a provider for the fulfilment state of an SSA (step ⑫).
type ReportRequest struct {
	SSAID string `cbor:"1,keyasint"`
}

// Encode returns the canonical encoding of the request.
func (r *ReportRequest) Encode() ([]byte, error) { return marshal(r) }

// DecodeReportRequest decodes a report request strictly.
func DecodeReportRequest(b []byte) (*ReportRequest, error) {
	var r ReportRequest
	if err := unmarshalCanonical(b, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Report is a provider's signed account of how it fulfils an SSA (step ⑬). Latencies are
// from enqueueing a refined record to the requester's acknowledgement, in milliseconds.
type Report struct {
	SSAID    string `cbor:"1,keyasint"`
	SSPHash  string `cbor:"2,keyasint"`
	Time     int64  `cbor:"3,keyasint"` // when the report was made, ms since the epoch
	Ingested uint64 `cbor:"4,keyasint"`
	Refined  uint64 `cbor:"5,keyasint"`
	Dropped  uint64 `cbor:"6,keyasint"`
	Sent     uint64 `cbor:"7,keyasint"`
	Acked    uint64 `cbor:"8,keyasint"`
	// LatencyP50, P95 and P99 are delivery latency percentiles over recent batches.
	LatencyP50 uint64 `cbor:"9,keyasint"`
	LatencyP95 uint64 `cbor:"10,keyasint"`
	LatencyP99 uint64 `cbor:"11,keyasint"`
	// InSchedule says whether the report was made inside the SSA's schedule;
	// SentOutside counts batches sent outside it (which must be zero).
	InSchedule  bool   `cbor:"12,keyasint"`
	SentOutside uint64 `cbor:"13,keyasint"`
	// Error is set when the provider has no such SSA in force.
	Error string `cbor:"14,keyasint,omitempty"`
}

// SealReport signs a report.
func SealReport(id *Identity, r *Report) ([]byte, error) { return sealDoc(id, docReport, r) }

// OpenReport verifies a report signed by provider.
func OpenReport(raw []byte, provider peer.ID) (*Report, error) {
	var r Report
	if err := openDoc(raw, provider, docReport, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
