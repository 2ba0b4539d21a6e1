package discovery

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	mh "github.com/multiformats/go-multihash"

	"github.com/ssanet/ssanet/protocol"
)

// Protocol IDs.
const (
	ProtocolOffers = "/ssanet/offers/1.0.0"
	dhtPrefix      = "/ssanet"
	mdnsService    = "_ssanet-discovery._udp"
)

// Config configures the directory.
type Config struct {
	// Amino joins the public IPFS DHT (protocol /ipfs/kad/1.0.0, kad-dht's defaults) in place
	// of the private /ssanet one; offers are then advertised under CommunityKey(Community, …).
	Amino bool
	// Community names the community in the keys of the public directory; required with Amino.
	Community string
	// Allowed, when set, says why a peer is not in the community (the allow-list, or the
	// roster), nil if it is, asked anew at each use so that a reload applies at once: only
	// such a peer may fetch this agent's signed offers (another's stream is reset with
	// network.StreamGated, which its FetchOffers reports as ErrOffersRefused), and only such a
	// peer's offers are fetched (Find leaves the others out). Nil: anyone.
	Allowed func(peer.ID) error
	// Refused, when set, is told of each offers stream refused to a peer outside Allowed, with
	// Allowed's reason (the agent counts and logs it); nil: logged at debug level.
	Refused func(peer.ID, error)
	// Bootstrap peers to join the directory through.
	Bootstrap []peer.AddrInfo
	// Client runs the DHT in client mode, for agents that cannot accept connections.
	Client bool
	// MDNS enables LAN discovery.
	MDNS bool
	// Readvertise is how often the offers are advertised again; provider records live 48 h.
	Readvertise time.Duration
	// OfferValidity is how long a signed offer list stays valid.
	OfferValidity time.Duration
	Logger        *slog.Logger
}

// Offers gives the directory the offers to advertise, as they are now.
type Offers func() ([]*protocol.Offer, error)

// ErrNoPeers means the directory has no peer to ask: no bootstrap peer answered and none was
// found on the LAN.
var ErrNoPeers = errors.New("discovery: no peers in the directory: no bootstrap peer answered and none was found on the LAN " +
	"(check bootstrap in config.yaml and that those agents run; mDNS finds only agents listening on the LAN)")

// ErrNoCommunity means the public directory was asked for without a community name.
var ErrNoCommunity = errors.New("discovery: the public directory (directory: amino) needs a community name (community in config.yaml)")

// ErrOffersRefused means a provider refused this agent its offers: this agent is outside its
// allow-list or community roster (it reset the stream with network.StreamGated).
var ErrOffersRefused = errors.New("discovery: the provider refused its offers: this agent is not in its allow-list or community roster " +
	"(ask its operator to add this agent's peer ID)")

// ErrNotAllowed means this agent does not fetch the offers of a peer outside its own
// allow-list or community roster (Config.Allowed).
var ErrNotAllowed = errors.New("discovery: the peer is outside this agent's allow-list or community roster: its offers are not fetched")

// Gated reports whether err is that of a stream the peer reset with network.StreamGated: how
// an ssanet agent refuses a stream of one of its protocols to a peer outside its community.
func Gated(err error) bool {
	var se *network.StreamError
	return errors.As(err, &se) && se.Remote && se.ErrorCode == network.StreamGated
}

