package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.yaml.in/yaml/v3"

	"github.com/ssanet/ssanet/agent/taxii"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// ErrInitialised means a home already holds an identity key, which Init never overwrites.
var ErrInitialised = errors.New("agent: home already initialised")

// ErrConfigIncomplete means config.yaml is empty or was cut short (a failed write): the agent
// refuses to start on defaults, which would listen on every interface with mDNS on and no
// allow-list.
var ErrConfigIncomplete = errors.New("agent: config incomplete")

// ErrPermissions means a file or directory of the agent's home can be changed or read by
// users other than its owner: the agent refuses it, and the error says which chmod to run.
var ErrPermissions = errors.New("agent: unsafe permissions")

// requiredKeys are the config keys that decide who can reach the agent and what it agrees
// to: every config.yaml states them, so that one cut short before them is refused.
var requiredKeys = []string{"listen", "mdns", "dht-mode", "accept"}

// Files in an agent's home.
const (
	KeyFile    = "identity.key"
	ConfigFile = "config.yaml"
	DataDir    = "data"
	SocketFile = "control.sock"
)

// Config is an agent's configuration, read from config.yaml in its home.
type Config struct {
	// Contact is this organisation as a participant of its SSAs (the peer ID is filled in).
	Contact protocol.Participant `yaml:"contact"`
	// Listen lists the multiaddrs to listen on (TCP and QUIC).
	Listen []string `yaml:"listen"`
	// Security lists the connection security transports, "noise" and "tls", in order of
	// preference (a connection uses the first of its dialler's that the other side
	// supports); empty: noise, tls. It is what this agent can honour of an SSA's
	// method.security. QUIC's handshake is TLS: a QUIC listen address needs tls.
	Security []string `yaml:"security,omitempty"`
	// Bootstrap lists multiaddrs (with /p2p/ID) of agents to join the directory through.
	Bootstrap []string `yaml:"bootstrap,omitempty"`
	// MDNS enables LAN discovery of other agents (multicast on the local network).
	MDNS bool `yaml:"mdns"`
	// DHTMode is "server" (default) or "client", for agents that cannot accept connections.
	DHTMode string `yaml:"dht-mode"`
	// Allow, when not empty, is the community allow-list: only these peer IDs may connect
	// (with directory: amino, where any peer connects, only these may use the ssanet
	// protocols: negotiation, exchange, monitor, offers; members.go).
	Allow []string `yaml:"allow,omitempty"`
	// Community, when set, is the file of the community roster this agent starts from (its
	// trust anchor, from the community's admins): the roster then decides who may connect,
	// in place of Allow (roster.go).
	Community string `yaml:"community,omitempty"`
	// Directory is "ssanet" (default when empty: the private DHT of ssanet agents, prefix
	// /ssanet) or "amino" (the public IPFS DHT, /ipfs/kad/1.0.0; discovery.CommunityKey).
	// With amino, Allow or the roster is enforced per protocol, at each stream open, instead
	// of per connection (members.go).
	Directory string `yaml:"directory,omitempty"`
	// DirectoryCommunity names the community in the public directory's keys; required with
	// directory: amino.
	DirectoryCommunity string `yaml:"directory-community,omitempty"`
	// Accept says how proposals and revisions this agent receives are decided: "auto"
	// accepts those that satisfy its own template and rejects the others; "manual" holds
	// them for an operator.
	Accept string `yaml:"accept"`
	// EncryptionKeyFile, when set, enables encryption at rest with the 32-byte key (hex) in
	// this file; the environment variable SSANET_STORAGE_KEY (hex) overrides it.
	EncryptionKeyFile string `yaml:"encryption-key-file,omitempty"`
	// Sinks forward received records to the security management server.
	Sinks []SinkConfig `yaml:"sinks,omitempty"`
	// Ingest configures the sources of raw records of a provider.
	Ingest IngestConfig `yaml:"ingest,omitempty"`
	// TAXII, when its listen is set, serves the records of the SSAs it exposes as TAXII 2.1
	// collections (agent/taxii).
	TAXII *taxii.Config `yaml:"taxii,omitempty"`
	// Metrics, when set, is a host:port serving Prometheus metrics at /metrics and the
	// health endpoints /healthz and /readyz: loopback unless MetricsRemote.
	Metrics string `yaml:"metrics,omitempty"`
	// MetricsRemote allows a metrics address that is not loopback (an interface address, or
	// an empty host for all of them), which anyone who reaches it can scrape.
	MetricsRemote bool `yaml:"metrics-remote,omitempty"`
	// Pprof serves the Go profiler (net/http/pprof) under /debug/pprof/ on the metrics
	// address, which must then be loopback (pprof.go). Off by default.
	Pprof bool `yaml:"pprof,omitempty"`
	// RetentionCheck is how often received records past their retention are deleted.
	RetentionCheck Duration `yaml:"retention-check,omitempty"`
	// MessageTimeout bounds every read and write on a stream.
	MessageTimeout Duration `yaml:"message-timeout,omitempty"`
	// RetryInterval is how long an unacknowledged message waits before it is sent again; the
	// wait doubles with each failed attempt, up to 10 minutes, and ends when a connection
	// with the peer comes up.
	RetryInterval Duration `yaml:"retry-interval,omitempty"`
	// RequestValidity is how long a request or a revision this agent sends stays open for
	// its peer's answer (its SSA's expires): past it, both sides end the request (expired)
	// or drop the revision, each at its own clock. Default DefaultRequestValidity.
	RequestValidity Duration `yaml:"request-validity,omitempty"`
	// MaxAgreementsPerPeer bounds the SSAs a requester may hold with this provider, in force
	// or proposed: a request past it is rejected (reason agreement-limit).
	MaxAgreementsPerPeer int `yaml:"max-agreements-per-peer,omitempty"`
	// MaxQueuedPerPeer bounds the refined records queued for one requester, over all its
	// SSAs, waiting for its acknowledgement: past it, ingest queues nothing more for that
	// requester (and counts what it leaves out) until acknowledgements make room.
	MaxQueuedPerPeer int64 `yaml:"max-queued-per-peer,omitempty"`
	// LogLevel, when set, is the level of the agent's log (debug, info, warn or error),
	// applied at start and at each reload; empty: the level `ssanet run --log-level` gives.
	LogLevel string `yaml:"log-level,omitempty"`
	// StorageReserveMiB is the free space (MiB, besides the store's LSM tree) below which
	// records are paused; 0: storage.DefaultReserve (32 MiB). At least storage.MinReserve.
	StorageReserveMiB uint64 `yaml:"storage-reserve-mib,omitempty"`
	// StorageProfile is the store's tuning: "default" (also when empty) or "sensor", which
	// bounds the store's memory for a small machine (storage.ProfileSensor) and sets the Go
	// runtime's soft memory limit (SensorMemoryLimit).
	StorageProfile string `yaml:"storage-profile,omitempty"`
	// Reachability is auto (AutoNAT decides), public or private (reach.go).
	Reachability string `yaml:"reachability,omitempty"`
	// Relays lists multiaddrs (with /p2p/ID) of circuit relays to reserve a slot at while
	// this agent is private; empty: the allow-list's peers that run one.
	Relays []string `yaml:"relays,omitempty"`
	// Relay is the relay service this agent may run for its community (reach.go).
	Relay RelayConfig `yaml:"relay,omitempty"`
}

