package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// The control API: HTTP+JSON on a Unix socket in the agent's home (mode 0600), used by the
// CLI. Errors are JSON {"error": "..."} with a status that says whose fault it is.

// NegotiationView is a negotiation as the control API shows it.
type NegotiationView struct {
	SSAID     string            `json:"ssa_id"`
	Role      string            `json:"role"`
	State     string            `json:"state"`
	Peer      string            `json:"peer"`
	Offer     string            `json:"offer,omitempty"`
	Note      string            `json:"note,omitempty"`
	Reasons   []protocol.Reason `json:"reasons,omitempty"`
	Delivered bool              `json:"delivered"`
	// Phase is the SSA's place in the life cycle of clause 9.1.
	Phase   string    `json:"phase"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// SSA is the agreement in force (or annulled), else the SSA under negotiation.
	SSA *protocol.SSA `json:"ssa,omitempty"`
	// Versions lists every agreed version's ID, oldest first, when there are several.
	Versions []string `json:"versions,omitempty"`
}

// MessageView is one message of a transcript.
type MessageView struct {
	Type   string `json:"type"`
	Sender string `json:"sender"`
	Time   string `json:"time"`
	ID     string `json:"id"`
	Prev   string `json:"prev,omitempty"`
	Hash   string `json:"hash"`
	SSAID  string `json:"ssa_id,omitempty"`
	Status string `json:"status,omitempty"`
	// Reasons are a rejection's reasons.
	Reasons []protocol.Reason `json:"reasons,omitempty"`
}

// RequestBody asks the agent to request an SSA from a provider.
type RequestBody struct {
	Provider string `json:"provider"` // peer ID or multiaddr with /p2p/
	Template string `json:"template"` // YAML
}

// IDView is the agent's identity.
type IDView struct {
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs"`
}

// ErrUntrustedSocket means the control socket of a home may not be the agent's: it is no
// socket, or a user other than the home's owner made it, or others can write the home.
var ErrUntrustedSocket = errors.New("agent: untrusted control socket")

// ControlSocket is the path of a home's control socket, once it is found trustworthy: the
// home is not writable by others and the socket is a socket owned by the home's owner (who
// runs the agent) with no access for others. A client checks it before it believes an answer.
func ControlSocket(home string) (string, error) {
	path := filepath.Join(home, SocketFile)
	hi, err := os.Stat(home)
	if err != nil {
		return path, err
	}
	si, err := os.Lstat(path)
	if err != nil {
		return path, err
	}
	homeOwner, _ := ownerOf(hi)
	sockOwner, _ := ownerOf(si)
	switch {
	case hi.Mode().Perm()&0o022 != 0:
		return path, fmt.Errorf("%w: %s has mode %04o, so others could have replaced %s: run chmod go-w %s and restart the agent",
			ErrUntrustedSocket, home, hi.Mode().Perm(), SocketFile, home)
	case si.Mode().Type() != os.ModeSocket:
		return path, fmt.Errorf("%w: %s is not a socket", ErrUntrustedSocket, path)
	case sockOwner != homeOwner:
		return path, fmt.Errorf("%w: %s belongs to user %d, not to user %d who owns the home: another user may have put it there; remove it and restart the agent",
			ErrUntrustedSocket, path, sockOwner, homeOwner)
	case si.Mode().Perm()&0o077 != 0:
		return path, fmt.Errorf("%w: %s has mode %04o; the agent makes it 0600: remove it and restart the agent", ErrUntrustedSocket, path, si.Mode().Perm())
	}
	return path, nil
}

