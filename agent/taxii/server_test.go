package taxii

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/protocol"
)

// fakeSource holds SSAs and their inboxes in memory.
type fakeSource struct {
	mu   sync.Mutex
	ssas map[string]*cti.Agreement
	recs map[string][]Record
}

func (f *fakeSource) Agreement(id string) (*cti.Agreement, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.ssas[id]
	return a, ok
}

func (f *fakeSource) Records(id string, after uint64, max, _ int) ([]Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Record
	for _, r := range f.recs[id] {
		if r.Seq > after && len(out) < max {
			out = append(out, r)
		}
	}
	return out, nil
}

// add appends n EVE records received at at to the SSA's inbox.
func (f *fakeSource) add(t *testing.T, id string, n int, at time.Time) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "policy", "testdata", "eve", "test-eve-small.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		seq := uint64(len(f.recs[id]) + 1)
		f.recs[id] = append(f.recs[id], Record{Record: cti.Record{Seq: seq, Received: at, Format: protocol.FormatEVE, Data: lines[int(seq)%len(lines)]}})
	}
}

func agreementOf(t *testing.T, id, tlp, redistribution string, retention time.Duration) *cti.Agreement {
	t.Helper()
	s := &protocol.SSA{ID: id, Version: 1, Policy: &protocol.Policy{Handling: &protocol.Handling{TLP: tlp,
		Retention: protocol.Duration(retention / time.Second), Redistribution: redistribution}}}
	s.Participants.Provider = protocol.Participant{Affiliation: "Example CERT"}
	s.Information = []protocol.Information{{Name: "eve", Type: protocol.TypeAttackDetectionLog, Format: protocol.FormatEVE}}
	p, err := policy.Compile(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cti.NewAgreement(s, p)
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// testServer serves: ssa-green (GREEN, community; readers alice, bob), ssa-amber (AMBER;
// reader alice, carol), ssa-red (RED; reader alice), ssa-short (GREEN, 1h retention; alice),
// ssa-red-any (RED with redistribution any; alice).
// alice (password) and bob (token) are of the organisation, carol of the community.
func testServer(t *testing.T, now *time.Time) (*Server, *fakeSource) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, secret string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	cfg := Config{Listen: "127.0.0.1:0", TLSCert: "c.pem", TLSKey: "k.pem", MaxPage: 50,
		Users: map[string]User{
			"alice": {PasswordFile: write("alice", "alice-secret")},
			"bob":   {TokenFile: write("bob", "bob-token")},
			"carol": {PasswordFile: write("carol", "carol-secret"), Audience: "community"},
		},
		Collections: []Collection{
			{SSA: "ssa-green", Readers: []string{"alice", "bob", "carol"}},
			{SSA: "ssa-amber", Readers: []string{"alice", "carol"}},
			{SSA: "ssa-red", Readers: []string{"alice"}},
			{SSA: "ssa-short", Readers: []string{"alice"}},
			{SSA: "ssa-red-any", Readers: []string{"alice"}},
		}}
	src := &fakeSource{ssas: map[string]*cti.Agreement{
		"ssa-green": agreementOf(t, "ssa-green", protocol.TLPGreen, "community", 0),
		"ssa-amber": agreementOf(t, "ssa-amber", protocol.TLPAmber, "", 0),
		"ssa-red":   agreementOf(t, "ssa-red", protocol.TLPRed, "", 0),
		"ssa-short": agreementOf(t, "ssa-short", protocol.TLPGreen, "", time.Hour),
	}, recs: map[string][]Record{}}
	// An agreement whose redistribution would reach anyone, with TLP:RED all the same: RED
	// alone keeps the collection closed.
	redAny := *src.ssas["ssa-red"]
	redAny.SSA, redAny.Redistribution = "ssa-red-any", "any"
	src.ssas["ssa-red-any"] = &redAny
	for id := range src.ssas {
		src.add(t, id, 5, t0)
	}
	s, err := New(cfg, dir, src, slog.New(slog.DiscardHandler), func() time.Time { return *now })
	if err != nil {
		t.Fatal(err)
	}
	return s, src
}

// get requests path as user ("" none; "bob" with his token) and returns status and body.
func get(t *testing.T, s *Server, user, path string, hdr ...string) (int, map[string]any, http.Header) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("Accept", MediaTAXII)
	switch user {
	case "":
	case "bob":
		r.Header.Set("Authorization", "Bearer bob-token")
	default:
		r.SetBasicAuth(user, user+"-secret")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	var body map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("%s: body is no JSON object: %v: %s", path, err, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != MediaTAXII {
		t.Errorf("%s: Content-Type %q, want %q", path, ct, MediaTAXII)
	}
	if w.Code >= 400 && (body["title"] == nil || body["http_status"] != fmt.Sprint(w.Code)) {
		t.Errorf("%s: %d without a TAXII error body: %s", path, w.Code, w.Body)
	}
	return w.Code, body, w.Header()
}

func objectsPath(ssa, q string) string {
	return APIRootPath + "collections/" + CollectionID(ssa) + "/objects/?" + q
}

func TestAuthentication(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"none", "", http.StatusUnauthorized},
		{"basic", "Basic " + b64("alice:alice-secret"), http.StatusOK},
		{"basic wrong password", "Basic " + b64("alice:alice-secreT"), http.StatusUnauthorized},
		{"basic unknown user", "Basic " + b64("mallory:alice-secret"), http.StatusUnauthorized},
		{"basic for a token-only user", "Basic " + b64("bob:bob-token"), http.StatusUnauthorized},
		{"bearer", "Bearer bob-token", http.StatusOK},
		{"bearer wrong", "Bearer bob-tokeN", http.StatusUnauthorized},
		{"bearer a password", "Bearer alice-secret", http.StatusUnauthorized},
		{"bearer empty", "Bearer ", http.StatusUnauthorized},
		{"other scheme", "Digest x", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{DiscoveryPath, APIRootPath, APIRootPath + "collections/", objectsPath("ssa-green", "")} {
				code, _, h := get(t, s, "", path, "Authorization", tc.auth)
				if code != tc.want {
					t.Errorf("%s: %d, want %d", path, code, tc.want)
				}
				if code == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without WWW-Authenticate", path)
				}
			}
		})
	}
}

