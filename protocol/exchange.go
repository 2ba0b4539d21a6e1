package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The Exchange phase (Appendix I steps ⑨–⑩) and SSA monitoring (steps ⑫–⑬).

// Batch is a run of refined records delivered under an SSA, signed by the provider. Records
// are numbered from First, consecutively, per SSA; the batch is bound to the SSA and to the
// hash of the SSP that refined it, and carries the TLP marking of the SSA's handling policy.
//
// On the wire the signature covers the batch's header, whose Digest is the SHA-256 of the
// records (each preceded by its length as an unsigned varint): one signature per batch costs
// the same whatever the records weigh, and the records are hashed once, not copied into the
// signed structure.
type Batch struct {
	SSAID   string `cbor:"1,keyasint"`
	SSPHash string `cbor:"2,keyasint"`
	First   uint64 `cbor:"3,keyasint"`
	Format  string `cbor:"4,keyasint"`
	Count   uint64 `cbor:"5,keyasint"`
	// TLP is the handling label and Marking its STIX 2.1 TLP 2.0 marking-definition ID.
	TLP     string `cbor:"6,keyasint,omitempty"`
	Marking string `cbor:"7,keyasint,omitempty"`
	// Sent is when the provider sent the batch, in milliseconds since the Unix epoch.
	Sent   int64  `cbor:"8,keyasint"`
	Digest []byte `cbor:"9,keyasint"`
	// Records travel beside the signed header; Digest binds them to it.
	Records [][]byte `cbor:"-"`
}

// batchWire is a batch as sent: the signed header and the records.
type batchWire struct {
	_       struct{} `cbor:",toarray"`
	Signed  []byte
	Records [][]byte
}

// Last is the sequence number of the batch's last record.
func (b *Batch) Last() uint64 { return b.First + uint64(len(b.Records)) - 1 }

func recordsDigest(recs [][]byte) []byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, r := range recs {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(r)))])
		h.Write(r)
	}
	return h.Sum(nil)
}

// SealBatch signs a batch and returns it as sent.
func SealBatch(id *Identity, b *Batch) ([]byte, error) {
	if len(b.Records) == 0 || b.First == 0 {
		return nil, fmt.Errorf("protocol: a batch holds at least one record, numbered from 1")
	}
	b.Count, b.Digest = uint64(len(b.Records)), recordsDigest(b.Records)
	signed, err := sealDoc(id, docBatch, b)
	if err != nil {
		return nil, err
	}
	return appendBatchWire(nil, signed, b.Records), nil
}

// OpenBatch verifies a batch signed by provider: the header's signature, and the records
// against its digest.
func OpenBatch(raw []byte, provider peer.ID) (*Batch, error) {
	if len(raw) > MaxBatchSize {
		return nil, fmt.Errorf("%w: batch of %d bytes, limit %d", ErrTooLarge, len(raw), MaxBatchSize)
	}
	w, err := decodeBatchWire(raw)
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	var b Batch
	if err := openDoc(w.Signed, provider, docBatch, &b); err != nil {
		return nil, err
	}
	if err := CheckSSAID(b.SSAID); err != nil {
		return nil, fmt.Errorf("%w: batch: %w", ErrMalformed, err)
	}
	if len(w.Records) == 0 || b.First == 0 || b.Count != uint64(len(w.Records)) {
		return nil, fmt.Errorf("%w: batch of %d records says it holds %d, from number %d", ErrMalformed, len(w.Records), b.Count, b.First)
	}
	if !bytes.Equal(recordsDigest(w.Records), b.Digest) {
		return nil, fmt.Errorf("%w: the records do not match the signed digest", ErrBadSignature)
	}
	b.Records = w.Records
	return &b, nil
}

// A batch on the wire is written and read here, with the primitives of cbor.go, not by the
// CBOR package, which would copy every record twice: into its buffer, growing it as it goes,
// when it writes, and into a new slice each when it reads (with the digest, a tenth of the
// CPU of an exchange). A batch is a CBOR array of two, the signed header (a byte string) and
// the records (an array of byte strings). appendBatchWire writes what the encoder writes;
// decodeBatchWire accepts what it writes and what the strict decoder accepted (definite
// lengths, no tags, at most maxBatchRecords records, nothing after the array) but for heads
// not in their shortest form and null for a byte string or an array, which no encoder of a
// batch writes (TestBatchWireAsDecoder compares them).

