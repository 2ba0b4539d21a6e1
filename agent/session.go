package agent

import (
	"sync"
	"sync/atomic"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// session is one negotiation in memory: its pure state machine and its stored record. mu
// serialises the steps of one negotiation (see the package doc); I/O with the peer happens
// outside it.
type session struct {
	mu      sync.Mutex
	machine *protocol.Negotiation // the pure state machine of protocol, stepped under mu
	rec     *storage.Negotiation
	atRest  atomic.Bool
	// unbound is set on a request whose SSA ID the store refused to bind, as it names the SSA
	// of another negotiation (see receive): the request is rejected, and its record is kept
	// without that ID, which stays the other's.
	unbound bool
	// broken is set when a failed commit left the session neither in the state it had
	// reached nor readable back from the store (see rollback): every step refuses.
	broken error

	// refs counts the holders of the session; guarded by the cache's mu.
	refs int
	// ready, when not nil, is closed once the cache has loaded the session (outside its
	// lock), or failed to, with loadErr.
	ready   chan struct{}
	loadErr error
}

// sessionCache holds in memory the negotiations in use, so that memory does not grow with the
// number of negotiations stored.
//
// Contract: there is at most one session per negotiation ID in memory, and every holder of
// that ID holds the same one. get returns it, loading it with the given function if it is not
// in memory; the load runs outside the cache's lock (a long transcript's signatures take a
// while to check) and those who get the same ID meanwhile wait for it and share its result: a
// failed load is returned to each of them and leaves nothing behind. add puts in a session
// made by its caller, held once. Every session got or added is released exactly once; the last
// release of a session whose atRest is set drops it from memory, calling dropped under the
// cache's lock (so that a new session of the same ID cannot be loaded before dropped has
// run). The next get reads it from the store again. Safe for concurrent use.
type sessionCache struct {
	dropped func(*session)

	mu       sync.Mutex
	sessions map[string]*session
}

func newSessionCache(dropped func(*session)) *sessionCache {
	return &sessionCache{dropped: dropped, sessions: map[string]*session{}}
}

// get returns the session of negotiation id, from memory or made by load. The caller releases
// it.
func (c *sessionCache) get(id string, load func(*session) error) (*session, error) {
	c.mu.Lock()
	if s, ok := c.sessions[id]; ok {
		s.refs++
		c.mu.Unlock()
		if s.ready != nil {
			<-s.ready
		}
		if s.loadErr != nil {
			return nil, s.loadErr
		}
		return s, nil
	}
	s := &session{refs: 1, ready: make(chan struct{})}
	c.sessions[id] = s
	c.mu.Unlock()
	err := load(s)
	if err != nil {
		c.mu.Lock()
		delete(c.sessions, id)
		c.mu.Unlock()
		s.loadErr = err
	}
	close(s.ready)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// add puts s, a new negotiation's session with its record, in memory, held once by the
// caller.
func (c *sessionCache) add(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs = 1
	c.sessions[string(s.rec.ID)] = s
}

// release ends a use of s.
func (c *sessionCache) release(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.refs--
	if s.refs == 0 && s.atRest.Load() {
		c.dropped(s)
		delete(c.sessions, string(s.rec.ID))
	}
}

// inUse reports whether someone holds the session of negotiation id.
func (c *sessionCache) inUse(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[id]
	return ok && s.refs > 0
}

// len is how many sessions are in memory.
func (c *sessionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}
