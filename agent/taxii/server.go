package taxii

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

// Media types of TAXII 2.1 (§1.6.8).
const (
	MediaTAXII = "application/taxii+json;version=2.1"
	MediaSTIX  = "application/stix+json;version=2.1"
)

// Paths of the server.
const (
	DiscoveryPath = "/taxii2/"
	APIRootPath   = "/ssanet/"
)

// Bounds of a request.
const (
	maxPageBytes   = 8 << 20  // the objects of one page, in JSON (always at least one object)
	maxScan        = 4096     // records read by one request
	readChunk      = 256      // records read from the store at a time
	readChunkBytes = 4 << 20  // bytes read from the store at a time
	maxQuery       = 8 << 10  // bytes of a request's query
	maxHeader      = 16 << 10 // bytes of a request's headers
	maxBody        = 1 << 20  // bytes of a request body (the server reads none)
	// maxPaging is how many requests read records at once; one more gets 429. Each holds
	// at most maxPageBytes of objects and readChunkBytes of records.
	maxPaging = 8
)

// Record is one record of an SSA's inbox.
type Record struct {
	cti.Record
	// Withheld is set for a record kept but not shared: it breaks the SSA (quarantined).
	Withheld bool
}

// Source is what the server reads: the agreements of the SSAs this agent requested and the
// records received under them.
type Source interface {
	// Agreement returns the agreement of an SSA this agent requested and holds records of,
	// and false for any other.
	Agreement(ssaID string) (*cti.Agreement, bool)
	// Records returns up to max records of the SSA's inbox with Seq > after, in order, and at
	// most maxBytes of them (at least one if any is left).
	Records(ssaID string, after uint64, max, maxBytes int) ([]Record, error)
}

// Server is the TAXII 2.1 server.
type Server struct {
	cfg     Config
	home    string
	src     Source
	log     *slog.Logger
	now     func() time.Time
	maxPage int
	// users by name, with the SHA-256 of their secrets (nil: none of that kind).
	users map[string]*user
	// collections by SSA ID, and the SSA ID of each collection id.
	cols  map[string]*Collection
	ids   map[string]string
	order []string // SSA IDs in configuration order

	paging chan struct{} // one token per request reading records (maxPaging)

	mu       sync.Mutex
	srv      *http.Server
	unmapped map[string]bool // SSAs whose unmappable records were logged
}

type user struct {
	name     string
	password []byte // SHA-256 of the password, nil if none
	token    []byte // SHA-256 of the token, nil if none
	audience string
}

// New returns a server over src with the section cfg (already validated), reading the
// secret files (relative to home).
func New(cfg Config, home string, src Source, log *slog.Logger, now func() time.Time) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, home: home, src: src, log: log, now: now, maxPage: cfg.MaxPage, users: map[string]*user{},
		cols: map[string]*Collection{}, ids: map[string]string{}, unmapped: map[string]bool{}, paging: make(chan struct{}, maxPaging)}
	if s.maxPage == 0 {
		s.maxPage = DefaultMaxPage
	}
	for name, u := range cfg.Users {
		su := &user{name: name, audience: u.audience()}
		for _, f := range []struct {
			path string
			into *[]byte
		}{{u.PasswordFile, &su.password}, {u.TokenFile, &su.token}} {
			if f.path == "" {
				continue
			}
			secret, err := readSecret(home, f.path)
			if err != nil {
				return nil, fmt.Errorf("user %s: %w", name, err)
			}
			h := sha256.Sum256(secret)
			*f.into = h[:]
		}
		s.users[name] = su
	}
	// A bearer token names one user: two users with the same token would leave which of them
	// (and so which collections and audience) a request gets to the map's order.
	for name, u := range s.users {
		for other, o := range s.users {
			if name < other && u.token != nil && o.token != nil && subtle.ConstantTimeCompare(u.token, o.token) == 1 {
				return nil, fmt.Errorf("%w: users %s and %s have the same token: give each its own", ErrConfig, name, other)
			}
		}
	}
	for i := range cfg.Collections {
		c := &cfg.Collections[i]
		s.cols[c.SSA] = c
		s.ids[CollectionID(c.SSA)] = c.SSA
		s.order = append(s.order, c.SSA)
	}
	return s, nil
}

// CollectionID is the id of an SSA's collection: the UUIDv5 of the SSA ID in the STIX
// namespace, prefixed "ssa:". The SSA ID itself is the collection's alias and is accepted in
// its place.
func CollectionID(ssaID string) string {
	ns := [16]byte{0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7}
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte("ssanet-taxii-collection:" + ssaID))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Start listens on the configured address and serves over TLS until Close.
func (s *Server) Start() (net.Addr, error) {
	cert, err := tls.LoadX509KeyPair(abs(s.home, s.cfg.TLSCert), abs(s.home, s.cfg.TLSKey))
	if err != nil {
		return nil, fmt.Errorf("%w: tls-cert and tls-key: %w", ErrConfig, err)
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("taxii: listen on %s: %w", s.cfg.Listen, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: maxHeader,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ErrorLog:  slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("TAXII server stopped: collections can no longer be pulled; restart the agent, and if it fails again check taxii in config.yaml",
				"addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("TAXII server listening", "addr", ln.Addr().String(), "collections", len(s.order))
	return ln.Addr(), nil
}

// Close stops the server, waiting up to 5 s for the requests in flight.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return errors.Join(err, srv.Close())
	}
	return nil
}

func abs(home, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(home, path)
}

// authenticate returns the user the request's credentials name, or nil. Every secret of the
// kind presented is compared, in constant time, whether or not one already matched.
func (s *Server) authenticate(r *http.Request) *user {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(scheme) {
	case "basic":
		name, pass, ok := r.BasicAuth()
		if !ok {
			return nil
		}
		sum := sha256.Sum256([]byte(pass))
		u, known := s.users[name]
		want := make([]byte, sha256.Size) // a user without a password matches nothing
		if known && u.password != nil {
			want = u.password
		}
		if subtle.ConstantTimeCompare(sum[:], want) == 1 && known && u.password != nil {
			return u
		}
	case "bearer":
		if cred == "" {
			return nil
		}
		sum := sha256.Sum256([]byte(cred))
		var found *user
		for _, u := range s.users {
			if u.token != nil && subtle.ConstantTimeCompare(sum[:], u.token) == 1 {
				found = u
			}
		}
		return found
	}
	return nil
}

// offered says why the SSA's collection is not offered to u, or "" when it is: the SSA is
// not one this agent holds records of, its TLP is RED, or its redistribution does not reach
// u's audience.
func (s *Server) offered(ssaID string, u *user) (*cti.Agreement, string) {
	a, ok := s.src.Agreement(ssaID)
	switch {
	case !ok:
		return nil, "no SSA " + ssaID + " on this agent"
	case a.TLP == protocol.TLPRed:
		return nil, "TLP:RED"
	}
	levels := protocol.RedistributionLevels
	if got, want := slices.Index(levels, a.Redistribution), slices.Index(levels, u.audience); got < want || got <= 0 {
		return nil, fmt.Sprintf("redistribution %q does not reach audience %q", a.Redistribution, u.audience)
	}
	return a, ""
}

// readable says whether u may read the collection of the SSA.
func (s *Server) readable(c *Collection, u *user) bool { return slices.Contains(c.Readers, u.name) }