// appendBatchWire appends a batch as sent, the signed header and the records, to dst, growing
// it once.
func appendBatchWire(dst, signed []byte, recs [][]byte) []byte {
	size := 1 + headSize(uint64(len(signed))) + len(signed) + headSize(uint64(len(recs)))
	for _, r := range recs {
		size += headSize(uint64(len(r))) + len(r)
	}
	dst = slices.Grow(dst, size)
	dst = appendBstr(appendHead(dst, 4, 2), signed)
	dst = appendHead(dst, 4, uint64(len(recs)))
	for _, r := range recs {
		dst = appendBstr(dst, r)
	}
	return dst
}

// decodeBatchWire reads a batch as sent. The signed header and the records it returns are
// slices of raw, not copies, each capped at its own length so that an append to one never
// writes over the next.
func decodeBatchWire(raw []byte) (batchWire, error) {
	var w batchWire
	m, n, rest, err := readHead(raw)
	if err != nil {
		return w, err
	}
	if m != 4 || n != 2 {
		return w, fmt.Errorf("%w: not an array of 2", ErrMalformed)
	}
	if w.Signed, rest, err = readString(rest, 2); err != nil {
		return w, err
	}
	if m, n, rest, err = readHead(rest); err != nil {
		return w, err
	}
	// Each record takes a byte at least: a count over what is left is refused before any
	// memory is taken for it.
	if m != 4 || n > maxBatchRecords || n > uint64(len(rest)) {
		return w, fmt.Errorf("%w: records: major type %d, %d announced (limit %d), %d bytes left", ErrMalformed, m, n, maxBatchRecords, len(rest))
	}
	w.Records = make([][]byte, n)
	for i := range w.Records {
		if w.Records[i], rest, err = readString(rest, 2); err != nil {
			return w, fmt.Errorf("record %d: %w", i, err)
		}
	}
	if len(rest) != 0 {
		return w, fmt.Errorf("%w: %d bytes after the batch", ErrMalformed, len(rest))
	}
	return w, nil
}

// MaxBatchSize is the largest batch accepted on the wire, in bytes.
const MaxBatchSize = 8 << 20

// maxBatchRecords is the most records a batch can hold on the wire.
const maxBatchRecords = 65536

// BatchAck is the requester's answer to a batch: it holds every record up to Last. A
// requester that refuses the batch says why in Error (and the provider stops sending).
type BatchAck struct {
	SSAID string `cbor:"1,keyasint"`
	Last  uint64 `cbor:"2,keyasint"`
	Error string `cbor:"3,keyasint,omitempty"`
}

// Encode returns the canonical encoding of the ack.
func (a *BatchAck) Encode() ([]byte, error) { return Marshal(a) }

// DecodeBatchAck decodes an ack strictly.
func DecodeBatchAck(b []byte) (*BatchAck, error) {
	var a BatchAck
	if err := unmarshalCanonical(b, &a); err != nil {
		return nil, err
	}
	if err := CheckSSAID(a.SSAID); err != nil {
		return nil, fmt.Errorf("%w: batch ack: %w", ErrMalformed, err)
	}
	return &a, nil
}

// ReportRequest asks a provider for the fulfilment state of an SSA (step ⑫).
type ReportRequest struct {
	SSAID string `cbor:"1,keyasint"`
}

// Encode returns the canonical encoding of the request.
func (r *ReportRequest) Encode() ([]byte, error) { return Marshal(r) }

// DecodeReportRequest decodes a report request strictly.
func DecodeReportRequest(b []byte) (*ReportRequest, error) {
	var r ReportRequest
	if err := unmarshalCanonical(b, &r); err != nil {
		return nil, err
	}
	if err := CheckSSAID(r.SSAID); err != nil {
		return nil, fmt.Errorf("%w: report request: %w", ErrMalformed, err)
	}
	return &r, nil
}

