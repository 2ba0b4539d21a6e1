package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// An independent verifier of exported SSAs and transcripts, written from the README
// ("Verifying an exported SSA or transcript without ssanet") alone: a CBOR library decoding
// into generic values, SHA-256 and crypto/ed25519. It imports no ssanet package.

// indep is the core-deterministic encoder (RFC 8949 §4.2.1) the README names.
var indepEnc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// indepDec decodes into generic values, refusing duplicate map keys and indefinite lengths.
var indepDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, IndefLength: cbor.IndefLengthForbidden}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// decodeExact decodes b into a generic value and requires that b is its core-deterministic
// encoding.
func decodeExact(b []byte) (any, error) {
	var v any
	if err := indepDec.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	again, err := indepEnc.Marshal(v)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, errors.New("not core-deterministic CBOR")
	}
	return v, nil
}

func asMap(v any, what string) (map[any]any, error) {
	m, ok := v.(map[any]any)
	if !ok {
		return nil, fmt.Errorf("%s is not a map", what)
	}
	return m, nil
}

// cose is one COSE_Sign1 as the README describes it.
type cose struct {
	protected, payload, sig []byte
	detached                bool
	kid                     []byte
	contentType             string
	typ                     uint64
	nid, prev               []byte
	time                    uint64
}

// parseCOSE reads a tagged COSE_Sign1 and its protected header.
func parseCOSE(b []byte) (*cose, error) {
	v, err := decodeExact(b)
	if err != nil {
		return nil, err
	}
	tag, ok := v.(cbor.Tag)
	if !ok || tag.Number != 18 {
		return nil, errors.New("not a COSE_Sign1 (tag 18)")
	}
	arr, ok := tag.Content.([]any)
	if !ok || len(arr) != 4 {
		return nil, errors.New("COSE_Sign1 is not an array of 4")
	}
	c := &cose{}
	if c.protected, ok = arr[0].([]byte); !ok {
		return nil, errors.New("protected header is not a byte string")
	}
	if u, ok := arr[1].(map[any]any); !ok || len(u) != 0 {
		return nil, errors.New("unprotected header is not the empty map")
	}
	switch p := arr[2].(type) {
	case nil:
		c.detached = true
	case []byte:
		c.payload = p
	default:
		return nil, errors.New("payload is neither a byte string nor null")
	}
	if c.sig, ok = arr[3].([]byte); !ok || len(c.sig) != ed25519.SignatureSize {
		return nil, errors.New("signature is not 64 bytes")
	}
	hv, err := decodeExact(c.protected)
	if err != nil {
		return nil, fmt.Errorf("protected header: %w", err)
	}
	h, err := asMap(hv, "protected header")
	if err != nil {
		return nil, err
	}
	if alg, ok := h[uint64(1)].(int64); !ok || alg != -8 {
		return nil, fmt.Errorf("algorithm %v, want -8 (EdDSA)", h[uint64(1)])
	}
	if c.contentType, ok = h[uint64(3)].(string); !ok {
		return nil, errors.New("no content type")
	}
	if c.kid, ok = h[uint64(4)].([]byte); !ok {
		return nil, errors.New("no kid")
	}
	head, ok := h[int64(-65537)].([]byte)
	if !ok || len(h) != 4 {
		return nil, errors.New("no message header under -65537")
	}
	mv, err := decodeExact(head)
	if err != nil {
		return nil, fmt.Errorf("message header: %w", err)
	}
	m, err := asMap(mv, "message header")
	if err != nil {
		return nil, err
	}
	c.typ, _ = m[uint64(1)].(uint64)
	c.nid, _ = m[uint64(2)].([]byte)
	c.time, _ = m[uint64(4)].(uint64)
	if id, _ := m[uint64(3)].([]byte); c.typ < 1 || c.typ > 7 || len(c.nid) != 16 || len(id) != 16 {
		return nil, errors.New("message header: bad type or IDs")
	}
	if p, ok := m[uint64(5)]; ok {
		if c.prev, ok = p.([]byte); !ok || len(c.prev) != sha256.Size {
			return nil, errors.New("message header: prev is not 32 bytes")
		}
	}
	return c, nil
}

