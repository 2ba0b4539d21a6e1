package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The TAXII 2.1 client of TestTAXII, written from the OASIS TAXII 2.1 specification (§4.1
// discovery, §4.2 API root, §5.1 collections, §5.2 collection, §3.7 envelope, §3.6.1 error):
// its own types, with the specification's JSON field names.
type (
	taxiiDiscovery struct {
		Title    string   `json:"title"`
		Default  string   `json:"default"`
		APIRoots []string `json:"api_roots"`
	}
	taxiiAPIRoot struct {
		Title    string   `json:"title"`
		Versions []string `json:"versions"`
	}
	taxiiCollection struct {
		ID         string   `json:"id"`
		Title      string   `json:"title"`
		Alias      string   `json:"alias"`
		CanRead    bool     `json:"can_read"`
		CanWrite   bool     `json:"can_write"`
		MediaTypes []string `json:"media_types"`
	}
	taxiiCollections struct {
		Collections []taxiiCollection `json:"collections"`
	}
	taxiiEnvelope struct {
		More    bool              `json:"more"`
		Next    string            `json:"next"`
		Objects []json.RawMessage `json:"objects"`
	}
	taxiiErr struct {
		Title      string `json:"title"`
		HTTPStatus string `json:"http_status"`
	}
	stixObject struct {
		Type    string   `json:"type"`
		ID      string   `json:"id"`
		Marking []string `json:"object_marking_refs"`
	}
)

const taxiiMedia = "application/taxii+json;version=2.1"

// taxiiClient is a TAXII 2.1 consumer: it sends the TAXII Accept header and the user's
// credentials, and decodes a TAXII body or error message.
type taxiiClient struct {
	t          *testing.T
	http       *http.Client
	base       string
	user, pass string // basic; user "" with pass: bearer token pass
}

func (c *taxiiClient) get(path string, out any) (int, http.Header) {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(u, "https://") {
		u = c.base + path
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Accept", taxiiMedia)
	switch {
	case c.user != "":
		req.SetBasicAuth(c.user, c.pass)
	case c.pass != "":
		req.Header.Set("Authorization", "Bearer "+c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		c.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(strings.ReplaceAll(ct, " ", ""), "application/taxii+json") {
		c.t.Fatalf("GET %s: %d with Content-Type %q", u, resp.StatusCode, ct)
	}
	if resp.StatusCode != http.StatusOK {
		var e taxiiErr
		if err := json.Unmarshal(body, &e); err != nil || e.HTTPStatus != fmt.Sprint(resp.StatusCode) || e.Title == "" {
			c.t.Errorf("GET %s: %d without a TAXII error message: %s", u, resp.StatusCode, body)
		}
		return resp.StatusCode, resp.Header
	}
	if err := json.Unmarshal(body, out); err != nil {
		c.t.Fatalf("GET %s: %v: %.300s", u, err, body)
	}
	return resp.StatusCode, resp.Header
}

// TestTAXII: a MISP or OpenCTI pulling the requester's TAXII 2.1 server over TLS finds the
// collection of the SSA it is a reader of (TLP:AMBER, the meet of a GREEN request and an AMBER
// offer), pages through it with added_after and next and gets the objects of every record,
// marked TLP:AMBER; it is refused without credentials
// and for a collection it may not read, and never sees the collection of the TLP:RED SSA,
// though the configuration lists it as a reader.
func TestTAXII(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	shared, r := req.request(prov, requesterTemplate(t, "", "90d"), 20*time.Second)
	if r.code != 0 || shared.State != "approved" {
		t.Fatalf("request (GREEN asked, AMBER offered): want approved: %s", r)
	}
	redTemplate := requesterTemplate(t, "", "90d")
	text, err := os.ReadFile(redTemplate)
	if err != nil {
		t.Fatal(err)
	}
	text = []byte(strings.Replace(strings.Replace(string(text), "tlp: GREEN", "tlp: RED", 1), "redistribution: community", "redistribution: none", 1))
	if err := os.WriteFile(redTemplate, text, 0o600); err != nil {
		t.Fatal(err)
	}
	red, r := req.request(prov, redTemplate, 20*time.Second)
	if r.code != 0 || red.State != "approved" {
		t.Fatalf("request RED: want approved: %s", r)
	}
	prov.waitState(shared.SSAID, "approved", settle)
	prov.waitState(red.SSAID, "approved", settle)
	start := time.Now().UTC()
	const n = 30
	ing := prov.ingest(eveStream(sampleEVE(t), streamBase, 0, n, nil))
	queued := int(ing.Queued[shared.SSAID])
	if queued == 0 || ing.Queued[red.SSAID] == 0 {
		t.Fatalf("nothing queued for both SSAs: %+v", ing)
	}
	waitFor(t, 60*time.Second, func() (bool, string) {
		s, r := len(req.records(shared.SSAID)), len(req.records(red.SSAID))
		return s >= queued && r >= int(ing.Queued[red.SSAID]), fmt.Sprintf("records received: %d of %d shared, %d of %d RED", s, queued, r, ing.Queued[red.SSAID])
	})

	// The agreement is the stricter of the offer (AMBER) and the request (GREEN).
	if tlp := req.records(shared.SSAID)[0].TLP; tlp != "AMBER" {
		t.Fatalf("the shared SSA's TLP is %q, want AMBER", tlp)
	}
	if tlp := req.records(red.SSAID)[0].TLP; tlp != "RED" {
		t.Fatalf("the RED SSA's TLP is %q", tlp)
	}

	// The TAXII section, with a certificate made here, and the agent restarted with it.
	pool := writeTestCert(t, req.home)
	for name, secret := range map[string]string{"analyst.pw": "analyst-secret", "partner.token": "partner-token"} {
		if err := os.WriteFile(filepath.Join(req.home, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	withYAML(fmt.Sprintf(`taxii:
  listen: %s
  tls-cert: taxii.crt
  tls-key: taxii.key
  users:
    analyst: {password-file: analyst.pw}
    partner: {token-file: partner.token}
  collections:
    - {ssa: %s, title: IDS alerts, readers: [analyst]}
    - {ssa: %s, readers: [analyst, partner]}`, addr, shared.SSAID, red.SSAID))(t, req)
	req.stop()
	req.start()

	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	base := "https://" + addr
	analyst := &taxiiClient{t: t, http: hc, base: base, user: "analyst", pass: "analyst-secret"}
	var disc taxiiDiscovery
	var root *url.URL
	waitFor(t, 30*time.Second, func() (bool, string) {
		resp, err := hc.Get(base + "/taxii2/")
		if err != nil {
			return false, fmt.Sprintf("TAXII server not up: %v", err)
		}
		resp.Body.Close()
		return true, ""
	})

	// Refused without credentials, or with wrong ones.
	for _, c := range []*taxiiClient{{t: t, http: hc, base: base}, {t: t, http: hc, base: base, user: "analyst", pass: "guess"}, {t: t, http: hc, base: base, pass: "guess"}} {
		if code, h := c.get("/taxii2/", &disc); code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
			t.Errorf("discovery as %q: %d, want 401 with WWW-Authenticate", c.user, code)
		}
	}

	// Discovery → API root → collections.
	if code, _ := analyst.get("/taxii2/", &disc); code != http.StatusOK || len(disc.APIRoots) == 0 {
		t.Fatalf("discovery: %d %+v", code, disc)
	}
	root, err = url.Parse(base + "/taxii2/")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := url.Parse(disc.APIRoots[0]) // a URL, absolute or relative to discovery (§4.1)
	if err != nil {
		t.Fatal(err)
	}
	rootURL := root.ResolveReference(ref).String()
	var ar taxiiAPIRoot
	if code, _ := analyst.get(rootURL, &ar); code != http.StatusOK || !slices.Contains(ar.Versions, taxiiMedia) {
		t.Fatalf("API root %s: %d %+v", rootURL, code, ar)
	}
	var cols taxiiCollections
	analyst.get(rootURL+"collections/", &cols)
	if len(cols.Collections) != 1 || cols.Collections[0].Alias != shared.SSAID || !cols.Collections[0].CanRead {
		t.Fatalf("analyst's collections: %+v, want only the shared SSA's", cols.Collections)
	}
	col := cols.Collections[0]
	for _, c := range cols.Collections {
		if strings.Contains(c.ID+c.Alias+c.Title, red.SSAID) {
			t.Errorf("the TLP:RED SSA's collection is listed: %+v", c)
		}
	}
	var one taxiiCollection
	for _, id := range []string{red.SSAID, "00000000-0000-5000-8000-000000000000"} {
		if code, _ := analyst.get(rootURL+"collections/"+id+"/", &one); code != http.StatusNotFound {
			t.Errorf("collection %s: %d, want 404", id, code)
		}
	}
	if code, _ := analyst.get(rootURL+"collections/"+red.SSAID+"/objects/", &taxiiEnvelope{}); code != http.StatusNotFound {
		t.Errorf("objects of the RED SSA: %d, want 404", code)
	}

	// The partner may not read the shared collection, and sees no RED one either.
	partner := &taxiiClient{t: t, http: hc, base: base, pass: "partner-token"}
	// TAXII 2.1 §5.2 allows 404 for a collection the client may not access: a non-reader gets
	// the answer of a collection that does not exist, and so cannot probe which exist.
	if code, _ := partner.get(rootURL+"collections/"+col.ID+"/objects/", &taxiiEnvelope{}); code != http.StatusNotFound {
		t.Errorf("partner reading the shared collection: %d, want 404", code)
	}
	var pcols taxiiCollections
	if code, _ := partner.get(rootURL+"collections/", &pcols); code != http.StatusOK || len(pcols.Collections) != 0 {
		t.Errorf("partner's collections: %d %+v, want none", code, pcols.Collections)
	}

	// Page through the collection with added_after and next.
	q := url.Values{"added_after": {start.Add(-time.Second).Format(time.RFC3339Nano)}, "limit": {"7"}}
	next := rootURL + "collections/" + col.ID + "/objects/?" + q.Encode()
	observed, pages, seen := 0, 0, map[string]bool{}
	amberMarking := "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"
	for ; pages < 1000; pages++ {
		var env taxiiEnvelope
		code, h := analyst.get(next, &env)
		if code != http.StatusOK || len(env.Objects) > 7 {
			t.Fatalf("page %d: %d, %d objects", pages, code, len(env.Objects))
		}
		if len(env.Objects) > 0 && (h.Get("X-TAXII-Date-Added-First") == "" || h.Get("X-TAXII-Date-Added-Last") == "") {
			t.Errorf("page %d without X-TAXII-Date-Added-First/Last", pages)
		}
		for _, raw := range env.Objects {
			var o stixObject
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatal(err)
			}
			if o.Type == "observed-data" {
				observed++
				if seen[o.ID] {
					t.Errorf("%s twice", o.ID)
				}
				seen[o.ID] = true
				if len(o.Marking) != 1 || o.Marking[0] != amberMarking {
					t.Errorf("%s marked %v, want TLP:AMBER", o.ID, o.Marking)
				}
			}
			if strings.Contains(string(raw), "e828b379-4e03-4974-9ac4-e53a884c97c1") || strings.Contains(string(raw), red.SSAID) {
				t.Errorf("TLP:RED or the RED SSA in the shared collection: %.200s", raw)
			}
		}
		if !env.More {
			break
		}
		if env.Next == "" {
			t.Fatalf("page %d: more without next", pages)
		}
		q.Set("next", env.Next)
		next = rootURL + "collections/" + col.ID + "/objects/?" + q.Encode()
	}
	if observed != queued || pages < 2 {
		t.Errorf("paged %d observed-data in %d pages, want one per record (%d) in several", observed, pages+1, queued)
	}
	// added_after past every record: nothing more.
	var env taxiiEnvelope
	q = url.Values{"added_after": {time.Now().UTC().Add(time.Second).Format(time.RFC3339Nano)}}
	if code, _ := analyst.get(rootURL+"collections/"+col.ID+"/objects/?"+q.Encode(), &env); code != http.StatusOK || len(env.Objects) != 0 || env.More {
		t.Errorf("added_after now: %d, %d objects, more %v", code, len(env.Objects), env.More)
	}
	// match[type] selects by STIX type.
	env = taxiiEnvelope{}
	analyst.get(rootURL+"collections/"+col.ID+"/objects/?match[type]=observed-data&limit=1000", &env)
	if len(env.Objects) != queued {
		t.Errorf("match[type]=observed-data: %d objects, want %d", len(env.Objects), queued)
	}
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 to dir/taxii.crt and its key
// to dir/taxii.key, and returns a pool that trusts it.
func writeTestCert(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ssanet TAXII test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "taxii.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "taxii.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
