package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// maskKeyHex is the provider's CryptoPAn key in this test: it must never leave the provider.
const maskKeyHex = "674ec50ba024c4c665764610af83503939b80c084051b400a21c68675b8428ab"

// keyedOffer is an offer of EVE records whose public addresses are masked with CryptoPAn
// under a key given by keyLine (key-id: NAME, or the retired key: HEX).
func keyedOffer(t *testing.T, keyLine string) string {
	t.Helper()
	text := fmt.Sprintf(`id: keyed-alerts
approval: auto
terms:
  information:
    - type: attack-detection-log
      format: eve
  policy:
    masking:
      - scope: public-ip
        method: cryptopan
        %s
  method:
    protocols: [/ssanet/exchange/1.0.0]
    security: [noise, tls]
`, keyLine)
	path := filepath.Join(t.TempDir(), "offer.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMaskingKeyStaysHome (issue 11 item 2): a provider's masking key is not written in its
// offer but in its home, and the SSA names it by key ID only. After an agreement and a
// delivery masked with it, the key (hex in either case, raw, base64) is in none of: the SSA
// as exported by either side, `discover --peer`, `ssa show` and `ssa transcript` (text and
// JSON) on either side, `offer list`, the records the requester holds and forwards, and the
// debug logs of both daemons. The records are masked with exactly that key: `policy apply`
// with the provider's key file reproduces what the requester received.
func TestMaskingKeyStaysHome(t *testing.T) {
	debug := withRunArgs("--log-level", "debug")
	prov := newAgent(t, "provider", "", debug)
	sink := filepath.Join(t.TempDir(), "sink.jsonl")
	req := newAgent(t, "requester", "", debug, withJSONLSink(sink))

	// The key in the clear is refused, with where it goes instead.
	if r := prov.cli("offer", "add", keyedOffer(t, "key: "+maskKeyHex)); r.code == 0 {
		t.Fatalf("the provider accepted an offer carrying its masking key in the clear (it would travel in every SSA): %s", r)
	} else if !strings.Contains(r.stderr, "key-id: NAME") || !strings.Contains(r.stderr, "keys/NAME") {
		t.Errorf("the refusal of a key in the clear does not say where the key goes: %s", r)
	}
	// An offer naming a key the provider does not have, or has in a file others can read,
	// is refused: its SSAs could not be implemented.
	offer := keyedOffer(t, "key-id: site-a")
	keyFile := filepath.Join(prov.home, "keys", "site-a")
	if r := prov.cli("offer", "add", offer); r.code == 0 || !strings.Contains(r.stderr, keyFile) {
		t.Fatalf("an offer naming a key the provider lacks: want refused, naming %s: %s", keyFile, r)
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(maskKeyHex+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if r := prov.cli("offer", "add", offer); r.code == 0 || !strings.Contains(r.stderr, "chmod 600 "+keyFile) {
		t.Fatalf("an offer naming a key file of mode 0644: want refused with the chmod to run: %s", r)
	}
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	prov.must("offer", "add", offer)

	tmpl := filepath.Join(t.TempDir(), "request.yaml")
	if err := os.WriteFile(tmpl, []byte(`participants:
  requester:
    name: SOC duty desk
information:
  - type: attack-detection-log
    format: eve
policy:
  masking:
    - scope: public-ip
      method: truncate
      bits: 8
  handling:
    tlp: GREEN
    retention: 90d
method:
  protocols: [/ssanet/exchange/1.0.0]
  security: [noise, tls]
schedule:
  start: 2010-01-01T00:00:00Z
  end: now+365d
`), 0o600); err != nil {
		t.Fatal(err)
	}
	id := agree(t, req, prov, tmpl)
	prov.waitState(id, "approved", settle)

	recs := eveStream(sampleEVE(t), streamBase, 0, 24, nil)
	ing := prov.ingest(recs)
	queued := int(ing.Queued[id])
	if queued == 0 {
		t.Fatalf("ingest: %+v, nothing queued for %s: the provider did not implement the SSA", ing, id)
	}
	received := waitSink(t, sink, id, queued, deliverBy)

	// The records are masked with the key of the provider's home, and with nothing else.
	agreed := filepath.Join(t.TempDir(), "agreed.ssa")
	if err := os.WriteFile(agreed, req.export(id), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := writeStream(t.TempDir(), "raw.jsonl", recs)
	if err != nil {
		t.Fatal(err)
	}
	refined := filepath.Join(t.TempDir(), "refined.jsonl")
	if r := run(t, "", nil, "policy", "apply", "--ssa", agreed, "--format", "eve", "--key-file", keyFile, "--out", refined, raw); r.code != 0 {
		t.Fatalf("policy apply with the provider's key: %s", r)
	}
	offline, err := os.ReadFile(refined)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{} // by timestamp: src and dest as the key masks them
	for line := range bytes.Lines(offline) {
		r := recordView{Record: bytes.TrimSpace(line)}
		s, d := addresses(r.body())
		want[r.ts()] = [2]string{s, d}
	}
	rawByTS := map[string]eveRecord{}
	for _, r := range recs {
		rawByTS[r.ts] = r
	}
	for _, r := range received {
		s, d := addresses(r.body())
		w, ok := want[r.ts()]
		if !ok || w != [2]string{s, d} {
			t.Errorf("record %d: received %s → %s, the provider's key gives %v", r.Seq, s, d, w)
		}
		if raw := rawByTS[r.ts()]; raw.src != "" && s == raw.src {
			t.Errorf("record %d: source %s received unmasked", r.Seq, s)
		}
	}

	// The key is in nothing either side shows, exports or logs.
	provID := prov.peerID()
	outputs := map[string][]byte{}
	add := func(name string, a *agent, args ...string) {
		r := a.cli(args...)
		if r.code != 0 {
			t.Errorf("%s: %s", name, r)
		}
		outputs[name] = []byte(r.stdout + r.stderr)
	}
	for _, a := range []*agent{prov, req} {
		outputs[a.name+": ssa export"] = a.export(id)
		add(a.name+": ssa show", a, "ssa", "show", id)
		add(a.name+": ssa show --json", a, "--json", "ssa", "show", id)
		add(a.name+": ssa transcript --json", a, "--json", "ssa", "transcript", id)
	}
	add("provider: offer list", prov, "offer", "list")
	add("provider: offer list --json", prov, "--json", "offer", "list")
	add("requester: discover --peer", req, "discover", "--peer", provID)
	add("requester: discover --peer --json", req, "--json", "discover", "--peer", provID)
	add("requester: records --json", req, "--json", "records", "--ssa", id)
	if !bytes.Contains(outputs["requester: discover --peer --json"], []byte(`"key_id": "site-a"`)) ||
		!bytes.Contains(outputs["requester: ssa show --json"], []byte(`"key_id": "site-a"`)) {
		t.Errorf("the offer and the SSA do not name the key by its ID:\n%s\n%s", outputs["requester: discover --peer --json"], outputs["requester: ssa show --json"])
	}
	for _, a := range []*agent{prov, req} { // read after every command above has run
		log, err := os.ReadFile(a.log)
		if err != nil {
			t.Fatal(err)
		}
		outputs[a.name+": log"] = log
	}
	sinkData, err := os.ReadFile(sink)
	if err != nil {
		t.Fatal(err)
	}
	outputs["requester: sink"] = sinkData
	key, err := hex.DecodeString(maskKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string][]byte{
		"hex":        []byte(maskKeyHex),
		"HEX":        []byte(strings.ToUpper(maskKeyHex)),
		"raw":        key,
		"base64":     []byte(base64.StdEncoding.EncodeToString(key)),
		"base64 url": []byte(base64.RawURLEncoding.EncodeToString(key)),
	}
	for name, out := range outputs {
		for form, b := range forms {
			if bytes.Contains(out, b) {
				t.Errorf("%s holds the masking key (%s)", name, form)
			}
		}
	}
}