// Directory is the agent's view of the serverless directory.
type Directory struct {
	h      host.Host
	self   *protocol.Identity
	dht    *dht.IpfsDHT
	mdns   interface{ Close() error }
	cfg    Config
	log    *slog.Logger
	offers Offers
	now    func() time.Time

	kick   chan struct{}
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// New joins the directory: starts the DHT (server mode unless cfg.Client), mDNS if enabled,
// serves the signed offers, connects to the bootstrap peers and starts advertising.
func New(h host.Host, self *protocol.Identity, cfg Config, offers Offers, now func() time.Time) (*Directory, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Readvertise <= 0 {
		cfg.Readvertise = 12 * time.Hour
	}
	if cfg.OfferValidity <= 0 {
		cfg.OfferValidity = time.Hour
	}
	mode := dht.ModeServer
	if cfg.Client {
		mode = dht.ModeClient
	}
	opts := []dht.Option{dht.ProtocolPrefix(dhtPrefix), dht.Mode(mode), dht.DisableValues(),
		dht.BootstrapPeers(cfg.Bootstrap...)}
	if cfg.Amino {
		if cfg.Community == "" {
			return nil, ErrNoCommunity
		}
		// kad-dht's defaults are Amino's (/ipfs/kad/1.0.0, bucket size 20, values and
		// providers, the pk and ipns validators): it refuses that prefix with anything else.
		opts = []dht.Option{dht.Mode(mode), dht.BootstrapPeers(cfg.Bootstrap...)}
	}
	kad, err := dht.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("start the DHT: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Directory{h: h, self: self, dht: kad, cfg: cfg, log: cfg.Logger, offers: offers, now: now,
		kick: make(chan struct{}, 1), stop: cancel}
	h.SetStreamHandler(ProtocolOffers, d.serveOffers)
	if cfg.MDNS {
		svc := mdns.NewMdnsService(h, mdnsService, d)
		if err := svc.Start(); err != nil {
			d.log.Warn("LAN discovery (mDNS) did not start", "err", err)
		} else {
			d.mdns = svc
		}
	}
	if len(cfg.Bootstrap) == 0 && !cfg.MDNS {
		d.log.Warn("no bootstrap peers and mDNS off: this agent is alone in the directory until a peer connects")
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.connectBootstrap(ctx)
		d.advertiseLoop(ctx)
	}()
	return d, nil
}

// HandlePeerFound connects to a peer found on the LAN, which adds it to the routing table.
func (d *Directory) HandlePeerFound(pi peer.AddrInfo) {
	if pi.ID == d.h.ID() {
		return
	}
	d.h.Peerstore().AddAddrs(pi.ID, pi.Addrs, peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.h.Connect(ctx, pi); err != nil {
		d.log.Debug("LAN peer unreachable", "peer", pi.ID, "err", err)
	}
}

func (d *Directory) connectBootstrap(ctx context.Context) {
	for _, pi := range d.cfg.Bootstrap {
		if pi.ID == d.h.ID() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := d.h.Connect(cctx, pi); err != nil {
			d.log.Warn("bootstrap peer unreachable", "peer", pi.ID, "err", err)
		}
		cancel()
	}
	if err := d.dht.Bootstrap(ctx); err != nil {
		d.log.Warn("DHT bootstrap", "err", err)
	}
}

// Readvertise asks for the offers to be advertised now (after an offer was added or removed).
func (d *Directory) Readvertise() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// advertiseLoop provides every key of the current offers, again every Readvertise period and
// whenever kicked. A fresh DHT cannot provide before its routing table has peers: it waits
// for one (polling the routing table, bounded by ctx) instead of failing.
func (d *Directory) advertiseLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.Readvertise)
	defer t.Stop()
	for {
		if err := d.advertise(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("advertise offers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
		}
	}
}

func (d *Directory) advertise(ctx context.Context) error {
	offers, err := d.offers()
	if err != nil || len(offers) == 0 {
		return err
	}
	if err := d.waitForPeers(ctx); err != nil {
		return err
	}
	for _, k := range d.offerKeys(offers) {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := d.dht.Provide(pctx, k, true)
		cancel()
		if err != nil {
			return fmt.Errorf("provide %s: %w", k, err)
		}
	}
	d.log.Debug("offers advertised", "offers", len(offers))
	return nil
}

// waitForPeers waits until the routing table has a peer, or ctx ends.
func (d *Directory) waitForPeers(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for d.dht.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNoPeers, ctx.Err())
		case <-d.kick:
		case <-t.C:
		}
	}
	return nil
}

// Key is the private directory's key of an information type, or of a (type, format) pair:
// a CIDv1 (raw) of the SHA-256 multihash of "ssanet/v1 type=TYPE[ format=FORMAT]".
func Key(typ, format string) cid.Cid {
	name := "ssanet/v1 type=" + typ
	if format != "" {
		name += " format=" + format
	}
	return nameKey(name)
}

