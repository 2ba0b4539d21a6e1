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
// close the agent under none of them. ready, if not nil, is called once the socket listens:
// from then on the agent answers (ssanet run tells systemd it is ready).
func (a *Agent) ServeControl(ctx context.Context, ready func()) error {
	path := filepath.Join(a.home, SocketFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) { // a dead daemon's
		return fmt.Errorf("remove the stale control socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return err
	}
	if ready != nil {
		ready()
	}
	srv := &http.Server{Handler: a.controlHandler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	stopped := make(chan struct{})
	go func() { // owned by this call: it ends with ctx, before the call returns
		defer close(stopped)
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(shut) != nil {
			// A handler still runs: a backup stream to a client that stopped reading blocks
			// in a write no context ends. Closing the connections ends it, so the store's
			// Close, which waits for the backup, does not wait forever.
			srv.Close()
		}
	}()
	err = srv.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-stopped
	return nil
}

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
		return nil, fmt.Errorf("%w: the body is over %d bytes and was refused whole; make the template smaller", ErrBodyTooLarge, limit)
	}
	if err != nil {
		return nil, invalid(fmt.Errorf("read the request body: %w", err))
	}
	return b, nil
}

// controlAPI is the control API: each route reads a request, calls one exported method of the
// agent and writes the answer; what the agent does is in those methods (api.go), so that the
// demo and the CLI get the same.
type controlAPI struct{ a *Agent }

// route is one endpoint: its net/http pattern and its call. An answer of type []byte is sent
// as CBOR, any other as JSON.
type route struct {
	pattern string
	call    func(r *http.Request) (any, error)
}

func (a *Agent) controlHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range (controlAPI{a}).routes() {
		mux.HandleFunc(rt.pattern, serve(rt.call))
	}
	mux.HandleFunc("GET /v1/backup", a.serveBackup) // a stream, not one answer (backup.go)
	return mux
}

func (api controlAPI) routes() []route {
	return []route{
		{"GET /v1/id", api.id},
		{"GET /v1/offers", api.offers},
		{"GET /v1/offers/check", api.checkOffers},
		{"POST /v1/offers", api.addOffer},
		{"DELETE /v1/offers/{id}", api.removeOffer},
		{"GET /v1/discover", api.discover},
		{"GET /v1/discover/peer/{id}", api.discoverPeer},
		{"POST /v1/requests", api.request},
		{"POST /v1/ingest", api.ingest},
		{"GET /v1/records", api.records},
		{"GET /v1/monitor/{id}", api.monitor},
		{"GET /v1/sinks", api.sinks},
		{"GET /v1/peers", api.peers},
		{"GET /v1/status", api.status},
		{"GET /v1/ssa", api.negotiations},
		{"GET /v1/ssa/{id}", api.negotiation},
		{"GET /v1/ssa/{id}/export", api.export},
		{"GET /v1/ssa/{id}/transcript", api.transcript},
		{"GET /v1/ssa/{id}/transcript/export", api.exportTranscript},
		{"POST /v1/ssa/{id}/approve", api.decide(Approve)},
		{"POST /v1/ssa/{id}/decline", api.decide(Decline)},
		{"POST /v1/ssa/{id}/cancel", api.cancel},
		{"POST /v1/ssa/{id}/revise", api.revise},
		{"GET /v1/community", api.community},
		{"POST /v1/community", api.publishRoster},
		{"POST /v1/reload", api.reload},
	}
}

// reload answers a reload that failed part way with its report too (an error status, the
// report with its error): what did apply is as much the operator's to know as what did not.
func (api controlAPI) reload(*http.Request) (any, error) {
	rep, err := api.a.Reload()
	if err != nil && rep != nil {
		rep.Error = err.Error()
		return nil, &answeredError{err: err, answer: rep}
	}
	return rep, err
}

// answeredError is an error whose answer is not {"error": "..."} alone but answer, which
// carries the error message and what was done before it.
type answeredError struct {
	err    error
	answer any
}

func (e *answeredError) Error() string { return e.err.Error() }
func (e *answeredError) Unwrap() error { return e.err }

func (api controlAPI) checkOffers(*http.Request) (any, error) { return api.a.CheckOffers() }

