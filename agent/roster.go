package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The community roster (issue 18): the signed, k-of-n list of the community's members that
// replaces the static allow-list of an agent whose config names a community. The agent holds
// one roster; the connection gater admits exactly its members; any member that holds a newer
// roster gives it to the peers it connects to over ProtocolRoster, and each checks it against
// the roster it holds (protocol.VerifyRoster), persists it and applies it at once.

// ProtocolRoster is the stream protocol of roster distribution. Each side sends a hello (its
// community and roster version, CBOR) first (the opener) or in answer (the other); then the side
// with the newer roster sends, one frame each, the rosters from the other's version + 1 to
// its own, which the other verifies one by one against the roster it holds, and applies.
const ProtocolRoster = "/ssanet/roster/1.0.0"

const (
	// rosterTimeout bounds one roster exchange.
	rosterTimeout = 30 * time.Second
	// maxRosterHello caps a hello frame.
	maxRosterHello = 1024
	// maxRosterCatchUp is the most versions one exchange brings a peer forward.
	maxRosterCatchUp = 4096
	// rosterOffersAtOnce bounds the exchanges this agent opens at the same time.
	rosterOffersAtOnce = 8
	// annulTimeout bounds the cancellation of one agreement with a removed member.
	annulTimeout = 10 * time.Second
)

var (
	// ErrNoCommunity means the agent belongs to no community (no community in config.yaml).
	ErrNoCommunity = errors.New("agent: this agent belongs to no community (set community in config.yaml to the roster file its admins gave you)")
	// ErrRosterRefused means a peer is outside the community's current roster, as logged.
	ErrRosterRefused = errors.New("agent: the peer is not admitted by this agent's community roster")
)

// Reasons the roster gater refuses a connection: labels of ssanet_connections_refused_total.
const (
	refusedRoster        = "community-roster"
	refusedRosterExpired = "community-roster-expired"
	refusedRosterDial    = "community-roster-dial"
)

// rosterHello is the first frame of each side of a roster exchange.
type rosterHello struct {
	Community string `cbor:"1,keyasint"`
	Version   uint64 `cbor:"2,keyasint"`
}

// rosterStore is what the community needs of the store.
type rosterStore interface {
	PutRoster(*protocol.SignedRoster) error
	LatestRoster() (*protocol.SignedRoster, error)
	RostersAfter(after uint64) ([]*protocol.SignedRoster, error)
}

// community holds the agent's current roster, admits peers by it, and distributes it.
// Contract: cur is nil exactly when the agent belongs to no community, and never becomes nil;
// accept is the one path by which it changes, one call at a time (mu), and persists a roster
// before it holds it. Offers to peers are queued (offer) and run by run, at most
// rosterOffersAtOnce at a time, until its ctx ends.
type community struct {
	store rosterStore
	log   *slog.Logger
	now   func() time.Time
	// applied is told of each roster accepted, after it is held: the agent closes the
	// connections of peers no longer admitted and flags (or annuls) their agreements.
	applied func(old, cur *protocol.Roster)

	cur  atomic.Pointer[protocol.SignedRoster]
	host atomic.Pointer[host.Host]
	mu   sync.Mutex // serialises accept

	qmu     sync.Mutex
	pending map[peer.ID]bool
	wake    chan struct{}

	received *prometheus.CounterVec // rosters received from peers, by outcome
	flagged  prometheus.Counter     // agreements in force with members a roster removed
}

