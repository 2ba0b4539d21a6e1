package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ssanet/ssanet/agent/sink"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/storage"
)

// Step ⑪: the requester's enforcement point forwards what it received to the security
// management server through sinks (writers in agent/sink). Forwarding reads from the store,
// after each record was stored and verified, and remembers per sink and per SSA how far it got
// (in HOME/sinks), so a restart forwards what was not forwarded yet: at least once to each
// sink. A sink counts as onward sharing with the given relation, checked against the SSA's
// redistribution rule.

// A chunk of records read for a sink, or for Agent.Records, is at most forwardRecords
// records and forwardBytes of them (or one record, when it alone is larger): a provider can
// send records of up to 1 MiB that the requester stores even when they violate the SSA, and
// JSON escapes each control byte of a record that is not JSON to 6 bytes.
const (
	forwardRecords = 512
	forwardBytes   = 4 << 20
)

// SinksDir holds, in the home, each sink's progress: NAME.json maps each SSA ID to the last
// sequence number forwarded to sink NAME.
const SinksDir = "sinks"

// ErrSinkProgress means a sink's progress file cannot be read: the sink stops rather than
// forward every record again.
var ErrSinkProgress = errors.New("agent: sink progress unreadable")

// sinkRetry is how often a forwarder looks for records nobody told it of, and retries a sink
// that refused records.
const sinkRetry = time.Second

// ForwardedRecord is a record as sinks receive it.
type ForwardedRecord = sink.Record

// SinkConfig is one sink in config.yaml.
type SinkConfig struct {
	// Name identifies the sink (its progress file); defaults to its type.
	Name string `yaml:"name,omitempty"`
	// Type is jsonl, syslog, webhook or misp-feed.
	Type string `yaml:"type"`
	// Format of what a jsonl or webhook sink writes of each record: raw (the default: the
	// record as received, in an envelope with its SSA, sequence number, format and handling
	// marking), stix (a STIX 2.1 bundle) or ecs (an Elastic Common Schema document).
	Format string `yaml:"format,omitempty"`
	// Path is the JSON Lines file (jsonl), rotated at MaxSizeMiB or MaxAge (0: never); a
	// rotated file is deleted once every record in it is past its SSA's retention. For a
	// misp-feed, it is the feed's directory.
	Path string `yaml:"path,omitempty"`
	// MaxAttributes bounds each event of a misp-feed (default 50000).
	MaxAttributes int      `yaml:"max-attributes,omitempty"`
	MaxSizeMiB    int64    `yaml:"max-size-mib,omitempty"`
	MaxAge        Duration `yaml:"max-age,omitempty"`
	// Network (udp, tcp, tls or relp) and Address (host:port) of a syslog receiver.
	Network string `yaml:"network,omitempty"`
	Address string `yaml:"address,omitempty"`
	// Syslog PRI: Facility (0..23, default 13, log audit) and Severity (0..7, or "record",
	// the default: the record's own where its format has one, else 6).
	Facility *int   `yaml:"facility,omitempty"`
	Severity string `yaml:"severity,omitempty"`
	// SDID (NAME@ENTERPRISE-NUMBER) adds structured data with the SSA, seq and format.
	SDID string `yaml:"sd-id,omitempty"`
	// MaxMessage bounds a UDP message (default 8192, up to 65507); longer ones are truncated.
	MaxMessage int `yaml:"max-message,omitempty"`
	// TLS (network tls): the receiver's CA (default: the system's), this agent's certificate
	// and key (PEM files) and the name the receiver's certificate must hold (default: the
	// address's host).
	TLSCA         string `yaml:"tls-ca,omitempty"`
	TLSCert       string `yaml:"tls-cert,omitempty"`
	TLSKey        string `yaml:"tls-key,omitempty"`
	TLSServerName string `yaml:"tls-server-name,omitempty"`
	// URL of a webhook; its Authorization header's value from AuthFile (the file's content,
	// surrounding white space removed) or the environment variable AuthEnv, never from
	// config.yaml; HMACKeyFile, a key (the file's bytes, surrounding white space
	// removed) that signs each body
	// (sink.SignatureHeader).
	URL         string `yaml:"url,omitempty"`
	AuthFile    string `yaml:"auth-file,omitempty"`
	AuthEnv     string `yaml:"auth-env,omitempty"`
	HMACKeyFile string `yaml:"hmac-key-file,omitempty"`
	// Body (json, ndjson or es-bulk) and Index (es-bulk) of a webhook's requests; Tries of a
	// batch that fails with 5xx, 408, 429 or a timeout before the sink retries it later,
	// PoisonAfter 4xx answers before a batch is set aside in HOME/sinks/NAME.poison; Timeout
	// of each request.
	Body        string   `yaml:"body,omitempty"`
	Index       string   `yaml:"index,omitempty"`
	Tries       int      `yaml:"tries,omitempty"`
	PoisonAfter int      `yaml:"poison-after,omitempty"`
	Timeout     Duration `yaml:"timeout,omitempty"`
	// Relation of the receiver to this organisation: organisation (default), community or
	// any; records go only where the SSA's redistribution rule allows.
	Relation string `yaml:"relation,omitempty"`
	// ReadFrom is where a new sink (one without a progress file: added to the config, at a
	// start or a reload) starts in each SSA's records: beginning (the default: every record
	// the store holds) or end (only those received after it started; an SSA agreed later
	// from its first record). A sink that has a progress file goes on from it.
	ReadFrom string `yaml:"read-from,omitempty"`
}

