package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// Step ⑪: the requester's enforcement point forwards what it received to the security
// management server through sinks. Forwarding reads from the store, after each record was
// stored and verified, and remembers per sink and per SSA how far it got (in HOME/sinks), so
// a restart forwards what was not forwarded yet: at least once to each sink. A sink counts as
// onward sharing with the given relation, checked against the SSA's redistribution rule.

// A chunk of records read for a sink, or for Agent.Records, is at most forwardRecords
// records and forwardBytes of them (or one record, when it alone is larger): a provider can
// send records of up to 1 MiB that the requester stores even when they violate the SSA, and
// JSON escapes each control byte of a record that is not JSON to 6 bytes.
const (
	forwardRecords = 512
	forwardBytes   = 4 << 20
)

// SinkConfig is one sink in config.yaml.
type SinkConfig struct {
	// Name identifies the sink (its progress file); defaults to its type.
	Name string `yaml:"name,omitempty"`
	// Type is jsonl, syslog or webhook.
	Type string `yaml:"type"`
	// Path is the JSON Lines file (jsonl).
	Path string `yaml:"path,omitempty"`
	// Network (udp or tcp) and Address (host:port) of a syslog receiver.
	Network string `yaml:"network,omitempty"`
	Address string `yaml:"address,omitempty"`
	// URL of a webhook.
	URL string `yaml:"url,omitempty"`
	// Relation of the receiver to this organisation: organisation (default), community or
	// any; records go only where the SSA's redistribution rule allows.
	Relation string `yaml:"relation,omitempty"`
}

func (c *SinkConfig) validate() error {
	if c.Name == "" {
		c.Name = c.Type
	}
	if c.Relation == "" {
		c.Relation = "organisation"
	}
	switch c.Type {
	case "jsonl":
		if c.Path == "" {
			return fmt.Errorf("config: sink %s: jsonl needs a path", c.Name)
		}
	case "syslog":
		if (c.Network != "udp" && c.Network != "tcp") || c.Address == "" {
			return fmt.Errorf("config: sink %s: syslog needs network udp|tcp and an address host:port", c.Name)
		}
	case "webhook":
		if c.URL == "" {
			return fmt.Errorf("config: sink %s: webhook needs a url", c.Name)
		}
	default:
		return fmt.Errorf("config: sink %q: type must be jsonl, syslog or webhook", c.Type)
	}
	return nil
}

// ForwardedRecord is a record as sinks receive it.
type ForwardedRecord struct {
	SSAID    string          `json:"ssa_id"`
	Seq      uint64          `json:"seq"`
	Received time.Time       `json:"received"`
	Format   string          `json:"format"`
	TLP      string          `json:"tlp,omitempty"`
	Record   json.RawMessage `json:"record,omitempty"` // a JSON record as it is
	Text     string          `json:"text,omitempty"`   // any other record
	// Quarantined is set on a record that does not comply with the SSA (see the monitor's
	// evidence): Records shows it, sinks never receive it.
	Quarantined bool `json:"quarantined,omitempty"`
}

type sinkWriter interface {
	write(ctx context.Context, recs []ForwardedRecord) error
	close() error
}

// sinks runs one forwarder per configured sink.
type sinks struct {
	a      *Agent
	kicks  []chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newSinks(a *Agent, cfgs []SinkConfig) (*sinks, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sinks{a: a, cancel: cancel}
	if err := os.MkdirAll(filepath.Join(a.home, "sinks"), 0o700); err != nil {
		cancel()
		return nil, err
	}
	for _, c := range cfgs {
		w, err := openSink(c)
		if err != nil {
			cancel()
			s.wg.Wait()
			return nil, err
		}
		kick := make(chan struct{}, 1)
		s.kicks = append(s.kicks, kick)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer w.close()
			s.forward(ctx, c, w, kick)
		}()
	}
	return s, nil
}