// newCommunity loads the roster of an agent whose config names a roster file (path, relative
// to home): the latest stored, or the file as the trust anchor when none is stored (it must
// carry k signatures of its own admins), or the file when it is the successor of the stored
// one. With path empty the agent belongs to no community (cur stays nil), whatever is stored.
func newCommunity(path string, store rosterStore, reg prometheus.Registerer, log *slog.Logger, now func() time.Time,
	applied func(old, cur *protocol.Roster)) (*community, error) {
	c := &community{store: store, log: log, now: now, applied: applied, pending: map[peer.ID]bool{}, wake: make(chan struct{}, 1),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ssanet_community_rosters_received_total",
			Help: "Rosters received from peers, by outcome: applied, stale (not newer: a replay changes nothing), refused (did not verify; logged)."}, []string{"outcome"})}
	c.flagged = prometheus.NewCounter(prometheus.CounterOpts{Name: "ssanet_community_removed_agreements_total",
		Help: "Agreements in force with members a new community roster removed: flagged in the log, and cancelled when the roster asks for it."})
	for _, o := range []string{"applied", "stale", "refused"} {
		c.received.WithLabelValues(o)
	}
	reg.MustRegister(c.received, c.flagged,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ssanet_community_roster_version",
			Help: "Version of the community roster this agent holds (0: none)."}, func() float64 {
			if s := c.cur.Load(); s != nil {
				return float64(s.Roster().Version)
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ssanet_community_roster_expires_timestamp_seconds",
			Help: "When the community roster this agent holds expires (Unix seconds; 0: none). After it, nobody new is admitted."}, func() float64 {
			if s := c.cur.Load(); s != nil {
				return float64(s.Roster().Expires)
			}
			return 0
		}))
	stored, err := store.LatestRoster()
	switch {
	case errors.Is(err, storage.ErrNotFound):
		stored = nil
	case err != nil:
		return nil, err
	}
	if path == "" {
		if stored != nil {
			log.Info("the store holds a community roster, unused: config.yaml names no community (set community to use it again)",
				"community", stored.Roster().Community, "version", stored.Roster().Version)
		}
		return c, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("community: read the roster file: %w", err)
	}
	file, err := protocol.DecodeSignedRoster(raw)
	if err != nil {
		return nil, fmt.Errorf("community: roster file %s: %w", path, err)
	}
	var prev *protocol.Roster
	if stored != nil {
		prev = stored.Roster()
		if file.Roster().Community != prev.Community {
			return nil, fmt.Errorf("community: %w: %s is of community %q, this agent's store holds %q", protocol.ErrRosterCommunity,
				path, file.Roster().Community, prev.Community)
		}
		if file.Roster().Version <= prev.Version {
			c.cur.Store(stored)
			c.warnExpired()
			return c, nil
		}
	}
	if err := protocol.VerifyRoster(prev, file, now()); err != nil {
		if stored != nil {
			log.Warn("community roster file not applied: this agent keeps the roster it holds", "file", path,
				"version", file.Roster().Version, "held", prev.Version, "err", err)
			c.cur.Store(stored)
			c.warnExpired()
			return c, nil
		}
		return nil, fmt.Errorf("community: roster file %s as trust anchor: %w", path, err)
	}
	if err := store.PutRoster(file); err != nil {
		return nil, err
	}
	c.cur.Store(file)
	return c, nil
}

// warnExpired tells the operator that the roster held has expired.
func (c *community) warnExpired() {
	if s := c.cur.Load(); s != nil && s.Roster().Expired(c.now()) {
		c.log.Warn("community roster expired: nobody new is admitted until the admins publish a newer one",
			"community", s.Roster().Community, "version", s.Roster().Version, "expired", s.Roster().Expires.String(), "err", protocol.ErrRosterExpired)
	}
}

// active reports whether the agent belongs to a community.
func (c *community) active() bool { return c.cur.Load() != nil }

// setHost gives the community the host, once it exists.
func (c *community) setHost(h host.Host) { c.host.Store(&h) }

// admits says whether p may connect now: a member of the roster held, or, once it has expired,
// a peer already connected (an expired roster admits nobody new).
func (c *community) admits(p peer.ID) error {
	s := c.cur.Load()
	if s == nil {
		return nil
	}
	err := s.Roster().Admits(p, c.now())
	if errors.Is(err, protocol.ErrRosterExpired) {
		if h := c.host.Load(); h != nil && (*h).Network().Connectedness(p) == network.Connected {
			if _, ok := s.Roster().Member(p); ok {
				return nil
			}
		}
	}
	return err
}

// accept verifies s as the successor of the roster held, persists it, holds it and tells
// applied. from is the peer it came from ("" for the operator's).
func (c *community) accept(s *protocol.SignedRoster, from peer.ID) error {
	c.mu.Lock()
	old := c.cur.Load()
	if old == nil {
		c.mu.Unlock()
		return ErrNoCommunity
	}
	if err := protocol.VerifyRoster(old.Roster(), s, c.now()); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := c.store.PutRoster(s); err != nil {
		c.mu.Unlock()
		return err
	}
	c.cur.Store(s)
	c.mu.Unlock()
	r := s.Roster()
	c.log.Info("community roster applied", "community", r.Community, "version", r.Version, "members", len(r.Members),
		"removed", len(old.Roster().Removed(r)), "from", from, "expires", r.Expires.String())
	c.applied(old.Roster(), r)
	return nil
}