// verify checks c's signature over payload: Ed25519 with the key inside the kid, over the
// Sig_structure ["Signature1", protected, external AAD, payload].
func (c *cose) verify(payload []byte) error {
	aad := map[string]string{
		"application/ssanet-ssa+cbor":       "ssanet/v1 SSA",
		"application/ssanet-rejection+cbor": "ssanet/v1 SSA rejection",
	}[c.contentType]
	if aad == "" {
		return fmt.Errorf("content type %q", c.contentType)
	}
	if len(c.kid) != 38 || !bytes.HasPrefix(c.kid, []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}) {
		return errors.New("kid is not an Ed25519 peer ID")
	}
	tbs, err := indepEnc.Marshal([]any{"Signature1", c.protected, []byte(aad), payload})
	if err != nil {
		return err
	}
	if !ed25519.Verify(ed25519.PublicKey(c.kid[6:]), tbs, c.sig) {
		return errors.New("bad signature")
	}
	return nil
}

// detachedForm is c with its payload null, as an exported SSA carries a signature.
func (c *cose) detachedForm() ([]byte, error) {
	return indepEnc.Marshal(cbor.Tag{Number: 18, Content: []any{c.protected, map[any]any{}, nil, c.sig}})
}

// base58 is the bitcoin-alphabet base58 of b: a peer ID's text form.
func base58(b []byte) string {
	const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	n := new(big.Int).SetBytes(b)
	var out []byte
	for mod, base := new(big.Int), big.NewInt(58); n.Sign() > 0; {
		n.DivMod(n, base, mod)
		out = append(out, alphabet[mod.Int64()])
	}
	for _, c := range b {
		if c != 0 {
			break
		}
		out = append(out, '1')
	}
	slices.Reverse(out)
	return string(out)
}

// participants returns the requester's and the provider's peer-id of an SSA map.
func participants(ssa map[any]any) (requester, provider string, err error) {
	ps, err := asMap(ssa[uint64(5)], "participants")
	if err != nil {
		return "", "", err
	}
	for key, dst := range map[uint64]*string{1: &requester, 2: &provider} {
		p, err := asMap(ps[key], "participant")
		if err != nil {
			return "", "", err
		}
		*dst, _ = p[uint64(5)].(string)
	}
	return requester, provider, nil
}

// indepVerifySSA verifies an exported SSA and returns role -> the message type it signed.
func indepVerifySSA(data []byte) (map[string]uint64, error) {
	v, err := decodeExact(data)
	if err != nil {
		return nil, err
	}
	ssa, err := asMap(v, "SSA")
	if err != nil {
		return nil, err
	}
	sigs, ok := ssa[uint64(13)].([]any)
	if !ok || len(sigs) != 2 {
		return nil, errors.New("key 13 does not hold two signatures")
	}
	delete(ssa, uint64(13))
	signing, err := indepEnc.Marshal(ssa)
	if err != nil {
		return nil, err
	}
	allowed := map[uint64][]uint64{2: {3, 6, 7}, 3: {5, 7}}[toUint(ssa[uint64(4)])]
	if allowed == nil {
		return nil, fmt.Errorf("status %v is neither approval nor annulment", ssa[uint64(4)])
	}
	requester, provider, err := participants(ssa)
	if err != nil {
		return nil, err
	}
	signed := map[string]uint64{}
	for i, s := range sigs {
		b, _ := s.([]byte)
		c, err := parseCOSE(b)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i+1, err)
		}
		if !c.detached || c.contentType != "application/ssanet-ssa+cbor" {
			return nil, fmt.Errorf("signature %d: not a detached SSA signature", i+1)
		}
		if err := c.verify(signing); err != nil {
			return nil, fmt.Errorf("signature %d: %w", i+1, err)
		}
		role := map[string]string{requester: "requester", provider: "provider"}[base58(c.kid)]
		if role == "" || signed[role] != 0 || !slices.Contains(allowed, c.typ) {
			return nil, fmt.Errorf("signature %d: signer %s, message type %d: not one signature of each participant agreeing", i+1, base58(c.kid), c.typ)
		}
		signed[role] = c.typ
	}
	return signed, nil
}

func toUint(v any) uint64 { u, _ := v.(uint64); return u }

