package sink

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Webhook bodies (WebhookConfig.Body).
const (
	BodyJSON   = "json"    // a JSON array of records (application/json)
	BodyNDJSON = "ndjson"  // one record per line (application/x-ndjson)
	BodyESBulk = "es-bulk" // an Elasticsearch _bulk request: an index action per record
)

// SignatureHeader carries, when the webhook has an HMAC key, "sha256=" and the hex HMAC-SHA256
// of the request body under that key.
const SignatureHeader = "X-Ssanet-Signature"

// Webhook defaults.
const (
	DefaultWebhookTries  = 5
	DefaultPoisonAfter   = 3
	defaultWebhookBackof = 100 * time.Millisecond
)

var (
	// ErrWebhookConfig means a webhook sink's configuration is wrong.
	ErrWebhookConfig = errors.New("sink: webhook config")
	// ErrWebhookUnreachable means a webhook did not take a batch in its tries (5xx, 408, 429,
	// a timeout or no connection): the caller tries the batch again later.
	ErrWebhookUnreachable = errors.New("sink: webhook unreachable; will retry the batch")
	// ErrWebhookRefused means a webhook answered a batch with a 4xx (other than 408 and 429),
	// or Elasticsearch refused an item of a _bulk request.
	ErrWebhookRefused = errors.New("sink: webhook refused the batch")
	// ErrWebhookDenied means a webhook refused the sink itself, whatever the batch: 401, 403,
	// 404, 405 or 407 (credentials, address or method). No batch is set aside for it: the
	// sink fails, and says so, until the operator fixes its config.
	ErrWebhookDenied = errors.New("sink: webhook refused the sink (check its url and credentials)")
)

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	Name string // of the sink, for the log
	URL  string
	// Authorization is the Authorization header's value ("" sends none). It is never logged.
	Authorization string
	// HMACKey, if set, signs each body in SignatureHeader.
	HMACKey []byte
	// Body is BodyJSON (default), BodyNDJSON or BodyESBulk; Index is the Elasticsearch index
	// of BodyESBulk.
	Body  string
	Index string
	// Tries is how many times one Write posts a batch that fails for a reason that may pass
	// (default DefaultWebhookTries), with a delay of Backoff (default 100 ms) doubled after
	// each try.
	Tries   int
	Backoff time.Duration
	// PoisonAfter is how many 4xx answers a batch gets before it is set aside in PoisonDir
	// (default DefaultPoisonAfter), counted across Writes of the same batch.
	PoisonAfter int
	PoisonDir   string
	// Timeout bounds each request (default 10 s).
	Timeout time.Duration
	Log     *slog.Logger
}

// Validate checks c and fills in its defaults.
func (c *WebhookConfig) Validate() error {
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("%w: url %q: want http:// or https://", ErrWebhookConfig, c.URL)
	}
	if strings.ContainsAny(c.Authorization, "\r\n") {
		return fmt.Errorf("%w: the authorization holds a line break", ErrWebhookConfig)
	}
	switch c.Body {
	case "":
		c.Body = BodyJSON
	case BodyJSON, BodyNDJSON:
	case BodyESBulk:
		if err := checkIndex(c.Index); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: body %q: want json, ndjson or es-bulk", ErrWebhookConfig, c.Body)
	}
	if c.Body != BodyESBulk && c.Index != "" {
		return fmt.Errorf("%w: index needs body es-bulk", ErrWebhookConfig)
	}
	if c.Tries == 0 {
		c.Tries = DefaultWebhookTries
	}
	if c.PoisonAfter == 0 {
		c.PoisonAfter = DefaultPoisonAfter
	}
	if c.Tries < 1 || c.Tries > 20 || c.PoisonAfter < 1 || c.PoisonAfter > 20 {
		return fmt.Errorf("%w: tries and poison-after must be 1..20", ErrWebhookConfig)
	}
	if c.Backoff <= 0 {
		c.Backoff = defaultWebhookBackof
	}
	if c.Timeout == 0 {
		c.Timeout = writeTimeout
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%w: timeout %s", ErrWebhookConfig, c.Timeout)
	}
	if c.PoisonDir == "" {
		return fmt.Errorf("%w: no directory for refused batches", ErrWebhookConfig)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// checkIndex checks an Elasticsearch index name against Elasticsearch's rules.
func checkIndex(s string) error {
	bad := s == "" || s == "." || s == ".." || len(s) > 255 || strings.ContainsAny(s, `\/*?"<>| ,#:`) ||
		strings.ContainsAny(s[:1], "-_+") || strings.ToLower(s) != s
	if bad {
		return fmt.Errorf("%w: index %q: want a lower-case Elasticsearch index name", ErrWebhookConfig, s)
	}
	return nil
}

// Webhook POSTs each batch of records, retrying with exponential backoff what may pass (5xx,
// 408, 429, timeouts, no connection). A batch the webhook refuses (4xx) PoisonAfter times is
// written to PoisonDir, counted in Poisoned, logged once, and Write returns nil so that the
// sink goes on with the next batch.
type Webhook struct {
	cfg    WebhookConfig
	client *http.Client
	// refusedKey is the batch (its first record: SSA and seq) that got refusedN 4xx answers.
	// The first record, not the range: the caller writes a refused chunk again from the same
	// place, with the records received since added, and its refusals must still add up.
	refusedKey string
	refusedN   int
	poisoned   atomic.Int64
	// logged is when a batch set aside was last logged; unlogged, the batches set aside since.
	logged   time.Time
	unlogged int
}

// NewWebhook returns a writer to the webhook cfg describes.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Webhook{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}, nil
}