// offer queues an exchange with p, if the roster admits it: with the public directory the
// agent is connected to peers outside the community too.
func (c *community) offer(p peer.ID) {
	if !c.active() || c.admits(p) != nil {
		return
	}
	c.qmu.Lock()
	c.pending[p] = true
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// offerAll queues an exchange with every connected peer but except.
func (c *community) offerAll(except peer.ID) {
	h := c.host.Load()
	if h == nil {
		return
	}
	for _, p := range (*h).Network().Peers() {
		if p != except {
			c.offer(p)
		}
	}
}

// connected offers the roster on each connection this agent dialled (the dialled side does
// not, so that a connection makes one exchange).
func (c *community) connected(_ network.Network, conn network.Conn) {
	if conn.Stat().Direction == network.DirOutbound {
		c.offer(conn.RemotePeer())
	}
}

// run runs the queued offers, at most rosterOffersAtOnce at a time, until ctx ends, and waits
// for those under way.
func (c *community) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, rosterOffersAtOnce)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.qmu.Lock()
		batch := c.pending
		c.pending = map[peer.ID]bool{}
		c.qmu.Unlock()
		for p := range batch {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				c.offerTo(ctx, p)
			}()
		}
	}
}

// offerTo opens a roster exchange with p. A stream that does not open (the connection is
// gone, the peer does not speak ProtocolRoster) is logged at debug level; an exchange that
// fails, a roster refused among others, is warned of, as when the peer opens it.
func (c *community) offerTo(ctx context.Context, p peer.ID) {
	h := c.host.Load()
	if h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, rosterTimeout)
	defer cancel()
	st, err := (*h).NewStream(network.WithNoDial(ctx, "roster offer on a connection"), p, ProtocolRoster)
	if err != nil {
		c.log.Debug("roster offer: stream not opened", "peer", p, "err", err)
		return
	}
	c.exchanged(st, true)
}

// handleStream answers a roster exchange a peer opened.
func (c *community) handleStream(st network.Stream) { c.exchanged(st, false) }

// exchanged runs exchange and warns of its failure.
func (c *community) exchanged(st network.Stream, opener bool) {
	if err := c.exchange(st, opener); err != nil {
		c.log.Warn("roster exchange failed", "peer", st.Conn().RemotePeer(), "opener", opener, "err", err)
	}
}

// exchange runs one roster exchange on st, opened by this agent when opener.
func (c *community) exchange(st network.Stream, opener bool) (err error) {
	defer func() {
		if err != nil {
			st.Reset()
		} else {
			st.Close()
		}
	}()
	if err := st.SetDeadline(time.Now().Add(rosterTimeout)); err != nil {
		return err
	}
	held := c.cur.Load()
	if held == nil {
		return ErrNoCommunity
	}
	mine := rosterHello{Community: held.Roster().Community, Version: held.Roster().Version}
	hello, err := protocol.Marshal(&mine)
	if err != nil {
		return err
	}
	r := bufio.NewReader(st)
	var theirs rosterHello
	if opener {
		if err := writeFrame(st, hello); err != nil {
			return err
		}
	}
	b, err := readFrame(r, maxRosterHello)
	if err != nil {
		return err
	}
	if err := protocol.Unmarshal(b, &theirs); err != nil {
		return fmt.Errorf("roster hello: %w", err)
	}
	if !opener {
		if err := writeFrame(st, hello); err != nil {
			return err
		}
	}
	from := st.Conn().RemotePeer()
	switch {
	case theirs.Community != mine.Community:
		return fmt.Errorf("%w: peer %s is of community %q, this agent of %q", protocol.ErrRosterCommunity, from, theirs.Community, mine.Community)
	case theirs.Version < mine.Version:
		return c.send(st, theirs.Version, mine.Version)
	case theirs.Version > mine.Version:
		return c.receive(r, from, mine.Version, theirs.Version)
	}
	return nil
}

// send writes the stored rosters after version after up to to, one per frame.
func (c *community) send(st network.Stream, after, to uint64) error {
	for after < to {
		chain, err := c.store.RostersAfter(after)
		if err != nil {
			return err
		}
		if len(chain) == 0 || chain[0].Roster().Version != after+1 {
			return fmt.Errorf("community: cannot bring a peer from version %d: version %d is not stored here", after, after+1)
		}
		for _, s := range chain {
			if s.Roster().Version != after+1 || after >= to {
				break
			}
			b, err := s.Encode()
			if err != nil {
				return err
			}
			if err := writeFrame(st, b); err != nil {
				return err
			}
			after++
		}
	}
	return nil
}