// CommunityKey is the public directory's key of an information type, or of a (type, format)
// pair, in a community: a CIDv1 (raw) of the SHA-256 multihash of
// "ssanet/v1 community=COMMUNITY type=TYPE[ format=FORMAT]". Anyone who knows the three names
// can compute it: it scopes the keys, it hides nothing.
func CommunityKey(community, typ, format string) cid.Cid {
	name := "ssanet/v1 community=" + community + " type=" + typ
	if format != "" {
		name += " format=" + format
	}
	return nameKey(name)
}

// key is this directory's key of typ (and format).
func (d *Directory) key(typ, format string) cid.Cid {
	if d.cfg.Amino {
		return CommunityKey(d.cfg.Community, typ, format)
	}
	return Key(typ, format)
}

func nameKey(name string) cid.Cid {
	sum := sha256.Sum256([]byte(name))
	m, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil {
		panic(err) // a 32-byte SHA-256 digest always encodes
	}
	return cid.NewCidV1(cid.Raw, m)
}

func (d *Directory) offerKeys(offers []*protocol.Offer) []cid.Cid {
	var keys []cid.Cid
	for _, o := range offers {
		for _, in := range o.Terms.Information {
			for _, k := range []cid.Cid{d.key(in.Type, ""), d.key(in.Type, in.Format)} {
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
		}
	}
	return keys
}

// allowed is Config.Allowed's answer for p: nil when there is none.
func (d *Directory) allowed(p peer.ID) error {
	if d.cfg.Allowed == nil {
		return nil
	}
	return d.cfg.Allowed(p)
}

// serveOffers answers a fetch with this agent's offers, signed.
func (d *Directory) serveOffers(st network.Stream) {
	p := st.Conn().RemotePeer()
	if err := d.allowed(p); err != nil {
		if d.cfg.Refused != nil {
			d.cfg.Refused(p, err)
		} else {
			d.log.Debug("offers not served to a peer outside the allow-list or community roster", "peer", p, "err", err)
		}
		_ = st.ResetWithError(network.StreamGated)
		return
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	offers, err := d.offers()
	if err != nil {
		d.log.Error("read offers", "err", err)
		st.Reset()
		return
	}
	b, err := protocol.SealOffers(d.self, offers, d.now(), d.cfg.OfferValidity)
	if err != nil {
		d.log.Error("sign offers", "err", err)
		st.Reset()
		return
	}
	if _, err := st.Write(b); err != nil {
		st.Reset()
	}
}

// Provider is a provider found in the directory, with the offers it signed.
type Provider struct {
	PeerID peer.ID           `json:"peer_id"`
	Addrs  []string          `json:"addrs"`
	Offers []*protocol.Offer `json:"offers"`
}

// FetchOffers asks p for its signed offers and verifies them.
// A peer outside this agent's allow-list or roster is not asked (ErrNotAllowed); a provider
// that refuses this agent is ErrOffersRefused.
func (d *Directory) FetchOffers(ctx context.Context, p peer.ID) ([]*protocol.Offer, error) {
	if err := d.allowed(p); err != nil {
		return nil, fmt.Errorf("fetch offers of %s: %w: %w", p, ErrNotAllowed, err)
	}
	st, err := d.h.NewStream(ctx, p, ProtocolOffers)
	if Gated(err) {
		return nil, fmt.Errorf("fetch offers of %s: %w: %w", p, ErrOffersRefused, err)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offers of %s: %w", p, err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	raw, err := io.ReadAll(io.LimitReader(st, protocol.MaxMessageSize+1))
	if err != nil {
		st.Reset()
		if Gated(err) {
			return nil, fmt.Errorf("fetch offers of %s: %w: %w", p, ErrOffersRefused, err)
		}
		return nil, fmt.Errorf("fetch offers of %s: %w", p, err)
	}
	return protocol.OpenOffers(raw, p, d.now())
}

// Find lists the providers that offer typ (and format, if given): it looks the key up in the
// DHT until the lookup completes (or ctx ends), fetches each provider's signed offers and keeps those that match. A
// provider outside Config.Allowed (anyone may advertise under a key of the public directory)
// is not asked. One named without addresses is located first (FIND_PEER). A provider that
// cannot be located, or whose offers cannot be fetched, or do not verify, is left out and
// logged.
func (d *Directory) Find(ctx context.Context, typ, format string) ([]Provider, error) {
	if d.dht.RoutingTable().Size() == 0 && len(d.h.Network().Peers()) == 0 {
		return nil, ErrNoPeers
	}
	var (
		mu  sync.Mutex
		out []Provider
		wg  sync.WaitGroup
	)
	seen := map[peer.ID]bool{d.h.ID(): true}
	for pi := range d.dht.FindProvidersAsync(ctx, d.key(typ, format), 0) {
		if seen[pi.ID] {
			continue
		}
		seen[pi.ID] = true
		d.h.Peerstore().AddAddrs(pi.ID, pi.Addrs, peerstore.TempAddrTTL)
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, ok := d.provider(ctx, pi.ID, typ, format)
			if ok {
				mu.Lock()
				out = append(out, p)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Provider) int { return strings.Compare(a.PeerID.String(), b.PeerID.String()) })
	return out, nil
}

// provider fetches p's offers and keeps those matching typ and format.
func (d *Directory) provider(ctx context.Context, p peer.ID, typ, format string) (Provider, bool) {
	if err := d.allowed(p); err != nil {
		d.log.Debug("provider outside the allow-list or community roster left out", "peer", p, "err", err)
		return Provider{}, false
	}
	if err := d.Locate(ctx, p); err != nil {
		d.log.Warn("provider's address not found", "peer", p, "err", err)
		return Provider{}, false
	}
	offers, err := d.FetchOffers(ctx, p)
	if err != nil {
		d.log.Warn("provider's offers refused", "peer", p, "err", err)
		return Provider{}, false
	}
	res := Provider{PeerID: p, Addrs: d.addrs(p)}
	for _, o := range offers {
		if slices.ContainsFunc(o.Terms.Information, func(in protocol.Information) bool {
			return in.Type == typ && (format == "" || in.Format == format)
		}) {
			res.Offers = append(res.Offers, o)
		}
	}
	return res, len(res.Offers) > 0
}

// Peer validates a known entity: it fetches and verifies p's current signed offers.
func (d *Directory) Peer(ctx context.Context, p peer.ID) (Provider, error) {
	if err := d.Locate(ctx, p); err != nil {
		return Provider{}, err
	}
	offers, err := d.FetchOffers(ctx, p)
	if err != nil {
		return Provider{}, err
	}
	return Provider{PeerID: p, Addrs: d.addrs(p), Offers: offers}, nil
}

// Locate makes sure p can be dialled: when the peerstore has no address of p and no
// connection to it, it asks the DHT (FIND_PEER), which the peers connected to p answer with
// the addresses they know. A provider record may name a provider without addresses: kubo's
// public DHT strips private ones (on loopback, all), and an Amino server forgets a provider's
// addresses before the record itself.
func (d *Directory) Locate(ctx context.Context, p peer.ID) error {
	if len(d.h.Peerstore().Addrs(p)) > 0 || d.h.Network().Connectedness(p) == network.Connected {
		return nil
	}
	if d.dht.RoutingTable().Size() == 0 {
		return fmt.Errorf("find %s: %w", p, ErrNoPeers)
	}
	pi, err := d.dht.FindPeer(ctx, p)
	if err != nil {
		return fmt.Errorf("find %s in the directory: %w", p, err)
	}
	d.h.Peerstore().AddAddrs(p, pi.Addrs, peerstore.TempAddrTTL)
	return nil
}

func (d *Directory) addrs(p peer.ID) []string {
	var out []string
	for _, a := range d.h.Peerstore().Addrs(p) {
		out = append(out, a.String()+"/p2p/"+p.String())
	}
	slices.Sort(out)
	return out
}

// Close leaves the directory: stops advertising, mDNS and the DHT.
func (d *Directory) Close() error {
	var err error
	d.closed.Do(func() {
		d.h.RemoveStreamHandler(ProtocolOffers)
		d.stop()
		d.wg.Wait()
		if d.mdns != nil {
			err = d.mdns.Close()
		}
		err = errors.Join(err, d.dht.Close())
	})
	return err
}
