// Package sink holds the writers through which a requester's agent forwards the records it
// received to its security management server (X.1205 Supplement 20, Appendix I step ⑪): a
// JSON Lines file, a syslog receiver (RFC 5424) or a webhook.
//
// A writer only writes: which records go to it, in what order, and how far it got are the
// agent's business (agent/sinks.go). A writer must never hold more than one encoded record
// beyond the chunk it was given (the syslog writer over TCP or TLS also keeps the previous
// chunk's records, to send again after the receiver closed the connection), and a Write that
// fails may have written a prefix of the chunk: the caller writes the whole chunk again, so a
// receiver sees each record at least once.
package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Record is a record as sinks receive it.
type Record struct {
	SSAID    string          `json:"ssa_id"`
	Seq      uint64          `json:"seq"`
	Received time.Time       `json:"received"`
	Format   string          `json:"format"`
	TLP      string          `json:"tlp,omitempty"`
	Record   json.RawMessage `json:"record,omitempty"` // a JSON record as it is
	Text     string          `json:"text,omitempty"`   // any other record
	// Quarantined is set on a record that does not comply with the SSA (see the monitor's
	// evidence): the agent's Records shows it, sinks never receive it.
	Quarantined bool `json:"quarantined,omitempty"`
}

// Writer writes chunks of records to one receiver.
type Writer interface {
	Write(ctx context.Context, recs []Record) error
	Close() error
}

// JSONL appends JSON Lines to a file; a regular file is synced (a pipe or a device cannot be).
type JSONL struct {
	f    *os.File
	sync bool
}

// OpenJSONL opens (or creates, mode 0600) the file at path for appending, after cutting a last
// line that a crash left half-written.
func OpenJSONL(path string) (*JSONL, error) {
	if err := dropTornLine(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &JSONL{f: f, sync: info.Mode().IsRegular()}, nil
}

// Write encodes one record at a time, so that it holds one encoded record, not a chunk, and
// syncs a regular file before the caller records its progress.
func (j *JSONL) Write(_ context.Context, recs []Record) error {
	w := bufio.NewWriterSize(j.f, 64<<10)
	enc := json.NewEncoder(w)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil || !j.sync {
		return err
	}
	return j.f.Sync()
}

// Close closes the file.
func (j *JSONL) Close() error { return j.f.Close() }

// writeTimeout bounds each write to a syslog receiver and each webhook request.
const writeTimeout = 10 * time.Second

// webhookTries is how many times Webhook.Write posts a chunk before it gives up.
const webhookTries = 5

// ErrWebhookUnreachable means a webhook did not take a chunk after webhookTries tries.
var ErrWebhookUnreachable = errors.New("sink: webhook unreachable after 5 tries")

// Webhook POSTs each chunk of records as a JSON array, retrying with exponential backoff (up
// to webhookTries tries; then the caller tries again later from the same place).
type Webhook struct {
	url    string
	client *http.Client
}

// NewWebhook returns a writer to the webhook at url.
func NewWebhook(url string) *Webhook {
	return &Webhook{url: url, client: &http.Client{Timeout: writeTimeout}}
}

// Write posts recs; the body, kept for the retries, is the one copy of the chunk it encodes.
func (h *Webhook) Write(ctx context.Context, recs []Record) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body) // one record at a time, into the body
	body.WriteByte('[')
	for i, r := range recs {
		if i > 0 {
			body.WriteByte(',')
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	body.WriteByte(']')
	delay := 100 * time.Millisecond
	var last error
	for range webhookTries {
		if last = h.post(ctx, body.Bytes()); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	return errors.Join(ErrWebhookUnreachable, last)
}

// post makes one try.
func (h *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Read to the end so that the connection is reused; what the webhook says is not used,
	// and a body cut short costs only the connection, not the chunk the status accepted.
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Close releases nothing: each request is its own.
func (h *Webhook) Close() error { return nil }