func openSink(c SinkConfig) (sinkWriter, error) {
	switch c.Type {
	case "jsonl":
		f, err := os.OpenFile(c.Path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		return &jsonlSink{f: f, sync: info.Mode().IsRegular()}, nil
	case "syslog":
		return &syslogSink{network: c.Network, address: c.Address}, nil
	default:
		return &webhookSink{url: c.URL, client: &http.Client{Timeout: 10 * time.Second}}, nil
	}
}

// kick wakes the forwarders after new records were stored.
func (s *sinks) kick() {
	for _, k := range s.kicks {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

func (s *sinks) close() {
	s.cancel()
	s.wg.Wait()
}

// forward copies every requester SSA's new records to one sink.
func (s *sinks) forward(ctx context.Context, c SinkConfig, w sinkWriter, kick chan struct{}) {
	progressPath := filepath.Join(s.a.home, "sinks", c.Name+".json")
	progress := map[string]uint64{}
	if b, err := os.ReadFile(progressPath); err == nil {
		json.Unmarshal(b, &progress)
	}
	refused := map[string]bool{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, run := range s.a.mgr.requesterRuns() {
			if err := policy.MayRedistribute(run.ssp, c.Relation); err != nil {
				if !refused[run.ssa.ID] {
					s.a.log.Warn("records not forwarded: the SSA's redistribution rule forbids this sink", "ssa", run.ssa.ID, "sink", c.Name, "err", err)
					refused[run.ssa.ID] = true
				}
				continue
			}
			for ctx.Err() == nil {
				recs, err := s.a.store.Records(run.ssa.ID, progress[run.ssa.ID], forwardRecords, forwardBytes)
				if err != nil || len(recs) == 0 {
					break
				}
				out := make([]ForwardedRecord, 0, len(recs))
				tlp := run.ssp.Marking().TLP
				for _, r := range recs {
					if !quarantined(r.Data) { // a record that breaks the SSA goes no further
						out = append(out, forwarded(run, tlp, r.Seq, r.ReceivedAt, r.Data))
					}
				}
				if len(out) > 0 {
					if err := w.write(ctx, out); err != nil {
						s.a.log.Warn("sink refused records; will retry", "sink", c.Name, "err", err)
						break
					}
				}
				progress[run.ssa.ID] = recs[len(recs)-1].Seq
				if err := writeFileAtomic(progressPath, mustJSON(progress)); err != nil {
					s.a.log.Error("save sink progress", "sink", c.Name, "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
	}
}

// Records returns up to max records received under an SSA this agent requested, after
// sequence number after, as sinks receive them: no more than a sink's chunk of data (4 MiB),
// but at least one record if there is one.
func (a *Agent) Records(ssaID string, after uint64, max int) ([]ForwardedRecord, error) {
	out := []ForwardedRecord{}
	run := a.mgr.requested(ssaID)
	if run == nil { // not an SSA this agent requested and agreed: no records
		_, err := a.Negotiation(ssaID)
		return out, err
	}
	recs, err := a.store.Records(ssaID, after, max, forwardBytes)
	if err != nil {
		return nil, err
	}
	tlp := run.ssp.Marking().TLP
	for _, rec := range recs {
		out = append(out, forwarded(run, tlp, rec.Seq, rec.ReceivedAt, rec.Data))
	}
	return out, nil
}

// forwarded is a kept record as sinks receive it.
func forwarded(run *agreementRun, tlp string, seq uint64, at time.Time, data []byte) ForwardedRecord {
	fr := ForwardedRecord{SSAID: run.ssa.ID, Seq: seq, Received: at, TLP: tlp, Quarantined: quarantined(data)}
	fr.Format, data = run.untag(data)
	if json.Valid(data) {
		fr.Record = data
	} else {
		fr.Text = string(data)
	}
	return fr
}

// jsonlSink appends JSON Lines to a file; a regular file is synced (a pipe or a device
// cannot be).
type jsonlSink struct {
	f    *os.File
	sync bool
}

// write encodes one record at a time, so that it holds one encoded record, not a chunk, and
// syncs a regular file before the forwarder records its progress. A write that fails may leave the
// first records of the chunk in the file: the forwarder writes the chunk again.
func (j *jsonlSink) write(_ context.Context, recs []ForwardedRecord) error {
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

func (j *jsonlSink) close() error { return j.f.Close() }

// syslogSink sends each record as an RFC 5424 message (octet-counted over TCP, RFC 6587).
type syslogSink struct {
	network, address string
	conn             net.Conn
}

func (s *syslogSink) write(ctx context.Context, recs []ForwardedRecord) error {
	if s.conn == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, s.network, s.address)
		if err != nil {
			return err
		}
		s.conn = c
	}
	host, _ := os.Hostname()
	var msg []byte // one message at a time, built in place
	for _, r := range recs {
		body, err := json.Marshal(r)
		if err != nil {
			return err
		}
		// PRI 110: facility security/authorization (13... local use is 16+); we use
		// facility 13 (log audit) severity 6 (informational) = 110.
		header := fmt.Appendf(nil, "<110>1 %s %s ssanet - %s [ssanet@32473 ssa=\"%s\" seq=\"%d\"] ",
			r.Received.UTC().Format(time.RFC3339Nano), nilDash(host), "record", r.SSAID, r.Seq)
		msg = msg[:0]
		if s.network == "tcp" {
			msg = fmt.Appendf(msg, "%d ", len(header)+len(body))
		}
		msg = append(append(msg, header...), body...)
		s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.conn.Write(msg); err != nil {
			s.conn.Close()
			s.conn = nil
			return err
		}
	}
	return nil
}

func nilDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (s *syslogSink) close() error {
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}

// webhookSink POSTs each chunk of records as a JSON array, retrying with exponential backoff
// (up to 5 tries; then the forwarder tries again later from the same place). The body, kept
// for the retries, is the one copy of the chunk it encodes.
type webhookSink struct {
	url    string
	client *http.Client
}

func (h *webhookSink) write(ctx context.Context, recs []ForwardedRecord) error {
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
	for try := 0; try < 5; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body.Bytes()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("webhook answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	return errors.Join(errors.New("webhook unreachable after 5 tries"), last)
}

func (h *webhookSink) close() error { return nil }

// retentionLoop deletes received records once the SSA's retention has run out.
func (m *manager) retentionLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, run := range m.requesterRuns() {
			h := run.ssa.Policy
			if h == nil || h.Handling == nil || h.Handling.Retention == 0 {
				continue
			}
			cut := time.Now().Add(-h.Handling.Retention.Std())
			if n, err := m.a.store.DeleteRecordsReceivedBefore(run.ssa.ID, cut); err != nil {
				m.a.log.Error("retention", "ssa", run.ssa.ID, "err", err)
			} else if n > 0 {
				m.a.log.Info("records deleted: retention ran out", "ssa", run.ssa.ID, "records", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// requesterRuns are the SSAs this agent requested whose records it holds: those in force
// and those held after they ended.
func (m *manager) requesterRuns() []*agreementRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append(runsOf(m.runs, protocol.RoleRequester), slices.Collect(maps.Values(m.held))...)
}

// writeFileAtomic replaces path with data so that a crash leaves either the old or the new
// content, never an empty or partial file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path)) // the rename itself survives a power cut
}

// syncDir syncs a directory, so that the entries made in it last are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // findings are plain data
	}
	return b
}
