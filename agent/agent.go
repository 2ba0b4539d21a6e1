package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// compiledFilters is how many compiled filter expressions an agent keeps (policy.Compiler):
// agreements made from the same offers and templates share a few expressions.
const compiledFilters = 64

// Agent is one domain's running ssanet agent.
type Agent struct {
	home    string
	cfg     Config
	log     *slog.Logger
	self    *protocol.Identity
	host    host.Host
	store   *storage.Store
	disk    *diskWatch
	metrics *prometheus.Registry
	counts  *counters
	neg     *negotiator
	mgr     *manager
	sinks   *sinks
	dir     *discovery.Directory
	roster  *community // the community roster (roster.go); holds none outside a community
	// refusals logs refused messages and batches, rate-limited per peer and reason.
	refusals *refusalLog
	// reach keeps the last failure to reach each peer, for `ssanet peers` (dialerr.go).
	reach *reachLog
	// compiler translates SSAs into SSPs for the negotiation point (Check) and the
	// management point (Compile), sharing the filter expressions they compile.
	compiler *policy.Compiler

	// The enforcement points and the monitor around the management point (startExchange).
	deliver  *deliverer
	refiner  *refiner
	receiver *receiver
	monitor  *monitor
	sources  *sources
	// status keeps the flow samples and verdicts of the status snapshot (status.go).
	status *statusKeeper

	// allow is the community allow-list, which the gater reads and a reload replaces.
	allow *allowList
	// level is the logger's level, set from config's log-level (else startLevel) at start
	// and at each reload; nil when the caller's logger has no level to set.
	level      *slog.LevelVar
	startLevel slog.Level
	reloads    *prometheus.CounterVec

	stop     context.CancelFunc
	wg       sync.WaitGroup
	inbound  inbound
	closeMu  sync.Mutex
	closed   bool
	stopping atomic.Bool // set when Close starts, for /readyz
	closeErr error
}

// Options are what the caller decides beyond config.yaml.
type Options struct {
	Logger *slog.Logger
	// Now is the clock; nil: time.Now. Tests pass their own.
	Now func() time.Time
	// Level, if not nil, is the level of Logger's handler: the agent sets it from config.yaml's
	// log-level at start and at each reload, and back to its value at New when the config has
	// none.
	Level *slog.LevelVar
}

// New starts an agent from its home: identity key, config, store, libp2p host and stream
// handlers. Close stops it.
func New(home string, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = discardLogger()
	}
	if err := CheckHome(home); err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(filepath.Join(home, ConfigFile))
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(home)
	if err != nil {
		return nil, err
	}
	self, err := protocol.NewIdentity(key)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{home: home, cfg: cfg, log: log, self: self, metrics: prometheus.NewRegistry(), stop: cancel,
		compiler: policy.NewCompiler(compiledFilters)}
	a.allow, a.level, a.reloads = newAllowList(cfg.Allow), opts.Level, newReloadCounter(a.metrics)
	if a.level != nil {
		a.startLevel = a.level.Level()
		a.setLevel()
	}
	a.counts = newCounters(a.metrics, log, now)
	a.refusals = newRefusalLog(log, now, a.counts.refusedMessages)
	if err := a.start(ctx, key, now); err != nil {
		// What failed to start is the error to report; Close only releases what was built.
		_ = a.Close()
		return nil, err
	}
	log.Info("agent started", "peer", a.host.ID(), "addrs", a.Addrs())
	return a, nil
}