func b64(s string) string {
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth(s[:bytes.IndexByte([]byte(s), ':')], s[bytes.IndexByte([]byte(s), ':')+1:])
	return r.Header.Get("Authorization")[len("Basic "):]
}

func TestDiscovery(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	code, body, _ := get(t, s, "alice", DiscoveryPath)
	roots, _ := body["api_roots"].([]any)
	if code != http.StatusOK || len(roots) != 1 || roots[0] != "https://example.com"+APIRootPath || body["default"] != roots[0] {
		t.Errorf("discovery: %d %v", code, body)
	}
	code, body, _ = get(t, s, "alice", APIRootPath)
	if vs, _ := body["versions"].([]any); code != http.StatusOK || len(vs) != 1 || vs[0] != MediaTAXII {
		t.Errorf("API root: %d %v", code, body)
	}
	for _, path := range []string{"/", "/taxii2", "/other/", APIRootPath + "status/x/", APIRootPath + "collections/ssa-green/objects/x/y/"} {
		if code, _, _ := get(t, s, "alice", path); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
}

func TestMediaTypes(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	for _, tc := range []struct {
		accept string
		want   int
	}{
		{MediaTAXII, http.StatusOK},
		{"application/taxii+json; version=2.1", http.StatusOK},
		{"application/taxii+json", http.StatusOK},
		{"*/*", http.StatusOK},
		{"text/html, application/*;q=0.5", http.StatusOK},
		{"application/taxii+json;version=2.0", http.StatusNotAcceptable},
		{"application/json", http.StatusNotAcceptable},
		{"application/taxii+json;version=2.1;q=0", http.StatusNotAcceptable},
		{MediaSTIX, http.StatusNotAcceptable},
	} {
		if code, _, _ := get(t, s, "alice", objectsPath("ssa-green", ""), "Accept", tc.accept); code != tc.want {
			t.Errorf("Accept %q: %d, want %d", tc.accept, code, tc.want)
		}
	}
	for _, tc := range []struct {
		method, ctype string
		want          int
	}{
		{http.MethodPost, "application/json", http.StatusUnsupportedMediaType},
		{http.MethodPost, MediaSTIX, http.StatusUnsupportedMediaType},
		{http.MethodPost, MediaTAXII, http.StatusForbidden}, // read-only
		{http.MethodPut, MediaTAXII, http.StatusMethodNotAllowed},
		{http.MethodDelete, "", http.StatusMethodNotAllowed},
	} {
		r := httptest.NewRequest(tc.method, objectsPath("ssa-green", ""), bytes.NewReader([]byte(`{"objects":[]}`)))
		r.SetBasicAuth("alice", "alice-secret")
		r.Header.Set("Content-Type", tc.ctype)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != tc.want || w.Header().Get("Content-Type") != MediaTAXII {
			t.Errorf("%s with %q: %d %q, want %d", tc.method, tc.ctype, w.Code, w.Header().Get("Content-Type"), tc.want)
		}
	}
}

// TestOffered: the agreement decides who sees a collection: RED never, redistribution must
// reach the user's audience, and the user must be a reader.
func TestOffered(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	for _, tc := range []struct {
		user, ssa string
		want      int
	}{
		{"alice", "ssa-green", http.StatusOK},
		{"bob", "ssa-green", http.StatusOK},
		{"carol", "ssa-green", http.StatusOK},       // GREEN/community reaches the community
		{"alice", "ssa-amber", http.StatusOK},       // AMBER: the organisation
		{"carol", "ssa-amber", http.StatusNotFound}, // AMBER does not reach the community
		{"bob", "ssa-amber", http.StatusNotFound},   // not a reader: as if it did not exist
		{"alice", "ssa-red", http.StatusNotFound},   // RED never, even for a reader
		{"alice", "ssa-red-any", http.StatusNotFound},
		{"alice", "ssa-unknown", http.StatusNotFound},
	} {
		for _, path := range []string{
			APIRootPath + "collections/" + CollectionID(tc.ssa) + "/",
			APIRootPath + "collections/" + tc.ssa + "/", // the alias
			objectsPath(tc.ssa, ""),
			APIRootPath + "collections/" + CollectionID(tc.ssa) + "/manifest/",
		} {
			if code, _, _ := get(t, s, tc.user, path); code != tc.want {
				t.Errorf("%s %s: %d, want %d", tc.user, path, code, tc.want)
			}
		}
	}
	for user, want := range map[string][]string{"alice": {"ssa-green", "ssa-amber", "ssa-short"}, "bob": {"ssa-green"}, "carol": {"ssa-green"}} {
		_, body, _ := get(t, s, user, APIRootPath+"collections/")
		var got []string
		cols, _ := body["collections"].([]any)
		for _, c := range cols {
			m := c.(map[string]any)
			got = append(got, m["alias"].(string))
			if m["id"] != CollectionID(m["alias"].(string)) || m["can_read"] != true || m["can_write"] != false {
				t.Errorf("%s: collection %v", user, m)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s sees collections %v, want %v", user, got, want)
		}
	}
}

// page is one objects response.
type page struct {
	ids  []string
	more bool
	next string
}

func fetch(t *testing.T, s *Server, user, ssa, q string) page {
	t.Helper()
	code, body, _ := get(t, s, user, objectsPath(ssa, q))
	if code != http.StatusOK {
		t.Fatalf("%s: %d %v", q, code, body)
	}
	var p page
	objs, _ := body["objects"].([]any)
	for _, o := range objs {
		p.ids = append(p.ids, o.(map[string]any)["id"].(string))
	}
	p.more, _ = body["more"].(bool)
	p.next, _ = body["next"].(string)
	return p
}

// all pages through with limit, from q; it fails after 1000 pages.
func all(t *testing.T, s *Server, ssa, q string, limit int, between func()) []string {
	t.Helper()
	var ids []string
	next := ""
	for range 1000 {
		v, _ := url.ParseQuery(q)
		v.Set("limit", fmt.Sprint(limit))
		if next != "" {
			v.Set("next", next)
		}
		p := fetch(t, s, "alice", ssa, v.Encode())
		if len(p.ids) > limit {
			t.Fatalf("page of %d objects over limit %d", len(p.ids), limit)
		}
		ids = append(ids, p.ids...)
		if !p.more {
			return ids
		}
		if p.next == "" {
			t.Fatal("more without next")
		}
		next = p.next
		if between != nil {
			between()
		}
	}
	t.Fatal("no end after 1000 pages")
	return nil
}

func TestPagination(t *testing.T) {
	now := t0.Add(time.Minute)
	s, src := testServer(t, &now)
	whole := fetch(t, s, "alice", "ssa-green", "")
	if whole.more || len(whole.ids) < 10 {
		t.Fatalf("whole collection: %d objects, more %v", len(whole.ids), whole.more)
	}
	for _, limit := range []int{1, 2, 3, 7, 50} {
		if got := all(t, s, "ssa-green", "", limit, nil); !slices.Equal(got, whole.ids) {
			t.Errorf("limit %d: %d objects, want the %d of one page in order", limit, len(got), len(whole.ids))
		}
	}
	// limit over max-page is capped, and says so with more.
	src.add(t, "ssa-green", 40, t0.Add(time.Second))
	p := fetch(t, s, "alice", "ssa-green", "limit=100000")
	if len(p.ids) != 50 || !p.more {
		t.Errorf("limit over max-page: %d objects, more %v; want 50 and more", len(p.ids), p.more)
	}
	// Records that arrive while a client pages come after what it saw, never in between.
	before := all(t, s, "ssa-green", "", 1000, nil)
	added := false
	got := all(t, s, "ssa-green", "", 4, func() {
		if !added {
			src.add(t, "ssa-green", 3, t0.Add(2*time.Second))
			added = true
		}
	})
	if !slices.Equal(got[:len(before)], before) || len(got) <= len(before) {
		t.Errorf("paging while records arrive: %d objects, want the %d before first and more after", len(got), len(before))
	}
	// added_after: only what was received after it; the shared objects are dated at the SSA.
	after := all(t, s, "ssa-green", "added_after="+t0.Add(time.Second).Format(time.RFC3339Nano), 5, nil)
	if len(after) == 0 || len(after) >= len(got)-len(before)+10 {
		t.Errorf("added_after: %d objects", len(after))
	}
	for _, id := range after {
		if !slices.Contains(got[len(before):], id) && !slices.Contains(before, id) {
			t.Errorf("added_after: unknown object %s", id)
		}
	}
	code, body, _ := get(t, s, "alice", objectsPath("ssa-green", "added_after="+t0.Add(time.Hour).Format(time.RFC3339)))
	if code != http.StatusOK || body["objects"] != nil || body["more"] != false {
		t.Errorf("added_after the last record: %d %v", code, body)
	}
	for _, q := range []string{"next=bogus", "next=" + cursor{1, 0}.String() + "x", "limit=0", "limit=-1", "limit=x", "added_after=yesterday"} {
		if code, _, _ := get(t, s, "alice", objectsPath("ssa-green", q)); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
}

func TestMatch(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	whole := fetch(t, s, "alice", "ssa-green", "")
	code, body, _ := get(t, s, "alice", objectsPath("ssa-green", "match[type]=observed-data,identity"))
	objs, _ := body["objects"].([]any)
	if code != http.StatusOK || len(objs) != 5+2 {
		t.Fatalf("match[type]=observed-data,identity: %d, %d objects; want the 5 records' and 2 identities", code, len(objs))
	}
	for _, o := range objs {
		if typ := o.(map[string]any)["type"]; typ != "observed-data" && typ != "identity" {
			t.Errorf("match[type]: got a %v", typ)
		}
	}
	shared := fetch(t, s, "alice", "ssa-green", "match[type]=identity,marking-definition,extension-definition")
	if len(shared.ids) != 4 || !slices.Contains(shared.ids, "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb") {
		t.Errorf("shared objects: %v, want the TLP:GREEN marking, two identities and the extension-definition", shared.ids)
	}
	id := whole.ids[len(whole.ids)-1]
	p := fetch(t, s, "alice", "ssa-green", "match[id]="+id)
	if len(p.ids) == 0 || p.ids[0] != id {
		t.Errorf("match[id]=%s: %v", id, p.ids)
	}
	code, body, _ = get(t, s, "alice", APIRootPath+"collections/ssa-green/objects/"+id+"/")
	objs, _ = body["objects"].([]any)
	if code != http.StatusOK || len(objs) == 0 || objs[0].(map[string]any)["id"] != id {
		t.Errorf("object %s: %d %v", id, code, body)
	}
	code, body, _ = get(t, s, "alice", APIRootPath+"collections/ssa-green/objects/"+id+"/versions/")
	if vs, _ := body["versions"].([]any); code != http.StatusOK || len(vs) != 1 || vs[0] == "" {
		t.Errorf("versions of %s: %d %v", id, code, body)
	}
	if code, _, _ = get(t, s, "alice", APIRootPath+"collections/ssa-green/objects/indicator--00000000-0000-4000-8000-000000000000/versions/"); code != http.StatusNotFound {
		t.Errorf("versions of an unknown object: %d, want 404", code)
	}
	if code, _, _ = get(t, s, "alice", APIRootPath+"collections/ssa-green/objects/indicator--00000000-0000-4000-8000-000000000000/"); code != http.StatusNotFound {
		t.Errorf("unknown object: %d, want 404", code)
	}
	if p := fetch(t, s, "alice", "ssa-green", "match[spec_version]=2.0"); len(p.ids) != 0 {
		t.Errorf("match[spec_version]=2.0: %d objects", len(p.ids))
	}
	code, body, h := get(t, s, "alice", APIRootPath+"collections/ssa-green/manifest/?limit=3")
	objs, _ = body["objects"].([]any)
	if code != http.StatusOK || len(objs) != 3 || body["more"] != true || h.Get("X-TAXII-Date-Added-First") == "" {
		t.Fatalf("manifest: %d %v", code, body)
	}
	for i, o := range objs {
		m := o.(map[string]any)
		if m["id"] != whole.ids[i] || m["media_type"] != MediaSTIX || m["version"] == "" || m["date_added"] == "" {
			t.Errorf("manifest entry %d: %v", i, m)
		}
	}
}

// TestRetention: the objects of records past the SSA's retention leave the collection.
func TestRetention(t *testing.T) {
	now := t0.Add(30 * time.Minute)
	s, src := testServer(t, &now)
	src.add(t, "ssa-short", 2, t0.Add(45*time.Minute))
	count := func() int {
		return len(fetch(t, s, "alice", "ssa-short", "match[type]=observed-data").ids)
	}
	if n := count(); n != 7 {
		t.Fatalf("within retention: %d records' objects, want 7", n)
	}
	now = t0.Add(time.Hour)
	if n := count(); n != 2 {
		t.Errorf("an hour after the first 5 arrived: %d, want the 2 later ones", n)
	}
	now = t0.Add(2 * time.Hour)
	if n := count(); n != 0 {
		t.Errorf("past retention of all: %d, want 0", n)
	}
	// The records of an SSA without retention stay.
	if n := len(fetch(t, s, "alice", "ssa-green", "match[type]=observed-data").ids); n != 5 {
		t.Errorf("no retention: %d, want 5", n)
	}
}

// TestWithheld: a quarantined record is never offered.
func TestWithheld(t *testing.T) {
	now := t0
	s, src := testServer(t, &now)
	src.mu.Lock()
	src.recs["ssa-green"][1].Withheld = true
	src.mu.Unlock()
	if n := len(fetch(t, s, "alice", "ssa-green", "match[type]=observed-data").ids); n != 4 {
		t.Errorf("one record withheld: %d observed-data, want 4", n)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func() Config {
		return Config{Listen: "127.0.0.1:9443", TLSCert: "c", TLSKey: "k", Users: map[string]User{"a": {TokenFile: "t"}},
			Collections: []Collection{{SSA: "ssa-1", Readers: []string{"a"}}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"ok", func(*Config) {}, true},
		{"off", func(c *Config) { *c = Config{} }, true},
		{"collections without listen", func(c *Config) { c.Listen = "" }, false},
		{"no TLS", func(c *Config) { c.TLSKey = "" }, false},
		{"no users", func(c *Config) { c.Users = nil }, false},
		{"user without secret", func(c *Config) { c.Users["a"] = User{} }, false},
		{"bad audience", func(c *Config) { c.Users["a"] = User{TokenFile: "t", Audience: "none"} }, false},
		{"colon in a name", func(c *Config) { c.Users["a:b"] = User{TokenFile: "t"} }, false},
		{"unknown reader", func(c *Config) { c.Collections[0].Readers = []string{"b"} }, false},
		{"no readers", func(c *Config) { c.Collections[0].Readers = nil }, false},
		{"bad SSA", func(c *Config) { c.Collections[0].SSA = "SSA/1" }, false},
		{"twice", func(c *Config) { c.Collections = append(c.Collections, c.Collections[0]) }, false},
		{"max-page", func(c *Config) { c.MaxPage = maxMaxPage + 1 }, false},
	} {
		c := ok()
		tc.change(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	var nilCfg *Config
	if err := nilCfg.Validate(); err != nil {
		t.Errorf("no section: %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "\n", "big": string(make([]byte, maxSecret+1))} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Listen: "x:1", TLSCert: "c", TLSKey: "k", Users: map[string]User{"a": {TokenFile: name}}}
		if _, err := New(cfg, dir, &fakeSource{}, slog.New(slog.DiscardHandler), time.Now); err == nil {
			t.Errorf("%s secret file: no error", name)
		}
	}
	cfg := Config{Listen: "x:1", TLSCert: "c", TLSKey: "k", Users: map[string]User{"a": {TokenFile: "missing"}}}
	if _, err := New(cfg, dir, &fakeSource{}, slog.New(slog.DiscardHandler), time.Now); err == nil {
		t.Error("missing secret file: no error")
	}
}

// TestBusy: a request beyond maxPaging reading records at once gets 429 with Retry-After.
func TestBusy(t *testing.T) {
	now := t0
	s, _ := testServer(t, &now)
	for range maxPaging {
		s.paging <- struct{}{}
	}
	for _, path := range []string{objectsPath("ssa-green", ""), APIRootPath + "collections/ssa-green/manifest/"} {
		if code, _, h := get(t, s, "alice", path); code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
			t.Errorf("%s with %d requests paging: %d, want 429 with Retry-After", path, maxPaging, code)
		}
	}
	if code, _, _ := get(t, s, "alice", APIRootPath+"collections/"); code != http.StatusOK {
		t.Errorf("collections while paging is full: %d, want 200", code)
	}
	<-s.paging
	if code, _, _ := get(t, s, "alice", objectsPath("ssa-green", "")); code != http.StatusOK {
		t.Errorf("with a token free: %d, want 200", code)
	}
	if len(s.paging) != maxPaging-1 {
		t.Errorf("%d tokens held after the request, want %d: a request kept its token", len(s.paging), maxPaging-1)
	}
}

// BenchmarkPage pages through a collection of 10,000 EVE records, 1000 objects a page.
func BenchmarkPage(b *testing.B) {
	t := &testing.T{}
	now := t0
	s, src := testServer(t, &now)
	src.add(t, "ssa-green", 10000-5, t0)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	objects := 0
	for range b.N {
		objects = 0
		next := ""
		for {
			r := httptest.NewRequest(http.MethodGet, objectsPath("ssa-green", "limit=1000&next="+next), nil)
			r.SetBasicAuth("alice", "alice-secret")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			var env struct {
				More    bool              `json:"more"`
				Next    string            `json:"next"`
				Objects []json.RawMessage `json:"objects"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || w.Code != http.StatusOK {
				b.Fatalf("%d %v", w.Code, err)
			}
			objects += len(env.Objects)
			if !env.More {
				break
			}
			next = env.Next
		}
	}
	b.ReportMetric(float64(objects), "objects/op")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/10000, "µs/record")
	// CPU time says more than wall time on a shared machine.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N)/10000, "cpu-µs/record")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSameToken: two users with one bearer token are refused at start, since a request with it
// would be either user by the map's order.
func TestSameToken(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("one-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Listen: "127.0.0.1:0", TLSCert: "c.pem", TLSKey: "k.pem",
		Users:       map[string]User{"a": {TokenFile: "a"}, "b": {TokenFile: "b", Audience: "any"}},
		Collections: []Collection{{SSA: "ssa-green", Readers: []string{"a"}}}}
	if _, err := New(cfg, dir, &fakeSource{}, slog.New(slog.DiscardHandler), time.Now); !errors.Is(err, ErrConfig) {
		t.Fatalf("New with one token for two users: %v, want ErrConfig", err)
	}
	cfg.Users["b"] = User{TokenFile: "a-other"}
	if err := os.WriteFile(filepath.Join(dir, "a-other"), []byte("other-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, dir, &fakeSource{}, slog.New(slog.DiscardHandler), time.Now); err != nil {
		t.Fatalf("New with two tokens: %v", err)
	}
}

// TestCollectionHidden: a user who is not a reader of a collection gets, on every endpoint of
// the collection and for every method, the very answer it gets for a collection that does not
// exist (TAXII 2.1 §5.2 allows 404 for "no access"), so it cannot probe which exist; the
// collections list shows each user only the collections it may read.
func TestCollectionHidden(t *testing.T) {
	now := t0
	s, src := testServer(t, &now)
	src.add(t, "ssa-amber", 3, t0)
	type answer struct {
		code  int
		ctype string
		body  string
	}
	do := func(method, user, path string) answer {
		r := httptest.NewRequest(method, path, nil)
		r.Header.Set("Accept", MediaTAXII)
		if method == http.MethodPost {
			r.Header.Set("Content-Type", MediaTAXII)
		}
		if user == "bob" {
			r.Header.Set("Authorization", "Bearer bob-token")
		} else {
			r.SetBasicAuth(user, user+"-secret")
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return answer{w.Code, w.Header().Get("Content-Type"), w.Body.String()}
	}
	obj := "observed-data--" + "00000000-0000-5000-8000-000000000000"
	for _, rest := range []string{"", "objects/", "manifest/", "objects/" + obj + "/", "objects/" + obj + "/versions/"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if method == http.MethodPost && rest != "objects/" {
				continue
			}
			var answers []answer
			for _, col := range []string{CollectionID("ssa-amber"), "ssa-amber", CollectionID("ssa-none"), "ssa-none",
				"00000000-0000-5000-8000-000000000000"} {
				answers = append(answers, do(method, "bob", APIRootPath+"collections/"+col+"/"+rest))
			}
			for i, a := range answers {
				if a != answers[len(answers)-1] || a.code != http.StatusNotFound || a.ctype != MediaTAXII {
					t.Errorf("%s %s, collection %d: %+v; want the answer to an unknown collection, 404: %+v", method, rest, i, a, answers[len(answers)-1])
				}
			}
			// A reader gets the collection.
			if a := do(method, "alice", APIRootPath+"collections/ssa-amber/"+rest); a.code == http.StatusNotFound && rest != "objects/"+obj+"/" && rest != "objects/"+obj+"/versions/" {
				t.Errorf("alice %s %s: %+v", method, rest, a)
			}
		}
	}
	for user, want := range map[string][]string{"alice": {"ssa-green", "ssa-amber", "ssa-short"}, "bob": {"ssa-green"}} {
		_, body, _ := get(t, s, user, APIRootPath+"collections/")
		var got []string
		cols, _ := body["collections"].([]any)
		for _, c := range cols {
			got = append(got, c.(map[string]any)["alias"].(string))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v, want %v", user, got, want)
		}
	}
}