// SensorMemoryLimit is the soft limit of the Go runtime's memory (debug.SetMemoryLimit)
// that storage-profile sensor sets, unless the environment sets one (GOMEMLIMIT). Badger
// builds each table it writes in memory, in buffers the garbage collector frees: without a
// limit the heap grows to twice what is live between two collections. Past the limit the
// collector runs more often (more CPU), never fails an allocation. README "Performance" has
// what it costs.
const SensorMemoryLimit = 100 << 20

// applyMemoryLimit sets SensorMemoryLimit for storage-profile sensor, unless GOMEMLIMIT is
// set, and returns the limit it set (0: none).
func (c *Config) applyMemoryLimit() int64 {
	if c.StorageProfile != string(storage.ProfileSensor) || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	debug.SetMemoryLimit(SensorMemoryLimit)
	return SensorMemoryLimit
}

// Defaults of the per-peer bounds, sized for a sensor: a requester may hold a few SSAs
// (one per kind of record and policy), and a day or so of alerts, a few hundred MB of disk,
// may wait for it.
const (
	DefaultMaxAgreementsPerPeer = 16
	DefaultMaxQueuedPerPeer     = 1_000_000
	// DefaultRequestValidity leaves the provider's operator a day to decide on a request
	// held for them.
	DefaultRequestValidity = Duration(24 * time.Hour)
)