// Report is a provider's signed account of how it fulfils an SSA (step ⑬). Latencies are
// from enqueueing a refined record to the requester's acknowledgement, in milliseconds.
type Report struct {
	SSAID    string `cbor:"1,keyasint" json:"ssa_id"`
	SSPHash  string `cbor:"2,keyasint" json:"ssp_hash"`
	Time     int64  `cbor:"3,keyasint" json:"time_ms"` // when the report was made, ms since the epoch
	Ingested uint64 `cbor:"4,keyasint" json:"ingested"`
	Refined  uint64 `cbor:"5,keyasint" json:"refined"`
	Dropped  uint64 `cbor:"6,keyasint" json:"dropped"`
	Sent     uint64 `cbor:"7,keyasint" json:"sent"`
	Acked    uint64 `cbor:"8,keyasint" json:"acked"`
	// LatencyP50, P95 and P99 are delivery latency percentiles over recent batches.
	LatencyP50 uint64 `cbor:"9,keyasint" json:"latency_p50_ms"`
	LatencyP95 uint64 `cbor:"10,keyasint" json:"latency_p95_ms"`
	LatencyP99 uint64 `cbor:"11,keyasint" json:"latency_p99_ms"`
	// InSchedule says whether the report was made inside the SSA's schedule;
	// SentOutside counts batches sent outside it (which must be zero).
	InSchedule  bool   `cbor:"12,keyasint" json:"in_schedule"`
	SentOutside uint64 `cbor:"13,keyasint" json:"sent_outside"`
	// Error is set when the provider has no such SSA in force.
	Error string `cbor:"14,keyasint,omitempty" json:"error,omitempty"`
	// IngestPaused says the provider takes no records now: its disk is below its reserve.
	IngestPaused bool `cbor:"15,keyasint,omitempty" json:"ingest_paused,omitempty"`
	// Outcomes is the provider's ledger of the SSA (issue 13): how many of the raw records
	// handed to its enforcement point since OutcomesSince (ms since the epoch; the SSA was
	// put in force, or the provider restarted) ended in each outcome: "shared",
	// "not_queued" (the requester's queue was full), "filtered", "filter_error" (a filter
	// could not be evaluated), "summarised", "untimed" (no timestamp under a summarisation),
	// "malformed", "outside_schedule". Outcomes never seen are left out; the counts sum to
	// OutcomesIngested. Absent from reports of providers that keep no ledger.
	Outcomes         map[string]uint64 `cbor:"16,keyasint,omitempty" json:"outcomes,omitempty"`
	OutcomesIngested uint64            `cbor:"17,keyasint,omitempty" json:"outcomes_ingested,omitempty"`
	OutcomesSince    int64             `cbor:"18,keyasint,omitempty" json:"outcomes_since_ms,omitempty"`
	// OutcomesFilteredBy splits Outcomes["filtered"] by filter: element i counts the records
	// that filter i of the SSA's policy.filtering list was the first to exclude (at most one
	// element per filter; trailing filters that excluded nothing may be left out). Absent
	// from reports of providers that do not count them.
	OutcomesFilteredBy []uint64 `cbor:"19,keyasint,omitempty" json:"outcomes_filtered_by,omitempty"`
	// DeliveryHeld says why the provider delivers nothing now although the SSA is in force:
	// its connection to the requester runs over a protocol or security the SSA's method does
	// not list. Absent when it delivers, and from reports of providers that do not say.
	DeliveryHeld string `cbor:"20,keyasint,omitempty" json:"delivery_held,omitempty"`
}

// SealReport signs a report.
func SealReport(id *Identity, r *Report) ([]byte, error) { return sealDoc(id, docReport, r) }

// OpenReport verifies a report signed by provider.
func OpenReport(raw []byte, provider peer.ID) (*Report, error) {
	var r Report
	if err := openDoc(raw, provider, docReport, &r); err != nil {
		return nil, err
	}
	if err := CheckSSAID(r.SSAID); err != nil {
		return nil, fmt.Errorf("%w: report: %w", ErrMalformed, err)
	}
	return &r, nil
}