// start builds the agent's parts in dependency order: nothing starts before what it uses
// exists. Close releases those that were built.
func (a *Agent) start(ctx context.Context, key crypto.PrivKey, now func() time.Time) error {
	encKey, err := storageKey(a.home, a.cfg)
	if err != nil {
		return err
	}
	if l := a.cfg.applyMemoryLimit(); l > 0 {
		a.log.Info("memory limit set (storage-profile sensor)", "bytes", l)
	}
	if a.store, err = storage.Open(filepath.Join(a.home, DataDir), storage.Options{EncryptionKey: encKey, Logger: a.log,
		Reserve: a.cfg.StorageReserveMiB << 20, Profile: storage.Profile(a.cfg.StorageProfile)}); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	a.disk = newDiskWatch(a.store.Space, a.log, a.metrics)
	a.goRun(func() { a.disk.run(ctx) })
	if err := a.startCommunity(now); err != nil {
		return err
	}
	if err := a.startHost(key); err != nil {
		return err
	}
	book, err := loadAddrBook(filepath.Join(a.home, addrBookFile), a.host.Peerstore())
	if err != nil {
		return err
	}
	// The directory comes before the management point, whose delivery loops for records
	// queued before a restart start at once and look up their peers in it.
	boot, _ := a.cfg.bootstrapPeers() // validated with the config
	if a.dir, err = discovery.New(a.host, a.self, discovery.Config{Bootstrap: boot, Client: a.cfg.DHTMode == "client",
		Amino: a.cfg.Directory == "amino", Community: a.cfg.DirectoryCommunity,
		MDNS: a.cfg.MDNS && !loopbackOnly(a.cfg.Listen), Logger: a.log,
		Allowed: a.member, Refused: a.offersRefused}, a.store.Offers, now); err != nil {
		return err
	}
	a.reach = newReachLog(now)
	if err := a.startExchange(now); err != nil {
		return err
	}
	if a.neg, err = newNegotiator(a.host, a.self, a.store, a.log, now, negotiatorConfig{
		MessageTimeout:       time.Duration(a.cfg.MessageTimeout),
		RetryInterval:        time.Duration(a.cfg.RetryInterval),
		RequestValidity:      time.Duration(a.cfg.RequestValidity),
		AutoAccept:           a.cfg.Accept == "auto",
		MaxAgreementsPerPeer: a.cfg.MaxAgreementsPerPeer,
		Contact:              a.cfg.Contact,
		Methods:              methods{protocols: deliveryProtocols, security: a.cfg.security()},
		Addrs:                a.Addrs,
		Offers:               a.store.Offers,
		Enforceable:          a.compiler.Check,
		FetchOffers:          a.fetchOffers,
		FindAddrs:            a.findAddrs,
		Member:               a.member,
		Book:                 book,
		Refusals:             a.refusals,
		Reach:                a.reach,
		Transitions:          a.counts.negotiations,
		Rejections:           a.counts.rejections,
		AgreementChanged:     a.mgr.agreementChanged,
		Cancelled:            a.mgr.cancelled,
	}); err != nil {
		return err
	}
	a.host.Network().Notify(&network.NotifyBundle{ConnectedF: a.neg.connected})
	// Only the community's members may use these protocols (members.go).
	a.host.SetStreamHandler(ProtocolNegotiate, a.inbound.serve(a.membersOnly("negotiate", a.neg.handleStream)))
	a.host.SetStreamHandler(ProtocolExchange, a.inbound.serve(a.membersOnly("exchange", a.receiver.handleExchange)))
	a.host.SetStreamHandler(ProtocolMonitor, a.inbound.serve(a.membersOnly("monitor", a.monitor.handleMonitor)))
	a.runCommunity(ctx)
	a.warnOpenToAll()
	a.goRun(func() { a.neg.resendLoop(ctx) })
	every := time.Duration(a.cfg.RetentionCheck)
	ret := &retention{store: a.store, runs: a.mgr.requesterRuns, log: a.log, now: now, ledger: a.counts.ledger}
	a.goRun(func() { ret.run(ctx, every) })
	a.goRun(func() { a.monitor.assessmentLoop(ctx, every) })
	a.status = newStatusKeeper(statusSources{runs: a.mgr.runsInForce, store: a.store, sinks: a.sinks.states,
		assess: a.monitor.assess, requested: a.mgr.requestedInForce, now: now, log: a.log})
	a.goRun(func() { a.status.runFlows(ctx) })
	a.goRun(func() { a.status.runVerdicts(ctx) })
	a.sources = newSources(a.refiner, a.store, a.disk, a.home, a.log, a.metrics)
	if err := a.sources.start(ctx, a.cfg.Ingest); err != nil {
		return err
	}
	if _, err := a.startTAXII(ctx, now); err != nil {
		return err
	}
	return a.startMetrics(ctx)
}