// receive reads the rosters after version held up to to and accepts each in turn; then it
// offers the roster to the other peers.
func (c *community) receive(r *bufio.Reader, from peer.ID, held, to uint64) error {
	if to-held > maxRosterCatchUp {
		return fmt.Errorf("community: peer %s announces version %d, %d ahead of this agent's %d: over the limit of %d", from, to, to-held, held, maxRosterCatchUp)
	}
	applied := false
	defer func() {
		if applied {
			c.offerAll(from)
		}
	}()
	for v := held + 1; v <= to; v++ {
		b, err := readFrame(r, protocol.MaxMessageSize)
		if err != nil {
			return fmt.Errorf("community: roster version %d from %s: %w", v, from, err)
		}
		s, err := protocol.DecodeSignedRoster(b)
		if err != nil {
			c.received.WithLabelValues("refused").Inc()
			return fmt.Errorf("community: roster from %s: %w", from, err)
		}
		switch err := c.accept(s, from); {
		case errors.Is(err, protocol.ErrRosterStale):
			c.received.WithLabelValues("stale").Inc() // applied meanwhile from another peer
		case err != nil:
			c.received.WithLabelValues("refused").Inc()
			return fmt.Errorf("community: roster version %d from %s refused: %w", s.Roster().Version, from, err)
		default:
			c.received.WithLabelValues("applied").Inc()
			applied = true
		}
	}
	return nil
}

// publish accepts a roster the operator gives (ssanet community publish) and offers it to
// every connected peer.
func (c *community) publish(raw []byte) (*protocol.SignedRoster, error) {
	s, err := protocol.DecodeSignedRoster(raw)
	if err != nil {
		return nil, invalid(err)
	}
	if err := c.accept(s, ""); err != nil {
		if errors.Is(err, storage.ErrDiskFull) {
			return nil, err
		}
		return nil, invalid(err)
	}
	c.offerAll("")
	return s, nil
}

// rosterGater puts the community roster before the gater it wraps: when the agent belongs to a
// community, the roster alone decides who connects; otherwise next (the static allow-list) does.
type rosterGater struct {
	next    connmgr.ConnectionGater
	roster  *community
	refused func(reason string, dir network.Direction, p peer.ID, addr ma.Multiaddr)
}

func (g rosterGater) InterceptPeerDial(p peer.ID) bool {
	if !g.roster.active() {
		return g.next.InterceptPeerDial(p)
	}
	if g.roster.admits(p) == nil {
		return true
	}
	g.refused(refusedRosterDial, network.DirOutbound, p, nil)
	return false
}

func (g rosterGater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	if !g.roster.active() {
		return g.next.InterceptAddrDial(p, a)
	}
	return g.roster.admits(p) == nil
}

func (g rosterGater) InterceptAccept(c network.ConnMultiaddrs) bool { return g.next.InterceptAccept(c) }

func (g rosterGater) InterceptSecured(dir network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	if !g.roster.active() {
		return g.next.InterceptSecured(dir, p, c)
	}
	err := g.roster.admits(p)
	switch {
	case err == nil:
		return true
	case errors.Is(err, protocol.ErrRosterExpired):
		g.refused(refusedRosterExpired, dir, p, c.RemoteMultiaddr())
	default:
		g.refused(refusedRoster, dir, p, c.RemoteMultiaddr())
	}
	return false
}

func (g rosterGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return g.next.InterceptUpgraded(c)
}

// startCommunity loads the community roster, before the host whose gater consults it.
func (a *Agent) startCommunity(now func() time.Time) error {
	path := a.cfg.Community
	if path != "" && !filepath.IsAbs(path) {
		path = filepath.Join(a.home, path)
	}
	for _, r := range []string{refusedRoster, refusedRosterExpired, refusedRosterDial} {
		a.counts.refusedConns.WithLabelValues(r)
	}
	var err error
	a.roster, err = newCommunity(path, a.store, a.metrics, a.log, now, a.rosterApplied)
	return err
}

// runCommunity serves and offers the roster once the host exists, until ctx ends.
func (a *Agent) runCommunity(ctx context.Context) {
	a.roster.setHost(a.host)
	if !a.roster.active() {
		return
	}
	a.host.Network().Notify(&network.NotifyBundle{ConnectedF: a.roster.connected})
	a.host.SetStreamHandler(ProtocolRoster, a.inbound.serve(a.membersOnly("roster", a.roster.handleStream)))
	a.goRun(func() { a.roster.run(ctx) })
	a.roster.offerAll("")
}