// Where a new sink starts (SinkConfig.ReadFrom).
const (
	ReadFromBeginning = "beginning"
	ReadFromEnd       = "end"
)

func (c *SinkConfig) validate() error {
	if c.Name == "" {
		c.Name = c.Type
	}
	if c.Relation == "" {
		c.Relation = "organisation"
	}
	switch c.Format {
	case "":
		c.Format = cti.FormatRaw
	case cti.FormatRaw, cti.FormatSTIX, cti.FormatECS:
		if c.Type != "jsonl" && c.Type != "webhook" && c.Format != cti.FormatRaw {
			return fmt.Errorf("config: sink %s: format %s needs type jsonl or webhook", c.Name, c.Format)
		}
	default:
		return fmt.Errorf("config: sink %s: format %q: want raw, stix or ecs", c.Name, c.Format)
	}
	if c.MaxAttributes != 0 && (c.Type != "misp-feed" || c.MaxAttributes < 0) {
		return fmt.Errorf("config: sink %s: max-attributes is a positive bound of a misp-feed", c.Name)
	}
	if c.ReadFrom != "" && c.ReadFrom != ReadFromBeginning && c.ReadFrom != ReadFromEnd {
		return fmt.Errorf("config: sink %s: read-from must be %s or %s, not %q", c.Name, ReadFromBeginning, ReadFromEnd, c.ReadFrom)
	}
	switch c.Type {
	case "misp-feed":
		if c.Path == "" {
			return fmt.Errorf("config: sink %s: misp-feed needs a path (the feed's directory)", c.Name)
		}
	case "jsonl":
		if c.Path == "" {
			return fmt.Errorf("config: sink %s: jsonl needs a path", c.Name)
		}
		if c.MaxSizeMiB < 0 || c.MaxAge < 0 {
			return fmt.Errorf("config: sink %s: max-size-mib and max-age must be 0 (no limit) or more", c.Name)
		}
	case "syslog":
		if _, err := c.syslogConfig(); err != nil {
			return fmt.Errorf("config: sink %s: %w", c.Name, err)
		}
	case "webhook":
		if c.URL == "" {
			return fmt.Errorf("config: sink %s: webhook needs a url", c.Name)
		}
		if _, err := c.webhookConfig("-", nil); err != nil {
			return fmt.Errorf("config: sink %s: %w", c.Name, err)
		}
	default:
		return fmt.Errorf("config: sink %q: type must be jsonl, syslog, webhook or misp-feed", c.Type)
	}
	return nil
}

// open opens the sink's writer; dir is the sinks' directory in the home, runs the SSAs whose
// records are forwarded (for their retention).
func (c SinkConfig) open(dir string, runs func() []*agreementRun, log *slog.Logger) (sink.Writer, error) {
	switch c.Type {
	case "jsonl":
		w, err := sink.OpenJSONL(sink.JSONLConfig{Name: c.Name, Path: c.Path, MaxSize: c.MaxSizeMiB << 20,
			MaxAge: time.Duration(c.MaxAge), Retention: retentionOf(runs), Log: log})
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		return w, nil
	case "syslog":
		cfg, err := c.syslogConfig()
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		return sink.NewSyslog(cfg)
	case "misp-feed":
		w, err := sink.OpenMISPFeed(sink.MISPFeedConfig{Name: c.Name, Dir: c.Path, MaxAttributes: c.MaxAttributes,
			Agreement: agreementOf(runs), Log: log})
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		return w, nil
	default:
		cfg, err := c.webhookConfig(filepath.Join(dir, c.Name+".poison"), log)
		if err != nil {
			return nil, fmt.Errorf("sink %s: %w", c.Name, err)
		}
		return sink.NewWebhook(cfg)
	}
}