// indepVerifyTranscript verifies an exported transcript (signatures, parties, hash chain;
// the test's negotiations have no crossing) and returns the SSA the last confirmation makes,
// encoded as an export, or nil when there is none.
func indepVerifyTranscript(data []byte) (agreement []byte, types []uint64, err error) {
	v, err := decodeExact(data)
	if err != nil {
		return nil, nil, err
	}
	f, err := asMap(v, "transcript")
	if err != nil {
		return nil, nil, err
	}
	msgs, ok := f[uint64(3)].([]any)
	if f[uint64(1)] != "ssanet-transcript" || toUint(f[uint64(2)]) != 1 || len(f) != 3 || !ok || len(msgs) == 0 {
		return nil, nil, errors.New("not a version 1 ssanet transcript with messages")
	}
	var parsed []*cose
	var requester, provider string
	for i, m := range msgs {
		raw, _ := m.([]byte)
		c, err := parseCOSE(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i+1, err)
		}
		if c.detached {
			return nil, nil, fmt.Errorf("message %d: detached payload", i+1)
		}
		if err := c.verify(c.payload); err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i+1, err)
		}
		if i == 0 {
			sv, err := decodeExact(c.payload)
			if err != nil {
				return nil, nil, err
			}
			ssa, err := asMap(sv, "request SSA")
			if err != nil {
				return nil, nil, err
			}
			if requester, provider, err = participants(ssa); err != nil {
				return nil, nil, err
			}
			if c.typ != 1 || c.prev != nil || base58(c.kid) != requester {
				return nil, nil, errors.New("message 1 is not the requester's request")
			}
		} else {
			before := sha256.Sum256(msgs[i-1].([]byte))
			if !bytes.Equal(c.prev, before[:]) || !bytes.Equal(c.nid, parsed[0].nid) {
				return nil, nil, fmt.Errorf("message %d does not follow message %d", i+1, i)
			}
		}
		if s := base58(c.kid); s != requester && s != provider {
			return nil, nil, fmt.Errorf("message %d is signed by %s, no party", i+1, s)
		}
		parsed = append(parsed, c)
		types = append(types, c.typ)
	}
	for i := len(parsed) - 1; i > 0; i-- {
		if parsed[i].typ != 7 {
			continue
		}
		// The confirmation's prev names the message it confirms: here, the one before it.
		m, c := parsed[i-1], parsed[i]
		ms, err := m.detachedForm()
		if err != nil {
			return nil, nil, err
		}
		cs, err := c.detachedForm()
		if err != nil {
			return nil, nil, err
		}
		sv, err := decodeExact(c.payload)
		if err != nil {
			return nil, nil, err
		}
		ssa, _ := sv.(map[any]any)
		ssa[uint64(13)] = []any{ms, cs}
		agreement, err = indepEnc.Marshal(ssa)
		return agreement, types, err
	}
	return nil, types, nil
}