// startExchange builds the management point and the enforcement points around it, each from
// what it uses, in the order they need each other: delivery, then the management point whose
// runs it delivers, the sinks that forward what the receiver stores, refine-and-queue, and
// the monitor.
func (a *Agent) startExchange(now func() time.Time) error {
	timeout := time.Duration(a.cfg.MessageTimeout)
	dial := func(ctx context.Context, p peer.ID, proto libp2pprotocol.ID) (network.Stream, error) {
		a.findAddrs(ctx, p)
		st, err := openMemberStream(ctx, a.host, a.member, p, proto)
		if err != nil {
			a.reach.failed(p, err)
			return nil, err
		}
		a.reach.reached(p)
		return st, nil
	}
	a.deliver = newDeliverer(a.store, a.self, dial, a.log, now, timeout, a.counts.delivered, a.counts.heldMethod)
	keys, err := providerKeys(a.home)
	if err != nil {
		return err
	}
	if a.mgr, err = newManager(a.store, a.compiler, keys, managerConfig{Log: a.log, Now: now,
		MaxQueuedPerPeer: a.cfg.MaxQueuedPerPeer, Changes: a.counts.agreements, Deliver: a.deliver.wake, Ledger: a.counts.ledger}); err != nil {
		return err
	}
	if a.sinks, err = newSinks(a.store, filepath.Join(a.home, SinksDir), a.cfg.Sinks, a.mgr.requesterRuns, a.log); err != nil {
		return err
	}
	a.metrics.MustRegister(sinkCollector{states: a.sinks.states, log: a.log})
	a.receiver = newReceiver(a.mgr, a.store, receiverConfig{Log: a.log, Refusals: a.refusals, Now: now, Timeout: timeout,
		Metrics: a.counts.receive, DiskFull: a.disk.refused, Stored: a.sinks.kick})
	a.refiner = newRefiner(a.mgr, a.store, a.log, now, a.cfg.MaxQueuedPerPeer, a.counts.queue, a.deliver.wake, a.counts.ledger)
	a.monitor = newMonitor(a.mgr, a.store, a.self, dial, monitorConfig{Log: a.log, Now: now, Timeout: timeout,
		Dir: filepath.Join(a.home, AssessmentDir), Negotiation: a.Negotiation, Paused: a.disk.isPaused, Sinks: a.sinks.stateOf,
		Held: a.deliver.heldWhy})
	return nil
}

// goRun runs f in a goroutine the agent waits for at Close.
func (a *Agent) goRun(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// startMetrics serves Prometheus metrics (the agent's and libp2p's), /healthz and /readyz on
// the configured address, if any, until ctx ends.
func (a *Agent) startMetrics(ctx context.Context) error {
	if a.cfg.Metrics == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Metrics)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	if host, _, _ := net.SplitHostPort(a.cfg.Metrics); !net.ParseIP(host).IsLoopback() {
		a.log.Warn("metrics served on a non-loopback address (metrics-remote): anyone who reaches it can read this agent's metrics and status page; restrict it with a firewall",
			"addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := a.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+err.Error()+"\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	a.serveStatusPage(mux) // statuspage.go
	a.servePprof(mux)      // pprof.go
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	a.goRun(func() { <-ctx.Done(); srv.Close() })
	a.goRun(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped: this agent's metrics can no longer be scraped; restart the agent, and if it fails again check the metrics address in config.yaml",
				"addr", a.cfg.Metrics, "err", err)
		}
	})
	return nil
}

