package taxii

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssanet/ssanet/policy/cti"
)

// stamp is how the server writes a timestamp (RFC 3339, UTC, microseconds).
const stamp = "2006-01-02T15:04:05.000000Z"

// taxiiError is the error message resource (§3.6.1).
type taxiiError struct {
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
	HTTPStatus  string `json:"http_status"`
}

// ServeHTTP serves the TAXII 2.1 endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	u := s.authenticate(r)
	if u == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="ssanet TAXII", Bearer realm="ssanet TAXII"`)
		s.fail(w, http.StatusUnauthorized, "Authentication required", "send HTTP basic credentials or a bearer token of a user under taxii.users")
		return
	}
	if len(r.URL.RawQuery) > maxQuery {
		s.fail(w, http.StatusBadRequest, "Query too long", fmt.Sprintf("the query is over %d bytes", maxQuery))
		return
	}
	if !acceptable(r.Header.Values("Accept")) {
		s.fail(w, http.StatusNotAcceptable, "Media type not acceptable", "this server answers in "+MediaTAXII)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if !strings.HasSuffix(r.URL.Path, "/") {
		s.fail(w, http.StatusNotFound, "Not found", "TAXII 2.1 URLs end with a slash")
		return
	}
	switch {
	case r.URL.Path == DiscoveryPath:
		if s.get(w, r) {
			root := (&url.URL{Scheme: "https", Host: r.Host, Path: APIRootPath}).String()
			s.reply(w, http.StatusOK, map[string]any{"title": s.title(), "description": "Records shared under X.1205 SSAs, as STIX 2.1",
				"default": root, "api_roots": []string{root}})
		}
	case r.URL.Path == APIRootPath:
		if s.get(w, r) {
			s.reply(w, http.StatusOK, map[string]any{"title": s.title(), "versions": []string{MediaTAXII}, "max_content_length": maxBody})
		}
	case len(parts) == 2 && parts[0] == strings.Trim(APIRootPath, "/") && parts[1] == "collections":
		if s.get(w, r) {
			s.listCollections(w, u)
		}
	case len(parts) >= 3 && parts[0] == strings.Trim(APIRootPath, "/") && parts[1] == "collections":
		s.collection(w, r, u, parts[2], parts[3:])
	default:
		s.fail(w, http.StatusNotFound, "Not found", "this server has "+DiscoveryPath+" and the API root "+APIRootPath)
	}
}

// get checks the method is GET (or HEAD), else answers 405.
func (s *Server) get(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	s.fail(w, http.StatusMethodNotAllowed, "Method not allowed", "this server is read-only")
	return false
}

func (s *Server) title() string {
	if s.cfg.Title != "" {
		return s.cfg.Title
	}
	return "ssanet"
}

// acceptable reports whether the Accept header values admit the TAXII 2.1 media type: no
// header, */*, application/*, or application/taxii+json without a version or of version 2.1.
func acceptable(values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, m := range strings.Split(v, ",") {
			params := strings.Split(strings.ToLower(strings.ReplaceAll(m, " ", "")), ";")
			version, q := "", ""
			for _, p := range params[1:] {
				k, val, _ := strings.Cut(p, "=")
				switch k {
				case "version":
					version = val
				case "q":
					q = val
				}
			}
			if q != "" {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f == 0 {
					continue
				}
			}
			switch params[0] {
			case "*/*", "application/*":
				return true
			case "application/taxii+json":
				if version == "" || version == "2.1" {
					return true
				}
			}
		}
	}
	return false
}

// listCollections answers the collections the user may read (§5.1).
func (s *Server) listCollections(w http.ResponseWriter, u *user) {
	out := []map[string]any{}
	for _, id := range s.order {
		c := s.cols[id]
		if _, why := s.offered(id, u); why == "" && s.readable(c, u) {
			out = append(out, s.resource(c))
		}
	}
	body := map[string]any{}
	if len(out) > 0 {
		body["collections"] = out
	}
	s.reply(w, http.StatusOK, body)
}

// resource is the collection resource (§5.2).
func (s *Server) resource(c *Collection) map[string]any {
	title := c.Title
	if title == "" {
		title = "SSA " + c.SSA
	}
	desc := c.Description
	if desc == "" {
		desc = "STIX 2.1 objects of the records received under SSA " + c.SSA
	}
	return map[string]any{"id": CollectionID(c.SSA), "title": title, "description": desc, "alias": c.SSA,
		"can_read": true, "can_write": false, "media_types": []string{MediaSTIX}}
}

// collection serves a collection and the endpoints under it.
func (s *Server) collection(w http.ResponseWriter, r *http.Request, u *user, id string, rest []string) {
	ssaID, ok := s.ids[id]
	if !ok {
		ssaID = id
	}
	// A collection that is not exposed, not offered to u or that u may not read gets the
	// same answer (TAXII 2.1 §5.2: 404, "or the client does not have access to the collection
	// resource"), so that no user learns which collections exist beyond those it may read.
	c, ok := s.cols[ssaID]
	if !ok {
		s.collectionNotFound(w)
		return
	}
	a, why := s.offered(ssaID, u)
	if why != "" {
		s.log.Debug("TAXII collection not offered", "ssa", ssaID, "user", u.name, "why", why)
		s.collectionNotFound(w)
		return
	}
	if !s.readable(c, u) {
		s.log.Info("TAXII collection refused (answered 404): the user is not one of its readers", "ssa", ssaID, "user", u.name)
		s.collectionNotFound(w)
		return
	}
	switch {
	case len(rest) == 0:
		if s.get(w, r) {
			s.reply(w, http.StatusOK, s.resource(c))
		}
	case len(rest) == 1 && rest[0] == "objects" && r.Method == http.MethodPost:
		if ct := strings.ToLower(strings.ReplaceAll(r.Header.Get("Content-Type"), " ", "")); ct != MediaTAXII {
			s.fail(w, http.StatusUnsupportedMediaType, "Unsupported media type", "objects are added as "+MediaTAXII)
			return
		}
		s.fail(w, http.StatusForbidden, "Forbidden", "collections of this server are read-only")
	case len(rest) == 1 && (rest[0] == "objects" || rest[0] == "manifest"):
		if !s.get(w, r) {
			return
		}
		s.objects(w, r, c, a, rest[0] == "manifest", "")
	case len(rest) == 2 && rest[0] == "objects" && rest[1] != "":
		if !s.get(w, r) {
			return
		}
		s.objects(w, r, c, a, false, rest[1])
	case len(rest) == 3 && rest[0] == "objects" && rest[1] != "" && rest[2] == "versions":
		if !s.get(w, r) {
			return
		}
		s.versions(w, r, c, a, rest[1])
	default:
		s.fail(w, http.StatusNotFound, "Not found", "a collection has objects/, objects/{id}/, objects/{id}/versions/ and manifest/")
	}
}

// collectionNotFound answers a request for a collection the user may not see, whether or not
// it exists.
func (s *Server) collectionNotFound(w http.ResponseWriter) {
	s.fail(w, http.StatusNotFound, "Collection not found", "this API root has no such collection that you may read")
}

// query is a request's filters and position.
type query struct {
	addedAfter time.Time // zero: none
	limit      int
	from       cursor
	types, ids []string // match[type], match[id]; nil: any
	versions   []string // match[version]
	specOK     bool     // match[spec_version] admits 2.1
}

// parseQuery reads the URL parameters of an objects or manifest request.
func (s *Server) parseQuery(r *http.Request) (query, error) {
	v := r.URL.Query()
	q := query{limit: s.maxPage, specOK: true}
	if t := v.Get("added_after"); t != "" {
		at, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return q, fmt.Errorf("added_after %q: want an RFC 3339 timestamp", t)
		}
		q.addedAfter = at
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return q, fmt.Errorf("limit %q: want a positive integer", l)
		}
		q.limit = min(n, s.maxPage)
	}
	if n := v.Get("next"); n != "" {
		c, err := parseCursor(n)
		if err != nil {
			return q, err
		}
		q.from = c
	}
	list := func(key string) []string {
		if !v.Has(key) {
			return nil
		}
		var out []string
		for _, val := range v[key] {
			out = append(out, strings.Split(val, ",")...)
		}
		return out
	}
	q.types, q.ids, q.versions = list("match[type]"), list("match[id]"), list("match[version]")
	if sv := list("match[spec_version]"); sv != nil {
		q.specOK = slices.Contains(sv, "2.1")
	}
	return q, nil
}

// cursor is a position in a collection: the next object is object Off of record Seq; Seq 0
// is the objects the records share.
type cursor struct {
	seq uint64
	off int
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("v1.%d.%d", c.seq, c.off)))
}

func parseCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil && len(b) <= 64 {
		var n int
		n, err = fmt.Sscanf(string(b), "v1.%d.%d", &c.seq, &c.off)
		if err == nil && (n != 2 || c.off < 0 || c.String() != s) {
			err = fmt.Errorf("malformed")
		}
	} else if err == nil {
		err = fmt.Errorf("too long")
	}
	if err != nil {
		return cursor{}, fmt.Errorf("next %q is not a value this server gave (%v): start again without next", s, err)
	}
	return c, nil
}

// entry is an object of a page with its metadata.
type entry struct {
	obj     cti.Object
	json    json.RawMessage
	added   time.Time
	version string
}

// matches reports whether the object passes the query's match filters.
func (q *query) matches(o cti.Object, version string) bool {
	switch {
	case !q.specOK:
		return false
	case q.types != nil && !slices.Contains(q.types, o.Type()):
		return false
	case q.ids != nil && !slices.Contains(q.ids, o.ID()):
		return false
	}
	if q.versions == nil {
		return true
	}
	for _, v := range q.versions {
		if v == "last" || v == "first" || v == "all" || v == version {
			return true
		}
	}
	return false
}

// objects answers the objects, manifest or object endpoint (§5.3, §5.4, §5.6): one page.
func (s *Server) objects(w http.ResponseWriter, r *http.Request, c *Collection, a *cti.Agreement, manifest bool, objectID string) {
	page, next, more, ok := s.readPage(w, r, c, a, objectID)
	if !ok {
		return
	}
	if len(page) > 0 {
		w.Header().Set("X-TAXII-Date-Added-First", page[0].added.Format(stamp))
		w.Header().Set("X-TAXII-Date-Added-Last", page[len(page)-1].added.Format(stamp))
	}
	// The envelope is written by hand around the objects, encoded once by page.
	var b bytes.Buffer
	b.Grow(64 + len(page)*2 + sizeOf(page))
	fmt.Fprintf(&b, `{"more":%t`, more)
	if more {
		fmt.Fprintf(&b, `,"next":%q`, next.String()) // base64url: no escaping needed
	}
	for i, e := range page {
		if i == 0 {
			b.WriteString(`,"objects":[`)
		} else {
			b.WriteByte(',')
		}
		if manifest {
			m, err := json.Marshal(map[string]string{"id": e.obj.ID(), "date_added": e.added.Format(stamp), "version": e.version, "media_type": MediaSTIX})
			if err != nil {
				s.fail(w, http.StatusInternalServerError, "Internal error", "a manifest entry could not be encoded")
				return
			}
			b.Write(m)
		} else {
			b.Write(e.json)
		}
	}
	if len(page) > 0 {
		b.WriteByte(']')
	}
	b.WriteByte('}')
	w.Header().Set("Content-Type", MediaTAXII)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

func sizeOf(page []entry) int {
	n := 0
	for _, e := range page {
		n += len(e.json)
	}
	return n
}

// versions answers the versions endpoint (§5.7): each object of the collection has one
// version, but an SCO comes with every record that holds it, so its version is listed once.
func (s *Server) versions(w http.ResponseWriter, r *http.Request, c *Collection, a *cti.Agreement, objectID string) {
	page, next, more, ok := s.readPage(w, r, c, a, objectID)
	if !ok {
		return
	}
	body := struct {
		More     bool     `json:"more"`
		Next     string   `json:"next,omitempty"`
		Versions []string `json:"versions,omitempty"`
	}{More: more}
	if more {
		body.Next = next.String()
	}
	for _, e := range page {
		if !slices.Contains(body.Versions, e.version) {
			body.Versions = append(body.Versions, e.version)
		}
	}
	if len(page) > 0 {
		w.Header().Set("X-TAXII-Date-Added-First", page[0].added.Format(stamp))
		w.Header().Set("X-TAXII-Date-Added-Last", page[len(page)-1].added.Format(stamp))
	}
	s.reply(w, http.StatusOK, body)
}

// readPage reads the page a request for collection c asks for, restricted to objectID when it
// is not empty. When it returns false it has answered the request already: 400 for a bad
// query, 429 when too many requests are reading, 500 when the records could not be read, 404
// when objectID names no object of the collection.
func (s *Server) readPage(w http.ResponseWriter, r *http.Request, c *Collection, a *cti.Agreement, objectID string) (page []entry, next cursor, more, ok bool) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "Bad request", err.Error())
		return nil, next, false, false
	}
	if objectID != "" {
		q.ids = []string{objectID}
	}
	if s.busy(w) {
		return nil, next, false, false
	}
	page, next, more, err = s.page(c.SSA, a, &q)
	s.idle()
	if err != nil {
		s.log.Warn("TAXII page not read", "ssa", c.SSA, "err", err)
		s.fail(w, http.StatusInternalServerError, "Records not read", "the agent could not read the SSA's records; try again, and if it fails again read the agent's log")
		return nil, next, false, false
	}
	if objectID != "" && len(page) == 0 && !more {
		s.fail(w, http.StatusNotFound, "Object not found", "no object "+objectID+" in this collection")
		return nil, next, false, false
	}
	return page, next, more, true
}

// busy takes a paging token, or answers 429 and returns false when maxPaging requests are
// reading records already; the caller gives the token back with idle.
func (s *Server) busy(w http.ResponseWriter) bool {
	select {
	case s.paging <- struct{}{}:
		return false
	default:
		s.log.Warn("TAXII request refused: too many requests reading records at once", "max", maxPaging)
		w.Header().Set("Retry-After", "1")
		s.fail(w, http.StatusTooManyRequests, "Too many requests", fmt.Sprintf("%d requests are reading this server's records; try again in a second", maxPaging))
		return true
	}
}

func (s *Server) idle() { <-s.paging }

// page reads one page of the collection from q.from: at most q.limit objects, at most
// maxPageBytes of them (but at least one) and at most maxScan records read. more says
// whether to carry on from next.
func (s *Server) page(ssaID string, a *cti.Agreement, q *query) (page []entry, next cursor, more bool, err error) {
	now := s.now()
	size := 0
	// add offers the object at position at; false when the page is full (next is at).
	add := func(o cti.Object, added time.Time, at cursor) (bool, error) {
		version := versionOf(o, added)
		if !q.matches(o, version) {
			return true, nil
		}
		if len(page) >= q.limit {
			return false, nil
		}
		b, err := json.Marshal(o)
		if err != nil {
			return false, fmt.Errorf("object %s: %w", o.ID(), err)
		}
		if len(page) > 0 && size+len(b) > maxPageBytes {
			return false, nil
		}
		size += len(b)
		page = append(page, entry{obj: o, json: b, added: added, version: version})
		return true, nil
	}
	cur := q.from
	if cur.seq == 0 {
		added := a.Date.UTC().Truncate(time.Microsecond)
		if q.addedAfter.IsZero() || added.After(q.addedAfter) {
			shared := append(a.Shared(), cti.ExtensionDefinition())
			for i := cur.off; i < len(shared); i++ {
				if ok, err := add(shared[i], added, cursor{0, i}); err != nil || !ok {
					return page, cursor{0, i}, err == nil, err
				}
			}
		}
		cur = cursor{seq: 1}
	}
	for scanned := 0; scanned < maxScan; {
		recs, err := s.src.Records(ssaID, cur.seq-1, min(readChunk, maxScan-scanned), readChunkBytes)
		if err != nil {
			return nil, cur, false, err
		}
		if len(recs) == 0 {
			return page, cur, false, nil
		}
		for _, rec := range recs {
			scanned++
			if rec.Seq != cur.seq { // records before it were deleted
				cur = cursor{seq: rec.Seq}
			}
			added := rec.Received.UTC().Truncate(time.Microsecond)
			if rec.Withheld || (a.Retention > 0 && !now.Before(rec.Received.Add(a.Retention))) ||
				(!q.addedAfter.IsZero() && !added.After(q.addedAfter)) {
				cur = cursor{seq: rec.Seq + 1}
				continue
			}
			objs, err := a.STIX(rec.Record)
			if err != nil {
				s.unmappable(ssaID, rec.Seq, err)
				objs = nil
			}
			for i := cur.off; i < len(objs); i++ {
				if ok, err := add(objs[i], added, cursor{rec.Seq, i}); err != nil || !ok {
					return page, cursor{rec.Seq, i}, err == nil, err
				}
			}
			cur = cursor{seq: rec.Seq + 1}
		}
	}
	return page, cur, true, nil
}

// unmappable logs, once per SSA, that a record has no STIX mapping and is left out.
func (s *Server) unmappable(ssaID string, seq uint64, err error) {
	s.mu.Lock()
	first := !s.unmapped[ssaID]
	s.unmapped[ssaID] = true
	s.mu.Unlock()
	if first {
		s.log.Warn("TAXII: records left out of a collection: they have no STIX mapping (logged once per SSA)", "ssa", ssaID, "seq", seq, "err", err)
	}
}

// versionOf is an object's version (§3.4.3): modified, else created, else date_added.
func versionOf(o cti.Object, added time.Time) string {
	for _, k := range []string{"modified", "created"} {
		if v, ok := o[k].(string); ok && v != "" {
			return v
		}
	}
	return added.Format(stamp)
}

// reply writes a TAXII JSON body.
func (s *Server) reply(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		s.log.Error("TAXII reply not encoded", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"title":"Internal error","http_status":"500"}`)
	}
	w.Header().Set("Content-Type", MediaTAXII)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// fail writes a TAXII error message.
func (s *Server) fail(w http.ResponseWriter, status int, title, desc string) {
	s.reply(w, status, taxiiError{Title: title, Description: desc, HTTPStatus: strconv.Itoa(status)})
}