// serve answers a request with what call returns; an error becomes {"error": "..."}.
func serve(call func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := call(r)
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(statusOf(err))
			var answered *answeredError
			if errors.As(err, &answered) {
				json.NewEncoder(w).Encode(answered.answer)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		if b, ok := v.([]byte); ok {
			w.Header().Set("Content-Type", "application/cbor")
			w.Write(b)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

// statusOf is the HTTP status of an error: whose fault it is.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrUnknownSSA), errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrNotDecidable), errors.Is(err, ErrNotRevisable), errors.Is(err, protocol.ErrUnexpected), errors.Is(err, ErrNoCommunity):
		return http.StatusConflict
	case errors.Is(err, storage.ErrDiskFull):
		return http.StatusInsufficientStorage
	case errors.Is(err, discovery.ErrNoPeers):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (api controlAPI) id(*http.Request) (any, error) {
	return IDView{PeerID: api.a.ID().String(), Addrs: api.a.Addrs()}, nil
}

func (api controlAPI) offers(*http.Request) (any, error) { return api.a.Offers() }

func (api controlAPI) addOffer(r *http.Request) (any, error) {
	body, err := readBody(r, maxTemplateBody)
	if err != nil {
		return nil, err
	}
	return api.a.AddOffer(body)
}

func (api controlAPI) removeOffer(r *http.Request) (any, error) {
	id := r.PathValue("id")
	if err := api.a.RemoveOffer(id); err != nil {
		return nil, err
	}
	return map[string]string{"removed": id}, nil
}

func (api controlAPI) discover(r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Get("type") == "" {
		return nil, invalid(errors.New("discover needs an information type"))
	}
	timeout, err := time.ParseDuration(q.Get("timeout"))
	if err != nil || timeout <= 0 {
		return nil, invalid(fmt.Errorf("discover: bad timeout %q", q.Get("timeout")))
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	return api.a.Discover(ctx, q.Get("type"), q.Get("format"))
}

func (api controlAPI) discoverPeer(r *http.Request) (any, error) {
	p, err := peer.Decode(r.PathValue("id"))
	if err != nil {
		return nil, invalid(fmt.Errorf("%q is not a peer ID: %w", r.PathValue("id"), err))
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	return api.a.DiscoverPeer(ctx, p)
}

func (api controlAPI) request(r *http.Request) (any, error) {
	raw, err := readBody(r, maxRequestBody)
	if err != nil {
		return nil, err
	}
	var body RequestBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, invalid(err)
	}
	if len(body.Template) > maxTemplateBody {
		return nil, fmt.Errorf("%w: the template is over %d bytes and was refused whole; make it smaller", ErrBodyTooLarge, maxTemplateBody)
	}
	info, err := parseProvider(body.Provider)
	if err != nil {
		return nil, invalid(err)
	}
	tmpl, err := api.a.ParseTemplate([]byte(body.Template))
	if err != nil {
		return nil, err
	}
	return api.a.viewOf(api.a.Request(r.Context(), info, tmpl))
}

func (api controlAPI) ingest(r *http.Request) (any, error) {
	format := r.URL.Query().Get("format")
	if !slices.Contains(policy.Formats(), format) {
		return nil, invalid(fmt.Errorf("ingest: format %q is not one of %v", format, policy.Formats()))
	}
	return api.a.Ingest(r.Context(), format, r.Body)
}

func (api controlAPI) records(r *http.Request) (any, error) {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64) // none or bad: from the first
	return api.a.Records(q.Get("ssa"), after, 1000)
}

func (api controlAPI) monitor(r *http.Request) (any, error) {
	return api.a.Monitor(r.Context(), r.PathValue("id"))
}

func (api controlAPI) negotiations(*http.Request) (any, error) { return api.a.Negotiations() }

func (api controlAPI) sinks(*http.Request) (any, error) { return api.a.Sinks() }

func (api controlAPI) peers(*http.Request) (any, error) { return api.a.Peers() }

func (api controlAPI) status(*http.Request) (any, error) { return api.a.Status() }

func (api controlAPI) negotiation(r *http.Request) (any, error) {
	return api.a.ShowNegotiation(r.PathValue("id"))
}

func (api controlAPI) export(r *http.Request) (any, error) { return api.a.Export(r.PathValue("id")) }

func (api controlAPI) transcript(r *http.Request) (any, error) {
	return api.a.Transcript(r.PathValue("id"))
}

func (api controlAPI) decide(d Decision) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		return api.a.viewOf(api.a.Decide(r.Context(), r.PathValue("id"), d, r.URL.Query().Get("reason")))
	}
}

func (api controlAPI) cancel(r *http.Request) (any, error) {
	return api.a.viewOf(api.a.Cancel(r.Context(), r.PathValue("id")))
}

func (api controlAPI) revise(r *http.Request) (any, error) {
	body, err := readBody(r, maxTemplateBody)
	if err != nil {
		return nil, err
	}
	return api.a.viewOf(api.a.ReviseTemplate(r.Context(), r.PathValue("id"), body, r.URL.Query()["set"]))
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
