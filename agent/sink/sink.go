// Package sink holds the writers through which a requester's agent forwards the records it
// received to its security management server (X.1205 Supplement 20, Appendix I step ⑪): a
// JSON Lines file, a syslog receiver (RFC 5424), a webhook or a MISP feed directory. The JSONL
// and webhook writers write each record in its envelope, or, when the agent set its Doc, that
// document instead (a STIX bundle or an ECS document made by policy/cti).
//
// A writer only writes: which records go to it, in what order, and how far it got are the
// agent's business (agent/sinks.go). A writer must never hold more than one encoded record
// beyond the chunk it was given (the syslog writer over TCP or TLS also keeps the previous
// chunk's records, to send again after the receiver closed the connection), and a Write that
// fails may have written a prefix of the chunk: the caller writes the whole chunk again, so a
// receiver sees each record at least once. The webhook writer takes a batch its receiver
// refuses (4xx) a bounded number of times by setting it aside in a file (Webhook.Poisoned
// counts its records), the MISP feed writer passes over a record that yields no attribute
// (MISPFeed.Skipped counts it by reason), and the JSONL writer rotates its file and deletes
// rotated files past the retention of the SSAs of their records.
package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// Record is a record as sinks receive it.
type Record struct {
	SSAID    string    `json:"ssa_id"`
	Seq      uint64    `json:"seq"`
	Received time.Time `json:"received"`
	Format   string    `json:"format"`
	TLP      string    `json:"tlp,omitempty"`
	// Marking is the STIX 2.1 marking-definition ID of the TLP label and SSP the hash of the
	// SSA's SSP: the handling marking that travelled with the record's batch.
	Marking string          `json:"marking,omitempty"`
	SSP     string          `json:"ssp,omitempty"`
	Record  json.RawMessage `json:"record,omitempty"` // a JSON record as it is
	Text    string          `json:"text,omitempty"`   // any other record
	// Quarantined is set on a record that does not comply with the SSA (see the monitor's
	// evidence): the agent's Records shows it, sinks never receive it.
	Quarantined bool `json:"quarantined,omitempty"`
	// Doc, when set, is what a JSONL or webhook sink writes instead of the record in this
	// envelope: the record as a STIX bundle or an ECS document (the sink's format).
	Doc json.RawMessage `json:"-"`
}

// Data is the record's bytes, JSON or not.
func (r *Record) Data() []byte {
	if len(r.Record) > 0 {
		return r.Record
	}
	return []byte(r.Text)
}

// encode appends r as a sink writes it, a newline after: its Doc if set, else the envelope.
func (r *Record) encode(enc *json.Encoder, buf *bytes.Buffer) error {
	if r.Doc == nil {
		return enc.Encode(r)
	}
	buf.Write(r.Doc)
	buf.WriteByte('\n')
	return nil
}

// Writer writes chunks of records to one receiver.
type Writer interface {
	Write(ctx context.Context, recs []Record) error
	Close() error
}

// Confirmer is a Writer that says whether a Write that returned nil means its receiver
// confirmed every record of the chunk: RELP (each message answered 200), a webhook (a 2xx
// answer, and no failed item in an Elasticsearch _bulk answer) and a JSONL regular file
// (synced). Syslog over UDP, TCP or TLS confirms nothing, nor does a JSONL pipe or device. A
// Writer that is no Confirmer confirms nothing.
type Confirmer interface {
	Confirms() bool
}

// SetAsider is a Writer that may take records by setting them aside instead of delivering
// them (the webhook's refused batches): Poisoned is how many it set aside since it was made.
type SetAsider interface {
	Poisoned() int
}

// Reasons a writer, or the agent mapping records to a sink's format, passes over a record
// (the reason label of ssanet_sink_records_skipped_total).
const (
	// SkipUnmappable: the record cannot be mapped to the sink's format (STIX, ECS, MISP): its
	// format is not one the mappings read.
	SkipUnmappable = "unmappable"
	// SkipUnmapped: the record maps to nothing in the sink's format: no observable for a MISP
	// event. A record that does not parse is unmappable.
	SkipUnmapped = "unmapped"
)

// Skips counts records passed over, by reason.
type Skips struct {
	Unmappable uint64 `json:"unmappable"`
	Unmapped   uint64 `json:"unmapped"`
}

// Add adds o to s.
func (s *Skips) Add(o Skips) {
	s.Unmappable += o.Unmappable
	s.Unmapped += o.Unmapped
}

// Since is what s counts beyond o, an earlier count of the same writer.
func (s Skips) Since(o Skips) Skips {
	return Skips{Unmappable: s.Unmappable - o.Unmappable, Unmapped: s.Unmapped - o.Unmapped}
}

// Total is how many records s counts.
func (s Skips) Total() uint64 { return s.Unmappable + s.Unmapped }

// Skipper is a Writer that passes over the records it has no form for in its format (the
// misp-feed): Skipped counts them, by reason, over the Writes that returned nil since it was
// made. A Write that returned nil took the rest of its chunk; the records it passed over will
// never have a form, so they are not written again.
type Skipper interface {
	Skipped() Skips
}

// writeTimeout bounds each write to a syslog receiver and, by default, each webhook request.
const writeTimeout = 10 * time.Second