// Poisoned is how many records this writer set aside since it was made.
func (h *Webhook) Poisoned() int { return int(h.poisoned.Load()) }

// Confirms reports that a batch the webhook took was confirmed (2xx, no failed _bulk item),
// save the records Poisoned counts.
func (h *Webhook) Confirms() bool { return true }

// Write posts recs; the body, kept for the retries, is the one copy of the batch it encodes.
func (h *Webhook) Write(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	body, err := h.encode(recs)
	if err != nil {
		return err
	}
	key := batchStart(recs)
	if key != h.refusedKey {
		h.refusedKey, h.refusedN = key, 0
	}
	delay := h.cfg.Backoff
	var last error
	for try := 1; ; try++ {
		resp, err := h.post(ctx, body)
		if err == nil {
			h.refusedKey, h.refusedN = "", 0
			return nil
		}
		last = err
		if errors.Is(err, ErrWebhookDenied) {
			return err // every batch would be refused: not this batch's fault, not retried now
		}
		if errors.Is(err, ErrWebhookRefused) {
			h.refusedN++
			if h.refusedN >= h.cfg.PoisonAfter {
				return h.poison(recs, batchName(recs), body, resp, err)
			}
		}
		if try >= h.cfg.Tries {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	if errors.Is(last, ErrWebhookRefused) {
		return last
	}
	return fmt.Errorf("%w: %w", ErrWebhookUnreachable, last)
}

// encode writes the body of recs.
func (h *Webhook) encode(recs []Record) ([]byte, error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body) // one record at a time, into the body
	if h.cfg.Body == BodyJSON {
		body.WriteByte('[')
	}
	for i, r := range recs {
		if h.cfg.Body == BodyJSON && i > 0 {
			body.WriteByte(',')
		}
		if h.cfg.Body == BodyESBulk {
			// The _id makes a record sent again replace itself: no duplicates in the index.
			action := map[string]map[string]string{"index": {"_index": h.cfg.Index, "_id": fmt.Sprintf("%s:%d", r.SSAID, r.Seq)}}
			if err := enc.Encode(action); err != nil {
				return nil, err
			}
		}
		if err := r.encode(enc, &body); err != nil { // each ends with a newline
			return nil, err
		}
	}
	if h.cfg.Body == BodyJSON {
		body.WriteByte(']')
	}
	return body.Bytes(), nil
}

// maxAnswer bounds what is read of a webhook's answer (an Elasticsearch _bulk answer holds a
// few hundred bytes per record).
const maxAnswer = 8 << 20

// post makes one try; it returns the answer's body (up to 64 KiB) with an error.
func (h *Webhook) post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if h.cfg.Body == BodyJSON {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	if h.cfg.Authorization != "" {
		req.Header.Set("Authorization", h.cfg.Authorization)
	}
	if h.cfg.HMACKey != nil {
		m := hmac.New(sha256.New, h.cfg.HMACKey)
		m.Write(body)
		req.Header.Set(SignatureHeader, "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	answer, rerr := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	short := answer[:min(len(answer), 64<<10)]
	switch code := resp.StatusCode; {
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests:
		return short, fmt.Errorf("webhook answered %s", resp.Status)
	case code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusNotFound ||
		code == http.StatusMethodNotAllowed || code == http.StatusProxyAuthRequired:
		return short, fmt.Errorf("%w: %s", ErrWebhookDenied, resp.Status)
	case code >= 400 && code < 500:
		return short, fmt.Errorf("%w: %s", ErrWebhookRefused, resp.Status)
	case code/100 != 2:
		return short, fmt.Errorf("webhook answered %s", resp.Status)
	}
	if h.cfg.Body != BodyESBulk {
		// A body cut short costs only the connection, not the batch the status accepted.
		return nil, nil
	}
	if rerr != nil {
		return nil, fmt.Errorf("elasticsearch _bulk answer: %w", rerr)
	}
	return short, bulkErrors(answer)
}

// bulkErrors reads an Elasticsearch _bulk answer, which is 200 even when items failed: an item
// refused with 429 or 5xx may pass when sent again, one refused with another 4xx not.
func bulkErrors(answer []byte) error {
	var a struct {
		Errors bool `json:"errors"`
		Items  []map[string]struct {
			Status int `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return fmt.Errorf("elasticsearch _bulk answer: %w", err)
	}
	if !a.Errors {
		return nil
	}
	refused := 0
	for _, it := range a.Items {
		for _, r := range it {
			if r.Status == http.StatusTooManyRequests || r.Status >= 500 {
				return fmt.Errorf("elasticsearch _bulk: an item answered %d", r.Status)
			}
			if r.Status >= 400 {
				refused++
			}
		}
	}
	if refused == 0 {
		return errors.New("elasticsearch _bulk: errors without a failed item")
	}
	return fmt.Errorf("%w: elasticsearch refused %d of %d items", ErrWebhookRefused, refused, len(a.Items))
}

// batchName names a batch by its first record's SSA (hashed) and its sequence range.
func batchName(recs []Record) string {
	return fmt.Sprintf("%s-%d", batchStart(recs), recs[len(recs)-1].Seq)
}

// batchStart names where a batch starts: its first record's SSA (hashed) and sequence number.
func batchStart(recs []Record) string {
	sum := sha256.Sum256([]byte(recs[0].SSAID))
	return fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:8]), recs[0].Seq)
}

// poison sets a refused batch aside: its body (NAME.body) and the webhook's last answer
// (NAME.answer), so that the operator can see why and send it again. It logs at most one
// line a minute: the batch, and how many were set aside since the last line (batches).
func (h *Webhook) poison(recs []Record, name string, body, answer []byte, cause error) error {
	if err := os.MkdirAll(h.cfg.PoisonDir, 0o700); err != nil {
		return fmt.Errorf("set a refused batch aside: %w", err)
	}
	path := filepath.Join(h.cfg.PoisonDir, name+".body")
	if err := WriteFileAtomic(path, body, 0o600); err != nil {
		return fmt.Errorf("set a refused batch aside: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(h.cfg.PoisonDir, name+".answer"), answer, 0o600); err != nil {
		return fmt.Errorf("set a refused batch aside: %w", err)
	}
	h.poisoned.Add(int64(len(recs)))
	h.refusedKey, h.refusedN = "", 0
	h.unlogged++
	if time.Since(h.logged) < time.Minute { // at most one line a minute
		return nil
	}
	h.cfg.Log.Warn("webhook refused a batch; set aside, the sink goes on with the next one",
		"sink", h.cfg.Name, "ssa", recs[0].SSAID, "first_seq", recs[0].Seq, "last_seq", recs[len(recs)-1].Seq,
		"records", len(recs), "tries", h.cfg.PoisonAfter, "file", path, "batches", h.unlogged,
		"poisoned_records", h.poisoned.Load(), "err", cause)
	h.logged, h.unlogged = time.Now(), 0
	return nil
}

// Close releases idle connections.
func (h *Webhook) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