// bootstrapPeers parses the bootstrap multiaddrs.
func (c *Config) bootstrapPeers() ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range c.Bootstrap {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("config: bootstrap: %q is not a multiaddr: %w", s, err)
		}
		pi, err := peer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("config: bootstrap: %q must end in /p2p/PEERID: %w", s, err)
		}
		out = append(out, *pi)
	}
	return out, nil
}

// Duration is a time.Duration written as in Go ("30s").
type Duration time.Duration

// UnmarshalYAML reads a Go duration. Its error is a *yaml.TypeError, which the decoder
// collects with the others of the document instead of stopping at it.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration such as 30s", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes a Go duration.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultConfig is the configuration `ssanet init` writes.
func DefaultConfig() Config {
	return Config{
		Listen:         []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		Accept:         "auto",
		MDNS:           true,
		DHTMode:        "server",
		MessageTimeout: Duration(30 * time.Second),
		RetryInterval:  Duration(5 * time.Second),
		RetentionCheck: Duration(time.Minute),

		RequestValidity: DefaultRequestValidity,

		MaxAgreementsPerPeer: DefaultMaxAgreementsPerPeer,
		MaxQueuedPerPeer:     DefaultMaxQueuedPerPeer,
	}
}

// Validate checks a configuration and says what to fix: the first problem of the network
// part, the negotiation and limits part, then the record sources and sinks.
func (c *Config) Validate() error {
	for _, check := range []func() error{c.validateNetwork, c.validateReach, c.validateLimits, c.validateSinks, c.validateIngest, c.TAXII.Validate} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateNetwork checks who the agent listens to and dials: listen, bootstrap, dht-mode,
// allow and metrics.
func (c *Config) validateNetwork() error {
	if len(c.Listen) == 0 {
		return errors.New("config: listen needs at least one multiaddr, e.g. /ip4/0.0.0.0/tcp/4001")
	}
	for _, a := range c.Listen {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("config: listen: %q is not a multiaddr: %w", a, err)
		}
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if _, err := c.bootstrapPeers(); err != nil {
		return err
	}
	if c.DHTMode != "server" && c.DHTMode != "client" {
		return fmt.Errorf("config: dht-mode must be server or client, not %q", c.DHTMode)
	}
	for _, p := range c.Allow {
		if _, err := peer.Decode(p); err != nil {
			return fmt.Errorf("config: allow: %q is not a peer ID: %w", p, err)
		}
	}
	if c.Community != "" && len(c.Allow) > 0 {
		return errors.New("config: allow and community exclude each other: a community's roster says who may connect; remove allow")
	}
	switch {
	case c.Directory != "" && c.Directory != "ssanet" && c.Directory != "amino":
		return fmt.Errorf("config: directory must be ssanet (the private DHT, default) or amino (the public IPFS DHT), not %q", c.Directory)
	case c.Directory == "amino" && c.DirectoryCommunity == "":
		return errors.New("config: directory: amino needs directory-community: a name for this community, part of every key it advertises under in the public DHT")
	}
	if c.Metrics != "" {
		host, _, err := net.SplitHostPort(c.Metrics)
		switch ip := net.ParseIP(host); {
		case err != nil || (ip == nil && (host != "" || !c.MetricsRemote)):
			return fmt.Errorf("config: metrics must be a host:port with an IP address, such as 127.0.0.1:9464, not %q", c.Metrics)
		case !c.MetricsRemote && !ip.IsLoopback():
			return fmt.Errorf("config: metrics %q is not a loopback address: set metrics-remote: true to serve metrics to other hosts, or use 127.0.0.1:PORT", c.Metrics)
		}
	}
	return c.checkPprof()
}

// security is the connection security transports the agent uses, by name.
func (c *Config) security() []string {
	if len(c.Security) == 0 {
		return slices.Clone(defaultSecurity)
	}
	return c.Security
}

// validateSecurity checks the security transports, and that a QUIC listen address, whose
// handshake is TLS, comes with tls.
func (c *Config) validateSecurity() error {
	for i, s := range c.Security {
		if _, ok := securityIDs[s]; !ok {
			return fmt.Errorf("config: security: %q is not a connection security this agent has: list noise, tls or both", s)
		}
		if slices.Contains(c.Security[:i], s) {
			return fmt.Errorf("config: security: %q is listed twice", s)
		}
	}
	if slices.Contains(c.security(), "tls") {
		return nil
	}
	for _, a := range c.Listen {
		if strings.Contains(a, "/quic") || strings.Contains(a, "/webtransport") {
			return fmt.Errorf("config: listen: %q is QUIC, whose handshake is TLS, but security does not list tls: add tls to security or drop the address", a)
		}
	}
	return nil
}

// validateLimits checks the decisions, timers and bounds.
func (c *Config) validateLimits() error {
	if c.Accept != "auto" && c.Accept != "manual" {
		return fmt.Errorf("config: accept must be auto or manual, not %q", c.Accept)
	}
	if c.MessageTimeout <= 0 || c.RetryInterval <= 0 || c.RetentionCheck <= 0 {
		return errors.New("config: message-timeout, retry-interval and retention-check must be positive")
	}
	if c.RequestValidity < 0 || (c.RequestValidity > 0 && c.RequestValidity < Duration(time.Second)) {
		return fmt.Errorf("config: request-validity must be at least 1s (default %s), not %s", time.Duration(DefaultRequestValidity), time.Duration(c.RequestValidity))
	}
	if c.MaxAgreementsPerPeer < 1 || c.MaxQueuedPerPeer < 1 {
		return fmt.Errorf("config: max-agreements-per-peer (default %d) and max-queued-per-peer (default %d) must be at least 1; leave them out for the defaults",
			DefaultMaxAgreementsPerPeer, DefaultMaxQueuedPerPeer)
	}
	if _, err := levelOf(c.LogLevel); c.LogLevel != "" && err != nil {
		return fmt.Errorf("config: log-level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if err := (&storage.Options{Reserve: c.StorageReserveMiB << 20}).Validate(); err != nil {
		return fmt.Errorf("config: storage-reserve-mib: at least %d: %w", storage.MinReserve>>20, err)
	}
	if err := (&storage.Options{Profile: storage.Profile(c.StorageProfile)}).Validate(); err != nil {
		return fmt.Errorf("config: storage-profile: %w", err)
	}
	return nil
}

// validateSinks checks each sink, and that no two share a name (a sink keeps its progress
// in sinks/NAME.json).
func (c *Config) validateSinks() error {
	named := map[string]bool{}
	for i := range c.Sinks {
		if err := checkSink(&c.Sinks[i], named); err != nil {
			return err
		}
	}
	return nil
}

// checkSink validates sink s and its name against those of the sinks before it (named), to
// which it adds the name: for Validate and, sink by sink, CheckConfig.
func checkSink(s *SinkConfig, named map[string]bool) error {
	if err := s.validate(); err != nil {
		return err
	}
	if strings.ContainsAny(s.Name, `/\`) {
		return fmt.Errorf("config: sink name %q: a name is a plain word, without / or \\", s.Name)
	}
	if named[s.Name] {
		return fmt.Errorf("config: two sinks are named %q (a sink without a name is named after its type): give each a name of its own", s.Name)
	}
	named[s.Name] = true
	return nil
}

// validateIngest checks the followed files, the TLS listener and the Unix sockets.
func (c *Config) validateIngest() error {
	if t := c.Ingest.SyslogTLS; t != nil && (t.Address == "" || t.Cert == "" || t.Key == "") {
		return fmt.Errorf("config: ingest.syslog-tls needs an address (HOST:PORT), a cert and a key (PEM files)")
	}
	paths := map[string]bool{}
	for _, u := range c.Ingest.Unix {
		if !filepath.IsAbs(u.Path) || paths[u.Path] {
			return fmt.Errorf("config: ingest.unix path %q: each socket needs an absolute path of its own", u.Path)
		}
		paths[u.Path] = true
		if u.Type != UnixStream && u.Type != UnixDgram {
			return fmt.Errorf("config: ingest.unix %s: type %q is not %s or %s", u.Path, u.Type, UnixStream, UnixDgram)
		}
		if u.Format != "" && !slices.Contains(policy.Formats(), u.Format) {
			return fmt.Errorf("config: ingest.unix %s: format %q is not one of %v", u.Path, u.Format, policy.Formats())
		}
		if _, ok := unixModes[u.Mode]; !ok {
			return fmt.Errorf("config: ingest.unix %s: mode %q is not \"0600\" or \"0660\"", u.Path, u.Mode)
		}
	}
	for _, f := range c.Ingest.Follow {
		if err := f.validate(); err != nil {
			return err
		}
	}
	return nil
}

// validate checks a followed file's path and format.
func (f FollowConfig) validate() error {
	if f.Path == "" || !slices.Contains(policy.Formats(), f.Format) {
		return fmt.Errorf("config: ingest.follow needs a path and a format among %v", policy.Formats())
	}
	return nil
}

const configHeader = `# ssanet agent configuration. Unknown keys are refused.
#
# contact:              this organisation as it signs every SSA, as requester and as
#                       provider (affiliation, name, email, phone, address); a template's
#                       or offer's participant block for this side can only add a field
#                       left empty here: a field it sets otherwise is ignored with a warning
# listen:               multiaddrs to listen on; tcp and quic-v1; port 0 picks a free port
# security:             optional connection security transports, noise and/or tls, in order
#                       of preference (default [noise, tls]): what this agent can honour of
#                       an SSA's method.security; a quic-v1 address needs tls
# bootstrap:            multiaddrs (ending in /p2p/PEERID) of agents to join the directory
#                       (DHT) through
# mdns:                 discover agents on the local network with mDNS (multicast)
# dht-mode:             server (answer directory queries) or client (for agents that cannot
#                       accept connections, e.g. sensors behind NAT)
# allow:                optional community allow-list of peer IDs; empty: anyone may connect
#                       and negotiate
# community:            optional file of a signed community roster (from its admins): the
#                       trust anchor; the roster, kept up to date by the members, then says
#                       who may connect, in place of allow ('ssanet community')
# directory:            optional: ssanet (default: the private DHT of ssanet agents) or amino
#                       (the public IPFS DHT; needs directory-community). With amino any peer
#                       may connect (for the DHT), and allow or community decides who may
#                       negotiate, deliver, monitor and fetch offers: checked at each stream
#                       open; without either, anyone may
# directory-community:  with directory: amino, this community's name in the public keys
# accept:               auto (accept proposals and revisions that satisfy this agent's own
#                       template, reject the others) or manual (hold them for
#                       'ssanet ssa approve|decline ID')
# encryption-key-file:  optional file with a 32-byte hex key: encrypts the store at rest
#                       (SSANET_STORAGE_KEY overrides it)
# sinks:                where received records go (requester): a list of
#                       {type: jsonl, path: FILE, optional max-size-mib, max-age, format} |
#                       {type: syslog, network: udp|tcp|tls|relp,
#                       address: HOST:PORT, optional facility, severity, sd-id, max-message,
#                       tls-ca, tls-cert, tls-key, tls-server-name} | {type: webhook, url: URL,
#                       optional auth-file or auth-env, hmac-key-file, body: json|ndjson|es-bulk,
#                       index, tries, poison-after, timeout, format} | {type: misp-feed,
#                       path: DIR, optional max-attributes}; format (jsonl, webhook):
#                       raw (default), stix (a STIX 2.1 bundle per record) or ecs (an ECS
#                       document per record); optional name and
#                       relation (organisation|community|any, checked against the SSA's
#                       redistribution rule)
# ingest:               sources of raw records (provider): syslog-udp / syslog-tcp
#                       (HOST:PORT; TCP takes octet-counted or newline-framed messages),
#                       syslog-tls: {address: HOST:PORT, cert: PEM, key: PEM, client-ca: PEM},
#                       unix: [{path: SOCKET, type: stream|dgram, format: eve, mode: "0600"|"0660"}]
#                       (Suricata's unix_stream / unix_dgram eve-log outputs),
#                       follow: [{path: FILE, format: eve|syslog|...}]
# metrics:              optional loopback HOST:PORT serving Prometheus metrics at /metrics,
#                       and /healthz (alive) and /readyz (ready)
# metrics-remote:       true allows a metrics address that is not loopback (IP:PORT, or
#                       :PORT for every interface): anyone who reaches it reads the metrics
# pprof:                true serves the Go profiler at /debug/pprof/ on the metrics address
#                       (which must then be loopback), for go tool pprof; default false
# retention-check:      how often received records past their retention are deleted
# message-timeout:      deadline of every read and write on a stream
# retry-interval:       first wait before an unacknowledged message is sent again (doubles
#                       per failed attempt up to 10m; a new connection to the peer ends it)
# request-validity:     how long a request or revision this agent sends waits for an answer
#                       (default 24h); then both sides let it expire, each at its own clock
# max-agreements-per-peer: SSAs one requester may hold with this provider, in force or
#                       proposed (default 16); a request past it is rejected
#                       (agreement-limit)
# max-queued-per-peer:  refined records queued for one requester awaiting its
#                       acknowledgement (default 1000000); past it ingest queues nothing
#                       more for it, counting what it leaves out, until acknowledgements
#                       make room
# log-level:            optional debug, info, warn or error; applied at start and at each
#                       reload (SIGHUP); empty: ssanet run's --log-level
# storage-reserve-mib:  free disk space (MiB, besides the store's tables) below which records
#                       pause: ingest stops, received batches are not acknowledged; default
#                       32, at least 16 (what the store may write on its own)
# storage-profile:      default, or sensor: memory bounded for a small machine (smaller
#                       caches and tables, mapped file pages handed back, a soft limit of
#                       the Go heap unless GOMEMLIMIT sets one)
`

// WriteConfig writes a documented config.yaml.
func WriteConfig(path string, c Config) error {
	body, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(configHeader), body...), 0o600)
}

// LoadConfig reads config.yaml strictly: an unknown key is an error naming it and its line;
// an empty file, one cut short (no final newline, or without one of requiredKeys) is refused.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w (run 'ssanet init' to create the agent's home)", err)
	}
	if err := complete(data); err != nil {
		return c, fmt.Errorf("config %s: %w; restore it from a backup, or compare it with the config 'ssanet init' writes in a new home", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, c.Validate()
}

// complete checks that a config was written to its end: not empty, ending with a newline, a
// mapping that states every one of requiredKeys.
func complete(data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	if len(doc.Content) == 0 {
		return fmt.Errorf("%w: it is empty (was a write cut short?)", ErrConfigIncomplete)
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		return fmt.Errorf("%w: it does not end with a newline, so it may have been cut short", ErrConfigIncomplete)
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: line %d: the config is a mapping of keys such as listen and accept", ErrConfigIncomplete, top.Line)
	}
	for _, k := range requiredKeys {
		if !slices.ContainsFunc(top.Content, func(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Value == k }) {
			return fmt.Errorf("%w: it has no %s: key (it may have been cut short); every config states %s",
				ErrConfigIncomplete, k, strings.Join(requiredKeys, ", "))
		}
	}
	return nil
}

// Init creates an agent home: an Ed25519 identity key and a documented config.yaml with cfg.
// It refuses to overwrite an existing key.
func Init(home string, cfg Config) (peer.ID, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", fmt.Errorf("create home: %w", err)
	}
	keyPath := filepath.Join(home, KeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return "", fmt.Errorf("%w: %s exists", ErrInitialised, keyPath)
	}
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return "", err
	}
	raw, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(keyPath, raw, 0o600); err != nil {
		return "", fmt.Errorf("write key: %w", err)
	}
	if err := WriteConfig(filepath.Join(home, ConfigFile), cfg); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return peer.IDFromPrivateKey(k)
}

// LoadKey reads the identity key of a home, which only its owner may read or write.
func LoadKey(home string) (crypto.PrivKey, error) {
	path := filepath.Join(home, KeyFile)
	if err := CheckPrivate(path, 0o077); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w (run 'ssanet init')", err)
	}
	k, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", filepath.Join(home, KeyFile), err)
	}
	return k, nil
}

// CheckHome refuses a home that users other than its owner can write (they could replace the
// config, the key or the control socket), or that another user owns.
func CheckHome(home string) error {
	return CheckPrivate(home, 0o022)
}

// CheckPrivate checks that path is owned by this process's user and has none of the
// permission bits in forbidden (0o077 for a secret, 0o022 for what others must not write).
// It names the chmod or chown that fixes it.
func CheckPrivate(path string, forbidden os.FileMode) error {
	info, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if info.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link; the agent's home and key are plain directories and files", ErrPermissions, path)
	}
	if owner, ok := ownerOf(info); ok && owner != os.Geteuid() {
		return fmt.Errorf("%w: %s belongs to user %d, not to the user %d that runs ssanet: run chown %d %s, or run ssanet as its owner",
			ErrPermissions, path, owner, os.Geteuid(), os.Geteuid(), path)
	}
	if perm := info.Mode().Perm(); perm&forbidden != 0 {
		return fmt.Errorf("%w: %s has mode %04o, which lets others %s it: run chmod %04o %s",
			ErrPermissions, path, perm, map[bool]string{true: "read or change", false: "change"}[forbidden&0o044 != 0], perm&^forbidden, path)
	}
	return nil
}

// ownerOf is the user ID owning a file, where the system says.
func ownerOf(info os.FileInfo) (int, bool) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), true
	}
	return 0, false
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