// ServeControl serves the control API on the home's socket until ctx ends, and returns once
// the calls in progress have returned (ctx ends their waits too), so that the caller can
// close the agent under none of them.
func (a *Agent) ServeControl(ctx context.Context) error {
	path := filepath.Join(a.home, SocketFile)
	os.Remove(path) // a stale socket of a dead daemon
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: a.controlHandler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	stopped := make(chan struct{})
	go func() { // owned by this call: it ends with ctx, before the call returns
		defer close(stopped)
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	err = srv.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-stopped
	return nil
}

type apiError struct {
	status int
	err    error
}

func (e apiError) Error() string { return e.err.Error() }

func badRequest(err error) error { return apiError{http.StatusBadRequest, err} }

// ErrBodyTooLarge means a request to the control API was over its limit and was refused
// whole: a template cut short can still parse, without the masking rules that came last.
var ErrBodyTooLarge = errors.New("agent: request body over the limit")

// Limits of the control API's bodies: a template is at most one protocol message; a request
// carries one inside JSON, whose escaping may double it.
const (
	maxTemplateBody = protocol.MaxMessageSize
	maxRequestBody  = 2*protocol.MaxMessageSize + 4096
)

// readBody reads a whole request body of at most limit bytes, refusing (413) a longer one.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		return nil, apiError{http.StatusRequestEntityTooLarge,
			fmt.Errorf("%w: the body is over %d bytes and was refused whole; make the template smaller", ErrBodyTooLarge, limit)}
	}
	if err != nil {
		return nil, badRequest(fmt.Errorf("read the request body: %w", err))
	}
	return b, nil
}