// agreementOf looks up an SSA's agreement, as the CTI mappings need it, among runs.
func agreementOf(runs func() []*agreementRun) func(string) (*cti.Agreement, bool) {
	return func(id string) (*cti.Agreement, bool) {
		for _, run := range runs() {
			if run.ssa.ID == id {
				return cti.NewAgreement(run.ssa, run.ssp), true
			}
		}
		return nil, false
	}
}

// retentionOf looks up an SSA's retention among runs.
func retentionOf(runs func() []*agreementRun) func(string) (time.Duration, bool) {
	return func(id string) (time.Duration, bool) {
		for _, run := range runs() {
			if run.ssa.ID != id {
				continue
			}
			h := run.ssa.Policy
			if h == nil || h.Handling == nil || h.Handling.Retention == 0 {
				return 0, false
			}
			return h.Handling.Retention.Std(), true
		}
		return 0, false
	}
}

// ErrSinkSecret means a webhook's authorization or HMAC key cannot be read.
var ErrSinkSecret = errors.New("sink secret unreadable")

// webhookConfig is the webhook writer's config of c, its secrets read, checked; poison is the
// directory of the batches it sets aside.
func (c SinkConfig) webhookConfig(poison string, log *slog.Logger) (sink.WebhookConfig, error) {
	cfg := sink.WebhookConfig{Name: c.Name, URL: c.URL, Body: c.Body, Index: c.Index, Tries: c.Tries,
		PoisonAfter: c.PoisonAfter, PoisonDir: poison, Timeout: time.Duration(c.Timeout), Log: log}
	switch {
	case c.AuthFile != "" && c.AuthEnv != "":
		return cfg, fmt.Errorf("%w: auth-file or auth-env, not both", sink.ErrWebhookConfig)
	case c.AuthFile != "":
		b, err := os.ReadFile(c.AuthFile)
		if err != nil {
			return cfg, fmt.Errorf("%w: auth-file: %w", ErrSinkSecret, err)
		}
		cfg.Authorization = strings.TrimSpace(string(b))
	case c.AuthEnv != "":
		v, ok := os.LookupEnv(c.AuthEnv)
		if !ok || strings.TrimSpace(v) == "" {
			return cfg, fmt.Errorf("%w: auth-env: %s is not set", ErrSinkSecret, c.AuthEnv)
		}
		cfg.Authorization = strings.TrimSpace(v)
	}
	if (c.AuthFile != "" || c.AuthEnv != "") && cfg.Authorization == "" {
		return cfg, fmt.Errorf("%w: the authorization is empty", ErrSinkSecret)
	}
	if c.HMACKeyFile != "" {
		b, err := os.ReadFile(c.HMACKeyFile)
		if err != nil {
			return cfg, fmt.Errorf("%w: hmac-key-file: %w", ErrSinkSecret, err)
		}
		if len(bytes.TrimSpace(b)) < 16 {
			return cfg, fmt.Errorf("%w: hmac-key-file holds %d bytes; want 16 or more", ErrSinkSecret, len(bytes.TrimSpace(b)))
		}
		cfg.HMACKey = bytes.TrimSpace(b)
	}
	err := cfg.Validate()
	return cfg, err
}

// syslogConfig is the syslog writer's config of c, checked.
func (c SinkConfig) syslogConfig() (sink.SyslogConfig, error) {
	cfg := sink.SyslogConfig{Network: c.Network, Address: c.Address, Facility: sink.DefaultFacility,
		Severity: -1, SDID: c.SDID, MaxMessage: c.MaxMessage}
	if c.Facility != nil {
		cfg.Facility = *c.Facility
	}
	if c.Severity != "" && c.Severity != "record" {
		n, err := strconv.Atoi(c.Severity)
		if err != nil || n < 0 || n > 7 {
			return cfg, fmt.Errorf("%w: severity %q: want 0..7 or record", sink.ErrSyslogConfig, c.Severity)
		}
		cfg.Severity = n
	}
	if c.Network == sink.NetTLS {
		name := c.TLSServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(c.Address)
		}
		tc, err := sink.TLSConfig(c.TLSCA, c.TLSCert, c.TLSKey, name)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
	} else if c.TLSCA != "" || c.TLSCert != "" || c.TLSKey != "" {
		return cfg, fmt.Errorf("%w: tls-ca, tls-cert and tls-key need network tls", sink.ErrSyslogConfig)
	}
	err := cfg.Validate() // fills in the defaults: before cfg is returned
	return cfg, err
}

// sinks runs one forwarder per configured sink.
type sinks struct {
	store *storage.Store
	// runs are the SSAs whose received records are forwarded (manager.requesterRuns).
	runs func() []*agreementRun
	dir  string // of the progress files
	log  *slog.Logger
	// base is the sinks' own lifetime, ended by close.
	base   context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex // guards running, which a reload changes
	running []*sinkRun   // in config order
}