// ready says why the agent cannot take work, or nil: it is stopping, its host listens on no
// address, its store is closed or unreadable, or its directory has not started.
func (a *Agent) ready() error {
	switch {
	case a.stopping.Load():
		return errors.New("the agent is stopping")
	case len(a.host.Network().ListenAddresses()) == 0:
		return errors.New("the libp2p host listens on no address")
	case a.dir == nil:
		return errors.New("the directory has not started")
	}
	if _, err := a.store.Space(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// loopbackOnly reports whether every listen address is a loopback address: such an agent
// cannot be reached from the LAN, so LAN discovery would only send useless multicast.
func loopbackOnly(listen []string) bool {
	for _, s := range listen {
		addr, err := ma.NewMultiaddr(s)
		if err != nil || !manet.IsIPLoopback(addr) {
			return false
		}
	}
	return true
}

func storageKey(home string, cfg Config) ([]byte, error) {
	text := os.Getenv("SSANET_STORAGE_KEY")
	if text == "" && cfg.EncryptionKeyFile != "" {
		path := cfg.EncryptionKeyFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(home, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read encryption key: %w", err)
		}
		text = string(b)
	}
	if text == "" {
		return nil, nil
	}
	key, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil || len(key) != 32 {
		return nil, errors.New("the storage encryption key must be 32 bytes written as 64 hex digits")
	}
	return key, nil
}

// startHost builds the libp2p host: TCP and QUIC, the configured security transports, the resource manager with
// explicit limits for ssanet's protocols, and, with the private directory, the allow-list gater.
func (a *Agent) startHost(key crypto.PrivKey) error {
	limits := rcmgr.DefaultLimits
	limits.AddProtocolLimit(ProtocolNegotiate,
		rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(ProtocolNegotiate,
		rcmgr.BaseLimit{StreamsInbound: 32, StreamsOutbound: 32, Streams: 64, Memory: 8 << 20},
		rcmgr.BaseLimitIncrease{})
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()),
		rcmgr.WithMetricsDisabled())
	if err != nil {
		return fmt.Errorf("resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		// Each address is listened on below, so that one that cannot be is an error.
		libp2p.NoListenAddrs,
		// Without SO_REUSEPORT, a port another process holds is an error rather than a
		// port shared with it (which would split the incoming connections between both).
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("ssanet/" + Version),
		libp2p.PrometheusRegisterer(a.metrics),
	}
	// With the public directory every peer connects (the DHT, identify, ping and AutoNAT
	// need it) and the ssanet protocols check the peer at each stream open (members.go).
	if !a.cfg.publicDirectory() {
		opts = append(opts, libp2p.ConnectionGater(rosterGater{next: gater{allow: a.allow, refused: a.refusedPeer}, roster: a.roster, refused: a.refusedPeer}))
	}
	reach, listening, err := a.reachOptions() // reach.go: AutoNAT, relays, hole punching
	if err != nil {
		rm.Close()
		return err
	}
	opts = append(opts, reach...)
	// The configured security transports, in order (method.go); QUIC, whose handshake is
	// TLS, only with tls.
	for _, s := range a.cfg.security() {
		switch s {
		case "noise":
			opts = append(opts, libp2p.Security(noise.ID, noise.New))
		case "tls":
			opts = append(opts, libp2p.Security(libp2ptls.ID, libp2ptls.New), libp2p.Transport(quic.NewTransport))
		}
	}
	a.host, err = libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return fmt.Errorf("start libp2p host on %s: %w", strings.Join(a.cfg.Listen, " "), err)
	}
	if err := a.listen(); err != nil {
		return err
	}
	listening()
	return nil
}

// ErrListen means the agent could not listen on one of its configured addresses: most often
// another process (another agent on the same port) holds it.
var ErrListen = errors.New("agent: cannot listen")

// listen listens on every configured address, or fails naming the first that cannot be
// listened on (libp2p alone starts if any one of them can be).
func (a *Agent) listen() error {
	for _, s := range a.cfg.Listen {
		addr, _ := ma.NewMultiaddr(s) // validated with the config
		if err := a.host.Network().Listen(addr); err != nil {
			return fmt.Errorf("%w on %s (is another agent or program using that port? change listen in config.yaml or stop the other one): %w", ErrListen, s, err)
		}
	}
	return nil
}

// findAddrs makes sure the peerstore has addresses for p, unless a connection (direct or
// relayed) is open: those persisted with the negotiations, else the directory's
// (FIND_PEER). It does not look for a peer outside the community, whose stream the dial that
// follows refuses anyway: with the public directory, a stranger would cost a walk of it.
func (a *Agent) findAddrs(ctx context.Context, p peer.ID) {
	if len(a.host.Peerstore().Addrs(p)) > 0 || len(a.host.Network().ConnsToPeer(p)) > 0 || a.member(p) != nil {
		return
	}
	if err := a.dir.Locate(overRelays(ctx), p); err != nil {
		a.log.Debug("peer not found in the directory", "peer", p, "err", err)
	}
}

// Host is the agent's libp2p host.
func (a *Agent) Host() host.Host { return a.host }

// ID is the agent's peer ID.
func (a *Agent) ID() peer.ID { return a.host.ID() }

// Addrs are the agent's full listen multiaddrs (with /p2p/ID).
func (a *Agent) Addrs() []string {
	var out []string
	for _, addr := range a.host.Addrs() {
		out = append(out, addr.String()+"/p2p/"+a.host.ID().String())
	}
	return out
}

// Close stops the agent: stream handlers, running negotiations, host, store, in that order.
// It is idempotent.
func (a *Agent) Close() error {
	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed {
		return a.closeErr
	}
	a.closed = true
	a.stopping.Store(true)
	if a.host != nil {
		a.host.RemoveStreamHandler(ProtocolNegotiate)
		a.host.RemoveStreamHandler(ProtocolExchange)
		a.host.RemoveStreamHandler(ProtocolMonitor)
		a.host.RemoveStreamHandler(ProtocolRoster)
	}
	a.inbound.close()
	a.stop()
	a.wg.Wait()
	var errs []error
	if a.sources != nil {
		a.sources.wait()
	}
	if a.mgr != nil {
		a.mgr.close()
	}
	if a.deliver != nil {
		a.deliver.wait()
	}
	if a.sinks != nil {
		a.sinks.close()
	}
	if a.dir != nil {
		errs = append(errs, a.dir.Close())
	}
	if a.host != nil {
		errs = append(errs, a.host.Close())
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	a.closeErr = errors.Join(errs...)
	a.log.Info("agent stopped", "peer", a.self.PeerID())
	return a.closeErr
}

// inbound tracks the streams the agent's handlers serve, so that Close can reset them and
// wait for the handlers to return before it closes what they use.
type inbound struct {
	mu      sync.Mutex
	closed  bool
	streams map[network.Stream]struct{}
	wg      sync.WaitGroup
}

// serve wraps a stream handler; a stream that arrives after close is reset at once.
func (in *inbound) serve(h network.StreamHandler) network.StreamHandler {
	return func(st network.Stream) {
		in.mu.Lock()
		if in.closed {
			in.mu.Unlock()
			st.Reset()
			return
		}
		if in.streams == nil {
			in.streams = map[network.Stream]struct{}{}
		}
		in.streams[st] = struct{}{}
		in.wg.Add(1)
		in.mu.Unlock()
		defer func() {
			in.mu.Lock()
			delete(in.streams, st)
			in.mu.Unlock()
			in.wg.Done()
		}()
		h(st)
	}
}

// close resets every stream being served and waits for their handlers to return.
func (in *inbound) close() {
	in.mu.Lock()
	in.closed = true
	for st := range in.streams {
		st.Reset()
	}
	in.mu.Unlock()
	in.wg.Wait()
}

// gater enforces the community allow-list after the handshake, when the remote peer is
// authenticated, and tells refused of each connection it closes for it. Only with the private
// directory: with the public one no gater closes connections (members.go).
type gater struct {
	allow   *allowList
	refused func(reason string, dir network.Direction, p peer.ID, addr ma.Multiaddr)
}

func (g gater) allowed(p peer.ID) bool { return g.allow.allowed(p) }

// InterceptPeerDial refuses to dial a peer outside the allow-list (this agent's own choice:
// counted, not logged, as the DHT may try many such peers).
func (g gater) InterceptPeerDial(p peer.ID) bool {
	if g.allowed(p) {
		return true
	}
	g.refused(refusedDial, network.DirOutbound, p, nil)
	return false
}
func (g gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }
func (g gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g gater) InterceptSecured(dir network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	if g.allowed(p) {
		return true
	}
	g.refused(refusedAllowList, dir, p, c.RemoteMultiaddr())
	return false
}
func (g gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// Reasons the gater refuses a connection: the label of ssanet_connections_refused_total.
const (
	// refusedAllowList: a peer outside the allow-list connected; it was closed right after
	// the handshake, and is logged.
	refusedAllowList = "allow-list"
	// refusedDial: this agent was to dial a peer outside its own allow-list.
	refusedDial = "allow-list-dial"
)

// ErrNotAllowed is the refusal of a peer outside the allow-list, as logged.
var ErrNotAllowed = errors.New("agent: the peer is not in this agent's allow-list (allow in config.yaml)")

// refusedPeer counts a connection the gater refused and logs (rate-limited) those of peers
// that reached this agent.
func (a *Agent) refusedPeer(reason string, dir network.Direction, p peer.ID, addr ma.Multiaddr) {
	a.counts.refusedConns.WithLabelValues(reason).Inc()
	if reason == refusedDial || reason == refusedRosterDial {
		return
	}
	var where string
	if addr != nil {
		where = addr.String()
	}
	why := ErrNotAllowed
	if reason == refusedRoster || reason == refusedRosterExpired {
		why = ErrRosterRefused
	}
	a.refusals.warn(p, "connection refused", why, "addr", where, "direction", dir.String(), "reason", reason)
}