// rosterApplied applies a new roster: it closes the connections of the peers it no longer
// admits (with the public directory: resets their ssanet streams, members.go) and flags, or
// annuls when the roster says so, the agreements in force with the members it removed.
func (a *Agent) rosterApplied(old, cur *protocol.Roster) {
	a.dropNonMembers("the community roster no longer admits the peer", "version", cur.Version)
	removed := old.Removed(cur)
	if len(removed) == 0 {
		return
	}
	recs, err := a.store.Negotiations()
	if err != nil {
		a.log.Error("community roster: cannot list the agreements of removed members; review them with ssanet ssa list", "err", err)
		return
	}
	gone := map[string]bool{}
	for _, p := range removed {
		gone[p.String()] = true
	}
	var annul []string
	for _, rec := range recs {
		if !gone[rec.Peer] || !inForce(rec.State) || rec.SSAID == "" {
			continue
		}
		a.roster.flagged.Inc()
		if !cur.AnnulRemoved {
			a.log.Warn("agreement with a member the community roster removed: review it (ssanet ssa cancel to end it)",
				"ssa", rec.SSAID, "peer", rec.Peer, "version", cur.Version)
			continue
		}
		annul = append(annul, rec.SSAID)
	}
	if len(annul) == 0 {
		return
	}
	// Not on the caller's goroutine (a roster exchange, or the operator's publish): each
	// cancellation may wait for the removed member, which can no longer connect.
	a.goRun(func() {
		for _, id := range annul {
			ctx, cancel := context.WithTimeout(context.Background(), annulTimeout)
			rec, err := a.Cancel(ctx, id)
			cancel()
			if err != nil {
				a.log.Warn("agreement with a member the community roster removed: the roster asks to cancel it, and the cancellation failed; cancel it with ssanet ssa cancel",
					"ssa", id, "version", cur.Version, "err", err)
				continue
			}
			a.log.Warn("agreement with a member the community roster removed: cancelled, as the roster asks (the member, which can no longer connect, may never confirm)",
				"ssa", id, "peer", rec.Peer, "state", rec.State.String(), "version", cur.Version)
		}
	})
}

// CommunityView is the community roster an agent holds, as the control API shows it.
type CommunityView struct {
	Community    string       `json:"community"`
	Version      uint64       `json:"version"`
	Expires      string       `json:"expires"`
	Expired      bool         `json:"expired"`
	Threshold    uint64       `json:"threshold"`
	Admins       []string     `json:"admins"`
	Members      []MemberView `json:"members"`
	Signers      []string     `json:"signers"`
	AnnulRemoved bool         `json:"annul_removed,omitempty"`
}

// MemberView is one member of a roster.
type MemberView struct {
	Peer         string   `json:"peer"`
	Organisation string   `json:"organisation,omitempty"`
	Roles        []string `json:"roles"`
}

// ViewRoster shows a signed roster, expired or not at now.
func ViewRoster(s *protocol.SignedRoster, now time.Time) *CommunityView {
	r := s.Roster()
	v := &CommunityView{Community: r.Community, Version: r.Version, Expires: r.Expires.String(), Expired: r.Expired(now),
		Threshold: r.Threshold, Admins: []string{}, Members: []MemberView{}, Signers: []string{}, AnnulRemoved: r.AnnulRemoved}
	for _, p := range r.Admins {
		v.Admins = append(v.Admins, p.String())
	}
	for _, m := range r.Members {
		mv := MemberView{Peer: m.Peer.String(), Organisation: m.Organisation, Roles: []string{}}
		for _, role := range m.Roles {
			mv.Roles = append(mv.Roles, role.String())
		}
		v.Members = append(v.Members, mv)
	}
	for _, p := range s.Signers() {
		v.Signers = append(v.Signers, p.String())
	}
	return v
}

// Community is the roster the agent holds, or ErrNoCommunity.
func (a *Agent) Community() (*CommunityView, error) {
	s := a.roster.cur.Load()
	if s == nil {
		return nil, ErrNoCommunity
	}
	return ViewRoster(s, a.roster.now()), nil
}

// RosterBytes is the signed roster the agent holds, encoded, or ErrNoCommunity: the base of
// the next proposal.
func (a *Agent) RosterBytes() ([]byte, error) {
	s := a.roster.cur.Load()
	if s == nil {
		return nil, ErrNoCommunity
	}
	return s.Encode()
}

// PublishRoster verifies raw (a signed roster) as the successor of the roster held, persists
// and applies it, and gives it to every connected peer, which passes it on.
func (a *Agent) PublishRoster(raw []byte) (*CommunityView, error) {
	s, err := a.roster.publish(raw)
	if err != nil {
		return nil, err
	}
	return ViewRoster(s, a.roster.now()), nil
}

func (api controlAPI) community(r *http.Request) (any, error) {
	if r.URL.Query().Get("format") == "cbor" {
		return api.a.RosterBytes()
	}
	return api.a.Community()
}

func (api controlAPI) publishRoster(r *http.Request) (any, error) {
	body, err := readBody(r, protocol.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	return api.a.PublishRoster(body)
}