// sinkRun is one running forwarder: kick wakes it, quit asks it to stop after the chunk it
// is writing, cancel stops it at once, done is closed when it has stopped and closed its
// writer.
type sinkRun struct {
	f *forwarder
	// secrets are the contents of the files the sink's config names (auth, HMAC key, TLS),
	// as read at its start: a reload restarts a sink whose files changed.
	secrets []string
	kick    chan struct{}
	quit    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// SinkState is what a sink has done and what it lacks: `ssanet sinks`, GET /v1/sinks, the
// sink metrics and, for one SSA, `ssanet monitor`.
type SinkState struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// SSAs are the requested SSAs in force whose records go to this sink, by ID.
	SSAs map[string]SinkSSA `json:"ssas"`
	// Forbidden are the SSAs in force whose redistribution rule forbids this sink: nothing of
	// theirs is forwarded to it, which is no lag.
	Forbidden []string `json:"forbidden,omitempty"`
	// Errors counts the writes the sink refused since the agent started; LastError is the
	// last refusal.
	Errors        uint64    `json:"errors"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	// LastSuccess is when the sink last took records.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// FailingSince is when the current run of refusals began; zero while the sink works.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// Stopped says why the sink forwards nothing until the agent restarts.
	Stopped string `json:"stopped,omitempty"`
	// Confirms says whether the sink's receiver confirms what it takes (see SinkRecords).
	Confirms bool `json:"confirms"`
	// Records counts the records by outcome since the agent started, over every SSA.
	Records SinkRecords `json:"records"`
}

// SinkRecords counts a sink's records by outcome since the agent started (the metric
// ssanet_sink_records_total{sink, outcome}).
type SinkRecords struct {
	// Forwarded are the records in the writes the sink took, set aside ones included, skipped
	// ones not.
	Forwarded uint64 `json:"forwarded"`
	// Confirmed are those of the forwarded the receiver confirmed: RELP answered 200, a
	// webhook 2xx (and no failed _bulk item), JSONL synced to a regular file. Syslog over UDP,
	// TCP or TLS, and JSONL to a pipe or a device, confirm none.
	Confirmed uint64 `json:"confirmed"`
	// Failed are the records in the writes the sink refused, counted at each attempt: a chunk
	// of 512 records refused three times, then taken, counts 1,536 failed and 512 forwarded.
	Failed uint64 `json:"failed"`
	// SetAside are the forwarded records a webhook set aside after its receiver refused their
	// batch (4xx) poison-after times, in HOME/sinks/NAME.poison: kept, not delivered.
	SetAside uint64 `json:"set_aside"`
	// Truncated are the records a syslog sink over UDP cut to its max-message, counted at each
	// attempt like Failed, and those with observables a misp-feed's full event left out.
	Truncated uint64 `json:"truncated"`
	// Skipped are the records passed over, once each, because they have no form in the sink's
	// format (the metric ssanet_sink_records_skipped_total{sink, reason}): unmappable (their
	// format cannot be mapped to STIX, ECS or MISP), unmapped (they map to nothing: no
	// observable for a misp-feed event). The sink's position moves past them.
	Skipped sink.Skips `json:"skipped,omitzero"`
}

func (r *SinkRecords) add(o SinkRecords) {
	r.Forwarded += o.Forwarded
	r.Confirmed += o.Confirmed
	r.Failed += o.Failed
	r.SetAside += o.SetAside
	r.Truncated += o.Truncated
	r.Skipped.Add(o.Skipped)
}

// SinkSSA is a sink's progress through one SSA's records.
type SinkSSA struct {
	// Position is the last sequence number forwarded (a quarantined or a skipped record is
	// passed over).
	Position uint64 `json:"position"`
	// Lag is the records received but not yet forwarded.
	Lag uint64 `json:"lag"`
	// CaughtUp is when the sink last had nothing of this SSA left to forward (or started).
	CaughtUp time.Time `json:"caught_up"`
	// Records counts this SSA's records by outcome since the agent started.
	Records SinkRecords `json:"records"`
}

// Failing reports whether the sink forwards nothing now: stopped, or refusing records.
func (s *SinkState) Failing() bool { return s.Stopped != "" || !s.FailingSince.IsZero() }

// newSinks opens every sink and starts its forwarder; dir holds their progress files.
func newSinks(st *storage.Store, dir string, cfgs []SinkConfig, runs func() []*agreementRun, log *slog.Logger) (*sinks, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sinks{store: st, runs: runs, dir: dir, log: log, base: ctx, cancel: cancel}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		cancel()
		return nil, err
	}
	for _, c := range cfgs {
		r, err := s.start(c)
		if err != nil {
			s.close()
			return nil, err
		}
		s.running = append(s.running, r)
	}
	return s, nil
}

// start opens sink c and starts its forwarder, which goes on from the sink's progress file.
func (s *sinks) start(c SinkConfig) (*sinkRun, error) {
	w, err := c.open(s.dir, s.runs, s.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.base)
	r := &sinkRun{secrets: c.secrets(), kick: make(chan struct{}, 1), quit: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	r.f = &forwarder{store: s.store, runs: s.runs, log: s.log, cfg: c, w: w, path: filepath.Join(s.dir, c.Name+".json"),
		refused: map[string]bool{}, skipLogged: map[string]bool{}, now: time.Now, started: time.Now(), caughtUp: map[string]time.Time{},
		records: map[string]SinkRecords{}, quit: r.quit}
	go func() {
		defer close(r.done)
		r.f.run(ctx, r.kick)
		if err := w.Close(); err != nil {
			s.log.Warn("close sink", "sink", c.Name, "err", err)
		}
	}()
	return r, nil
}

// secrets are the contents of the files c names for its credentials: auth-file,
// hmac-key-file, tls-ca, tls-cert and tls-key ("" for one that is not set or cannot be read).
func (c SinkConfig) secrets() []string {
	var out []string
	for _, f := range []string{c.AuthFile, c.HMACKeyFile, c.TLSCA, c.TLSCert, c.TLSKey} {
		var b []byte
		if f != "" {
			b, _ = os.ReadFile(f) // unreadable: open says so, when the sink starts
		}
		out = append(out, string(b))
	}
	return out
}

// sinkStopGrace is how long a sink a reload removes may take to finish the write it is in
// (a webhook retrying a batch) before it is cut short: its progress then stays before that
// write, which the sink, added again, sends again.
const sinkStopGrace = 10 * time.Second

// stop stops r after the chunk it is writing, or at once after sinkStopGrace, and waits for
// it: its progress is saved and its writer closed.
func (r *sinkRun) stop() {
	close(r.quit)
	t := time.NewTimer(sinkStopGrace)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		r.cancel()
		<-r.done
	}
	r.cancel()
}

// reload makes the running sinks those of cfgs, by name, and says what it changed: a sink whose
// config is the same goes on untouched; a new one is opened (and if one cannot be, none is
// added and nothing changes); one whose config changed is stopped and opened again with the
// new config; one cfgs no longer has stops after the chunk it is writing. Each goes on from
// its progress file, which a removed sink keeps: added again, it goes on where it stopped.
func (s *sinks) reload(cfgs []SinkConfig) ([]string, error) {
	s.mu.RLock()
	old := map[string]*sinkRun{}
	for _, r := range s.running {
		old[r.f.cfg.Name] = r
	}
	s.mu.RUnlock()
	added := map[string]*sinkRun{}
	for _, c := range cfgs {
		if old[c.Name] != nil {
			continue
		}
		r, err := s.start(c)
		if err != nil {
			for _, a := range added {
				a.stop()
			}
			return nil, err
		}
		added[c.Name] = r
	}
	var changes []string
	var errs []error
	next := make([]*sinkRun, 0, len(cfgs))
	for _, c := range cfgs {
		switch r := old[c.Name]; {
		case r == nil:
			next = append(next, added[c.Name])
			changes = append(changes, "sink "+c.Name+" added")
		case reflect.DeepEqual(r.f.cfg, c) && slices.Equal(r.secrets, c.secrets()):
			next = append(next, r)
		default:
			r.stop()
			nr, err := s.start(c)
			if err != nil {
				errs = append(errs, err)
				if nr, err = s.start(r.f.cfg); err != nil {
					s.log.Error("sink stopped: neither its new nor its old config opens; fix config.yaml and reload", "sink", c.Name, "err", err)
					continue
				}
			} else {
				changes = append(changes, "sink "+c.Name+" changed")
			}
			next = append(next, nr)
		}
		delete(old, c.Name)
	}
	// The removed sinks stop before the new list shows: once a sink is gone from states,
	// it writes nothing more.
	for _, name := range slices.Sorted(maps.Keys(old)) {
		old[name].stop()
		changes = append(changes, "sink "+name+" removed")
	}
	s.mu.Lock()
	s.running = next
	s.mu.Unlock()
	return changes, errors.Join(errs...)
}

// kick wakes the forwarders after new records were stored.
func (s *sinks) kick() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.running {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// states is every sink's state, its lag measured against the store now.
func (s *sinks) states() ([]SinkState, error) {
	s.mu.RLock()
	running := slices.Clone(s.running)
	s.mu.RUnlock()
	out := make([]SinkState, 0, len(running))
	last := map[string]uint64{} // the last record received, by SSA
	for _, run := range s.runs() {
		in, err := s.store.InboxState(run.ssa.ID)
		if err != nil {
			return nil, err
		}
		last[run.ssa.ID] = in.Last
	}
	for _, r := range running {
		st := r.f.state(last)
		out = append(out, st)
	}
	return out, nil
}

// stateOf is every sink's state for SSA ssaID alone.
func (s *sinks) stateOf(ssaID string) ([]SinkState, error) {
	all, err := s.states()
	if err != nil {
		return nil, err
	}
	for i := range all {
		one := map[string]SinkSSA{}
		if p, ok := all[i].SSAs[ssaID]; ok {
			one[ssaID] = p
		}
		all[i].SSAs = one
		all[i].Forbidden = slices.DeleteFunc(all[i].Forbidden, func(id string) bool { return id != ssaID })
	}
	return all, nil
}

func (s *sinks) close() {
	s.cancel()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.running {
		<-r.done
	}
}

// forwarder copies every requester SSA's new records to one sink (owned by its goroutine).
type forwarder struct {
	store    *storage.Store
	runs     func() []*agreementRun
	log      *slog.Logger
	cfg      SinkConfig
	w        sink.Writer
	path     string            // of the progress file
	quit     <-chan struct{}   // closed: stop after the chunk being written (a reload removed the sink)
	progress map[string]uint64 // the last record forwarded, by SSA
	refused  map[string]bool   // the SSAs whose redistribution rule forbids this sink, logged
	// truncated is the writer's count of cut messages when truncLogged logged it last.
	truncated   uint64
	truncLogged time.Time
	now         func() time.Time
	started     time.Time
	// failures counts the refusals of the current run of them, unlogged those not logged
	// yet; failLogged is when the last line about them was written.
	failures, unlogged uint64
	failLogged         time.Time
	// skipLogged holds the reasons of skipped records logged already (once each).
	skipLogged map[string]bool

	mu       sync.Mutex // guards what follows, which SinkState shows
	st       SinkState  // Errors, LastError(Time), LastSuccess, FailingSince, Stopped, Records
	caughtUp map[string]time.Time
	records  map[string]SinkRecords // by SSA
}

// state is the forwarder's state; last is the last record received, by SSA in force.
func (f *forwarder) state(last map[string]uint64) SinkState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Name, st.Type, st.SSAs = f.cfg.Name, f.cfg.Type, map[string]SinkSSA{}
	c, ok := f.w.(sink.Confirmer)
	st.Confirms = ok && c.Confirms()
	for id, l := range last {
		if f.refused[id] {
			st.Forbidden = append(st.Forbidden, id)
			continue
		}
		p := f.progress[id]
		at, ok := f.caughtUp[id]
		if !ok {
			at = f.started
		}
		st.SSAs[id] = SinkSSA{Position: p, Lag: l - min(p, l), CaughtUp: at, Records: f.records[id]}
	}
	slices.Sort(st.Forbidden)
	return st
}

// failed counts a refusal and logs it: once when the sink starts failing, then at most once
// a minute with the count since the last line (a sink retried every second once logged 937
// lines in 15 minutes).
func (f *forwarder) failed(err error) {
	now := f.now()
	f.mu.Lock()
	f.st.Errors++
	f.st.LastError, f.st.LastErrorTime = err.Error(), now
	first := f.st.FailingSince.IsZero()
	if first {
		f.st.FailingSince = now
	}
	since := f.st.FailingSince
	f.mu.Unlock()
	f.failures++
	f.unlogged++
	switch {
	case first:
		f.log.Warn("sink failing: its records wait in the store and are retried every second", "sink", f.cfg.Name, "err", err)
	case now.Sub(f.failLogged) >= time.Minute:
		f.log.Warn("sink still failing", "sink", f.cfg.Name, "failures", f.unlogged, "since", since, "err", err)
	default:
		return
	}
	f.unlogged, f.failLogged = 0, now
}

// succeeded records that the sink took records, and logs a recovery.
func (f *forwarder) succeeded() {
	now := f.now()
	f.mu.Lock()
	since := f.st.FailingSince
	f.st.LastSuccess, f.st.FailingSince = now, time.Time{}
	f.mu.Unlock()
	if !since.IsZero() {
		f.log.Info("sink recovered", "sink", f.cfg.Name, "failures", f.failures, "down", now.Sub(since).Round(time.Second))
	}
	f.failures, f.unlogged = 0, 0
}

// run forwards until ctx ends, or the progress file cannot be read: then nothing is
// forwarded, since forwarding from the start would send every record again.
func (f *forwarder) run(ctx context.Context, kick <-chan struct{}) {
	_, statErr := os.Stat(f.path)
	progress, err := loadProgress(f.path)
	if err == nil && errors.Is(statErr, os.ErrNotExist) && f.cfg.ReadFrom == ReadFromEnd {
		err = f.startAtEnd(progress)
	}
	f.mu.Lock()
	f.progress = progress
	if err != nil {
		f.st.Stopped = "its progress file " + f.path + " is unreadable: " + err.Error()
	}
	f.mu.Unlock()
	if err != nil {
		f.log.Error("sink stopped: its progress file is unreadable; repair it, or remove it to forward every record again, then restart the agent",
			"sink", f.cfg.Name, "file", f.path, "err", err)
		return
	}
	t := time.NewTicker(sinkRetry)
	defer t.Stop()
	for {
		for _, run := range f.runs() {
			if f.allowed(run) {
				f.forwardRun(ctx, run)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-f.quit:
			return
		case <-kick:
		case <-t.C:
		}
	}
}

// startAtEnd sets progress, a new sink's, to the last record of each SSA in force, and saves
// it: the sink forwards only records received from now on.
func (f *forwarder) startAtEnd(progress map[string]uint64) error {
	for _, run := range f.runs() {
		in, err := f.store.InboxState(run.ssa.ID)
		if err != nil {
			return err
		}
		progress[run.ssa.ID] = in.Last
	}
	b, err := json.Marshal(progress)
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, b)
}

// quitting reports whether the forwarder was asked to stop.
func (f *forwarder) quitting() bool {
	select {
	case <-f.quit:
		return true
	default:
		return false
	}
}

// loadProgress reads a progress file; a missing one is a sink that forwarded nothing yet.
func loadProgress(path string) (map[string]uint64, error) {
	progress := map[string]uint64{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return progress, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &progress)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSinkProgress, err)
	}
	return progress, nil
}

// allowed reports whether run's SSA lets its records go to this sink, and logs once when not.
func (f *forwarder) allowed(run *agreementRun) bool {
	err := policy.MayRedistribute(run.ssp, f.cfg.Relation)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil && !f.refused[run.ssa.ID] {
		f.log.Warn("records not forwarded: the SSA's redistribution rule forbids this sink", "ssa", run.ssa.ID, "sink", f.cfg.Name, "err", err)
		f.refused[run.ssa.ID] = true
	}
	return err == nil
}

// forwardRun forwards run's records after the progress, chunk by chunk, until none is left,
// the sink refuses some or ctx ends.
func (f *forwarder) forwardRun(ctx context.Context, run *agreementRun) {
	id := run.ssa.ID
	mark := run.ssp.Marking()
	agreement := cti.NewAgreement(run.ssa, run.ssp)
	for ctx.Err() == nil && !f.quitting() {
		recs, err := f.store.Records(id, f.progress[id], forwardRecords, forwardBytes)
		if err != nil {
			f.log.Warn("records not read for a sink; will retry", "ssa", id, "sink", f.cfg.Name, "err", err)
			return
		}
		if len(recs) == 0 {
			f.mu.Lock()
			f.caughtUp[id] = f.now()
			f.mu.Unlock()
			return
		}
		out := make([]ForwardedRecord, 0, len(recs))
		for _, r := range recs {
			if !quarantined(r.Data) { // a record that breaks the SSA goes no further
				out = append(out, forwarded(run, mark, r.Seq, r.ReceivedAt, r.Data))
			}
		}
		// A record with no form in the sink's format never will have one: it is skipped,
		// counted once the rest of its chunk is taken, and the position moves past it.
		out, unmappable := formatRecords(f.cfg.Format, agreement, out)
		n := SinkRecords{Skipped: sink.Skips{Unmappable: uint64(len(unmappable))}}
		if len(out) > 0 {
			aside, cut, skipped := f.setAside(), f.cut(), f.skipped()
			if err := f.w.Write(ctx, out); err != nil {
				if ctx.Err() == nil {
					f.count(id, SinkRecords{Failed: uint64(len(out)), Truncated: f.cut() - cut})
					f.failed(err)
				}
				return
			}
			sk := f.skipped().Since(skipped)
			n.Skipped.Add(sk)
			n.Forwarded, n.SetAside, n.Truncated = uint64(len(out))-min(sk.Total(), uint64(len(out))), f.setAside()-aside, f.cut()-cut
			if c, ok := f.w.(sink.Confirmer); ok && c.Confirms() {
				n.Confirmed = n.Forwarded - min(n.SetAside, n.Forwarded)
			}
			f.succeeded()
			f.logTruncated()
		}
		f.count(id, n)
		if len(unmappable) > 0 {
			f.logSkipped(id, sink.SkipUnmappable, len(unmappable), unmappable[0])
		}
		f.mu.Lock()
		f.progress[id] = recs[len(recs)-1].Seq
		f.mu.Unlock()
		if err := f.save(); err != nil {
			f.log.Error("save sink progress", "sink", f.cfg.Name, "err", err)
		}
	}
}

// setAside is how many records the writer set aside since it was made (0 if it never does).
func (f *forwarder) setAside() uint64 {
	if a, ok := f.w.(sink.SetAsider); ok {
		return uint64(max(a.Poisoned(), 0))
	}
	return 0
}

// cut is how many messages the writer cut to its maximum size since it was made (0 if it never
// does).
func (f *forwarder) cut() uint64 {
	if t, ok := f.w.(interface{ Truncated() uint64 }); ok {
		return t.Truncated()
	}
	return 0
}

// skipped is how many records the writer passed over since it was made (none if it never
// does).
func (f *forwarder) skipped() sink.Skips {
	if s, ok := f.w.(sink.Skipper); ok {
		return s.Skipped()
	}
	return sink.Skips{}
}

// logSkipped logs, once per reason, that n records of SSA id were skipped, err the first's.
func (f *forwarder) logSkipped(id, reason string, n int, err error) {
	if f.skipLogged[reason] {
		return
	}
	f.skipLogged[reason] = true
	f.log.Warn("records skipped: they cannot be mapped to the sink's format; the sink goes on past them (logged once; counted in ssanet_sink_records_skipped_total)",
		"sink", f.cfg.Name, "ssa", id, "format", f.cfg.Format, "reason", reason, "records", n, "err", err)
}

// count adds n to SSA id's and the sink's records by outcome.
func (f *forwarder) count(id string, n SinkRecords) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.records[id]
	r.add(n)
	f.records[id] = r
	f.st.Records.add(n)
}

// logTruncated logs, at most once a minute, how many messages a writer that cuts messages to
// a size (syslog over UDP) has cut since the last line.
func (f *forwarder) logTruncated() {
	n := f.cut()
	if n > f.truncated && time.Since(f.truncLogged) >= time.Minute {
		f.log.Warn("records cut to the sink's bound: a syslog sink's max-message (raise it up to 65507, or use tcp, tls or relp), a misp-feed's max-attributes (raise it)",
			"sink", f.cfg.Name, "truncated", n-f.truncated, "total", n)
		f.truncated, f.truncLogged = n, time.Now()
	}
}

func (f *forwarder) save() error {
	b, err := json.Marshal(f.progress)
	if err != nil {
		return err
	}
	return writeFileAtomic(f.path, b)
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
	mark := run.ssp.Marking()
	for _, rec := range recs {
		out = append(out, forwarded(run, mark, rec.Seq, rec.ReceivedAt, rec.Data))
	}
	return out, nil
}

// formatRecords sets the Doc of each record to its form in format (cti.FormatSTIX: a
// bundle; cti.FormatECS: a document) and returns those that have one, in order, and the
// errors of those that have none (their format is not one the mappings read): a mapping is a
// function of the record, so they never will. raw leaves the records in their envelope.
func formatRecords(format string, a *cti.Agreement, recs []ForwardedRecord) (kept []ForwardedRecord, unmappable []error) {
	if format == cti.FormatRaw || format == "" {
		return recs, nil
	}
	kept = recs[:0]
	for _, r := range recs {
		doc, err := cti.Marshal(format, a, cti.Record{Seq: r.Seq, Received: r.Received, Format: r.Format, Data: r.Data()})
		if err != nil {
			unmappable = append(unmappable, fmt.Errorf("record %d of SSA %s as %s: %w", r.Seq, r.SSAID, format, err))
			continue
		}
		r.Doc = doc
		kept = append(kept, r)
	}
	return kept, unmappable
}

// forwarded is a kept record as sinks receive it, with the handling marking of its batches.
func forwarded(run *agreementRun, mark policy.Marking, seq uint64, at time.Time, data []byte) ForwardedRecord {
	fr := ForwardedRecord{SSAID: run.ssa.ID, Seq: seq, Received: at, TLP: mark.TLP, Marking: mark.MarkingRef, SSP: mark.SSP,
		Quarantined: quarantined(data)}
	fr.Format, data = run.untag(data)
	if json.Valid(data) {
		fr.Record = data
	} else {
		fr.Text = string(data)
	}
	return fr
}