func (a *Agent) controlHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v, err := f(r)
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				status := http.StatusInternalServerError
				var ae apiError
				switch {
				case errors.As(err, &ae):
					status = ae.status
				case errors.Is(err, ErrUnknownSSA), errors.Is(err, storage.ErrNotFound):
					status = http.StatusNotFound
				case errors.Is(err, ErrNotDecidable), errors.Is(err, protocol.ErrUnexpected):
					status = http.StatusConflict
				case errors.Is(err, storage.ErrDiskFull):
					status = http.StatusInsufficientStorage
				}
				w.WriteHeader(status)
				json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
				return
			}
			if b, ok := v.([]byte); ok {
				w.Header().Set("Content-Type", "application/cbor")
				w.Write(b)
				return
			}
			json.NewEncoder(w).Encode(v)
		})
	}
	handle("GET /v1/id", func(*http.Request) (any, error) {
		return IDView{PeerID: a.ID().String(), Addrs: a.Addrs()}, nil
	})
	handle("GET /v1/offers", func(*http.Request) (any, error) {
		offers, err := a.store.Offers()
		if offers == nil {
			offers = []*protocol.Offer{} // no offers is [], not null
		}
		return offers, err
	})
	handle("POST /v1/offers", func(r *http.Request) (any, error) {
		body, err := readBody(r, maxTemplateBody)
		if err != nil {
			return nil, err
		}
		o, err := protocol.ParseOfferYAML(body, a.neg.now())
		if err != nil {
			return nil, badRequest(err)
		}
		if err := a.checkOfferKeys(o); err != nil {
			return nil, badRequest(err)
		}
		fillContact(&o.Terms.Participants.Provider, a.cfg.Contact)
		o.Terms.Participants.Provider.PeerID = a.ID().String()
		if err := a.store.PutOffer(o); err != nil {
			return nil, err
		}
		a.dir.Readvertise()
		return o, nil
	})
	handle("DELETE /v1/offers/{id}", func(r *http.Request) (any, error) {
		if err := a.store.DeleteOffer(r.PathValue("id")); err != nil {
			return nil, err
		}
		a.dir.Readvertise()
		return map[string]string{"removed": r.PathValue("id")}, nil
	})
	handle("GET /v1/discover", func(r *http.Request) (any, error) {
		q := r.URL.Query()
		if q.Get("type") == "" {
			return nil, badRequest(errors.New("discover needs an information type"))
		}
		timeout, err := time.ParseDuration(q.Get("timeout"))
		if err != nil || timeout <= 0 {
			return nil, badRequest(fmt.Errorf("discover: bad timeout %q", q.Get("timeout")))
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		ps, err := a.dir.Find(ctx, q.Get("type"), q.Get("format"))
		if errors.Is(err, discovery.ErrNoPeers) {
			return nil, apiError{http.StatusServiceUnavailable, err}
		}
		if ps == nil {
			ps = []discovery.Provider{}
		}
		return ps, err
	})
	handle("GET /v1/discover/peer/{id}", func(r *http.Request) (any, error) {
		p, err := peer.Decode(r.PathValue("id"))
		if err != nil {
			return nil, badRequest(fmt.Errorf("%q is not a peer ID: %w", r.PathValue("id"), err))
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		return a.dir.Peer(ctx, p)
	})
	handle("POST /v1/requests", func(r *http.Request) (any, error) {
		raw, err := readBody(r, maxRequestBody)
		if err != nil {
			return nil, err
		}
		var body RequestBody
		if err := json.Unmarshal(raw, &body); err != nil {
			return nil, badRequest(err)
		}
		if len(body.Template) > maxTemplateBody {
			return nil, apiError{http.StatusRequestEntityTooLarge,
				fmt.Errorf("%w: the template is over %d bytes and was refused whole; make it smaller", ErrBodyTooLarge, maxTemplateBody)}
		}
		info, err := parseProvider(body.Provider)
		if err != nil {
			return nil, badRequest(err)
		}
		tmpl, err := protocol.ParseSSAYAML([]byte(body.Template), a.neg.now())
		if err != nil {
			return nil, badRequest(err)
		}
		rec, err := a.Request(r.Context(), info, tmpl)
		if err != nil {
			return nil, err
		}
		return a.view(rec)
	})
	handle("POST /v1/ingest", func(r *http.Request) (any, error) {
		format := r.URL.Query().Get("format")
		if !slices.Contains(policy.Formats(), format) {
			return nil, badRequest(fmt.Errorf("ingest: format %q is not one of %v", format, policy.Formats()))
		}
		return a.Ingest(r.Context(), format, r.Body)
	})
	handle("GET /v1/records", func(r *http.Request) (any, error) {
		q := r.URL.Query()
		after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
		return a.Records(q.Get("ssa"), after, 1000)
	})
	handle("GET /v1/monitor/{id}", func(r *http.Request) (any, error) {
		return a.Monitor(r.Context(), r.PathValue("id"))
	})
	handle("GET /v1/ssa", func(*http.Request) (any, error) {
		recs, err := a.store.Negotiations()
		if err != nil {
			return nil, err
		}
		out := []*NegotiationView{}
		for _, rec := range recs {
			v, err := a.view(rec)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	})
	handle("GET /v1/ssa/{id}", func(r *http.Request) (any, error) {
		rec, err := a.Negotiation(r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return a.view(rec)
	})
	handle("GET /v1/ssa/{id}/export", func(r *http.Request) (any, error) {
		s, err := a.store.Agreement(r.PathValue("id"))
		if errors.Is(err, storage.ErrNotFound) {
			return nil, apiError{http.StatusNotFound, fmt.Errorf("SSA %s has not been agreed (only approved or annulled SSAs carry both signatures)", r.PathValue("id"))}
		}
		if err != nil {
			return nil, err
		}
		return s.Encode()
	})
	handle("GET /v1/ssa/{id}/transcript", func(r *http.Request) (any, error) {
		rec, err := a.Negotiation(r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		raw, err := a.store.Transcript(rec.ID)
		if err != nil {
			return nil, err
		}
		out := []MessageView{}
		for _, b := range raw {
			e, err := protocol.Open(b)
			if err != nil {
				return nil, fmt.Errorf("%w: transcript of %s: %v", storage.ErrCorrupt, r.PathValue("id"), err)
			}
			out = append(out, messageView(e))
		}
		return out, nil
	})
	decide := func(d Decision) func(r *http.Request) (any, error) {
		return func(r *http.Request) (any, error) {
			rec, err := a.Decide(r.Context(), r.PathValue("id"), d, r.URL.Query().Get("reason"))
			if err != nil {
				return nil, err
			}
			return a.view(rec)
		}
	}
	handle("POST /v1/ssa/{id}/approve", decide(Approve))
	handle("POST /v1/ssa/{id}/decline", decide(Decline))
	handle("POST /v1/ssa/{id}/cancel", func(r *http.Request) (any, error) {
		rec, err := a.Cancel(r.Context(), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return a.view(rec)
	})
	handle("POST /v1/ssa/{id}/revise", func(r *http.Request) (any, error) {
		body, err := readBody(r, maxTemplateBody)
		if err != nil {
			return nil, err
		}
		tmpl, err := protocol.ParseSSAYAML(body, a.neg.now())
		if err != nil {
			return nil, badRequest(err)
		}
		rec, err := a.Revise(r.Context(), r.PathValue("id"), tmpl)
		if err != nil {
			return nil, err
		}
		return a.view(rec)
	})
	return mux
}

func messageView(e *protocol.Envelope) MessageView {
	v := MessageView{Type: e.Header.Type.String(), Sender: e.Sender.String(),
		Time: time.UnixMilli(e.Header.Time).UTC().Format(time.RFC3339Nano),
		ID:   fmt.Sprintf("%x", e.Header.ID), Prev: fmt.Sprintf("%x", e.Header.Prev), Hash: fmt.Sprintf("%x", e.Hash())}
	if e.SSA != nil {
		v.SSAID, v.Status = e.SSA.ID, e.SSA.Status.String()
	}
	if e.Rejection != nil {
		v.SSAID, v.Reasons = e.Rejection.SSAID, e.Rejection.Reasons
	}
	return v
}

// view builds the API view of a negotiation.
func (a *Agent) view(rec *storage.Negotiation) (*NegotiationView, error) {
	v := &NegotiationView{SSAID: rec.SSAID, Role: rec.Role.String(), State: rec.State.String(), Peer: rec.Peer,
		Offer: rec.OfferID, Note: rec.Note, Reasons: rec.Reasons, Delivered: rec.Delivered,
		Created: rec.Created, Updated: rec.Updated}
	s, err := a.store.Agreement(rec.SSAID)
	switch {
	case err == nil:
		v.SSA = s
		for p := s; p != nil && p.Supersedes != ""; {
			v.Versions = append([]string{p.Supersedes}, v.Versions...)
			if p, err = a.store.Agreement(p.Supersedes); err != nil {
				return nil, err
			}
		}
		if len(v.Versions) > 0 {
			v.Versions = append(v.Versions, s.ID)
		}
	case errors.Is(err, storage.ErrNotFound):
		raw, err := a.store.Transcript(rec.ID)
		if err != nil {
			return nil, err
		}
		for i := len(raw) - 1; i >= 0 && v.SSA == nil; i-- {
			e, err := protocol.Open(raw[i])
			if err != nil {
				return nil, fmt.Errorf("%w: %v", storage.ErrCorrupt, err)
			}
			v.SSA = e.SSA
		}
	default:
		return nil, err
	}
	v.Phase = phase(v.SSA, rec.State, time.Now())
	return v, nil
}

// parseProvider reads a provider as a peer ID or a multiaddr ending in /p2p/ID.
func parseProvider(s string) (peer.AddrInfo, error) {
	if strings.HasPrefix(s, "/") {
		addr, err := ma.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("provider %q is not a multiaddr: %w", s, err)
		}
		info, err := peer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			return peer.AddrInfo{}, fmt.Errorf("provider %q: a multiaddr must end in /p2p/PEERID: %w", s, err)
		}
		return *info, nil
	}
	id, err := peer.Decode(s)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("provider %q is neither a peer ID nor a multiaddr: %w", s, err)
	}
	return peer.AddrInfo{ID: id}, nil
}