// TestIndependentVerify: an SSA agreed and then annulled by two real agents, exported with
// its transcript at both points, verifies with the independent verifier above, which
// rebuilds from each transcript the bytes `ssa export` wrote; ssanet's own `ssa verify`
// agrees; and a flipped byte anywhere fails both.
func TestIndependentVerify(t *testing.T) {
	t.Parallel()
	prov := newAgent(t, "provider", "")
	req := newAgent(t, "requester", "")
	prov.offer("provider.yaml")
	id := agree(t, req, prov, testdata(t, "requester.yaml"))
	prov.waitState(id, "approved", settle)
	dir := t.TempDir()
	exportTranscript := func(a *agent, name string) []byte {
		t.Helper()
		path := filepath.Join(dir, name)
		a.must("ssa", "transcript", id, "--export", path)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	type stage struct {
		name        string
		ssa         []byte
		transcripts [][]byte
		types       []uint64
		signed      map[string]uint64
	}
	approved := stage{"approved", sameAgreement(t, req, prov, id),
		[][]byte{exportTranscript(req, "req-approved.cbor"), exportTranscript(prov, "prov-approved.cbor")},
		[]uint64{1, 2, 3, 7}, map[string]uint64{"requester": 3, "provider": 7}}
	if r := req.cli("ssa", "cancel", id, "--wait", "20s"); r.code != 0 {
		t.Fatalf("cancel: %s", r)
	}
	prov.waitState(id, "annulled", settle)
	annulled := stage{"annulled", sameAgreement(t, req, prov, id),
		[][]byte{exportTranscript(req, "req-annulled.cbor"), exportTranscript(prov, "prov-annulled.cbor")},
		[]uint64{1, 2, 3, 7, 5, 7}, map[string]uint64{"requester": 5, "provider": 7}}

	for _, st := range []stage{approved, annulled} {
		t.Run(st.name, func(t *testing.T) {
			signed, err := indepVerifySSA(st.ssa)
			if err != nil || !maps.Equal(signed, st.signed) {
				t.Fatalf("the exported SSA: signed %v (%v), want %v", signed, err, st.signed)
			}
			for i, tr := range st.transcripts {
				rebuilt, types, err := indepVerifyTranscript(tr)
				if err != nil {
					t.Fatalf("transcript %d: %v", i+1, err)
				}
				if !slices.Equal(types, st.types) {
					t.Errorf("transcript %d: message types %v, want %v", i+1, types, st.types)
				}
				if !bytes.Equal(rebuilt, st.ssa) {
					t.Errorf("transcript %d: the agreement its last confirmation makes is not the exported SSA", i+1)
				}
				// ssanet's own verifier, offline, says the same and names the same bytes.
				v, text := verifyTranscriptOffline(t, tr)
				sum := sha256.Sum256(st.ssa)
				if !v.Valid || v.Kind != "transcript" || v.AgreementSHA256 != hex.EncodeToString(sum[:]) ||
					v.Requester.State != st.name || v.Provider.State != st.name || len(v.Messages) != len(st.types) {
					t.Errorf("ssa verify of transcript %d: %+v\n%s", i+1, v, text)
				}
			}
			// Every 5th byte (and the last) flipped: both verifiers refuse every copy.
			for _, f := range []struct {
				name   string
				data   []byte
				verify func([]byte) error
			}{
				{"SSA", st.ssa, func(b []byte) error { _, err := indepVerifySSA(b); return err }},
				{"transcript", st.transcripts[0], func(b []byte) error { _, _, err := indepVerifyTranscript(b); return err }},
			} {
				for at := 0; at < len(f.data); at += 5 {
					if at+5 >= len(f.data) {
						at = len(f.data) - 1
					}
					bad := slices.Clone(f.data)
					bad[at] ^= 0x01
					if f.verify(bad) == nil {
						t.Fatalf("a copy of the %s with byte %d of %d flipped verifies", f.name, at, len(f.data))
					}
				}
			}
			bad := slices.Clone(st.transcripts[0])
			bad[len(bad)/2] ^= 0x01
			if v, text := verifyTranscriptOffline(t, bad); v.Valid || !strings.HasPrefix(text, "INVALID: ") {
				t.Errorf("ssa verify of a flipped transcript: %+v\n%s", v, text)
			}
		})
	}
}

// transcriptVerdict is the output of `ssanet ssa verify --json` on a transcript.
type transcriptVerdict struct {
	Valid     bool   `json:"valid"`
	Kind      string `json:"kind"`
	Error     string `json:"error"`
	Requester struct {
		PeerID string `json:"peer_id"`
		State  string `json:"state"`
	} `json:"requester"`
	Provider struct {
		PeerID string `json:"peer_id"`
		State  string `json:"state"`
	} `json:"provider"`
	Messages        []struct{ Type string } `json:"messages"`
	AgreementSHA256 string                  `json:"agreement_sha256"`
}

// verifyTranscriptOffline runs `ssanet ssa verify` on a transcript in a directory that is no
// agent's home and returns its JSON verdict and its text output; both exit codes must agree
// with the verdict.
func verifyTranscriptOffline(t *testing.T, data []byte) (transcriptVerdict, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "transcript.cbor"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir}
	text := run(t, dir, env, "ssa", "verify", "transcript.cbor")
	js := run(t, dir, env, "--json", "ssa", "verify", "transcript.cbor")
	var v transcriptVerdict
	if err := decode(js.stdout, &v); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	if (text.code == 0) != v.Valid || (js.code == 0) != v.Valid || (!v.Valid && text.code != 1) {
		t.Errorf("verify exit codes %d (text) and %d (json) disagree with valid=%v", text.code, js.code, v.Valid)
	}
	return v, text.stdout
}
