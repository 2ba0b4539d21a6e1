package protocol

import (
	"bytes"
	"encoding/json"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Fuzz targets for every decoder. Each must never panic, and whatever it accepts must encode
// back to exactly the bytes it read. Seeds are the golden files, the example templates and
// messages whose extension values are canonical or not (otherValues).

// goldenSeeds returns the bytes of the golden negotiation messages and agreed SSAs (not those
// of the exchange-phase documents, which docs_fuzz_test.go seeds itself).
func goldenSeeds(f *testing.F) map[string][]byte {
	f.Helper()
	seeds := map[string][]byte{"agreement": readGolden(f, "agreement"), "annulment": readGolden(f, "annulment")}
	for _, name := range msgNames {
		seeds[name] = readGolden(f, name)
	}
	return seeds
}

// ssaSeeds are SSAs: the agreements, the payloads of the golden messages, the example
// templates (all canonical), requests carrying each of otherValues (canonical or not), and a
// request with a masking key ID, also with the retired key in the clear (field 5).
func ssaSeeds(f *testing.F) [][]byte {
	var out [][]byte
	for name, b := range goldenSeeds(f) {
		switch name {
		case "agreement", "annulment":
			out = append(out, b)
		default:
			env, err := Open(b)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, env.Payload())
		}
	}
	req, offer := exampleRequest(f, t0), exampleOffer(f, t0)
	for _, s := range []*SSA{req, &offer.Terms} {
		b, err := s.Encode()
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	for _, v := range otherValues {
		b, _ := withOther(f, v.raw)
		out = append(out, b)
	}
	keyed, err := keyedRequest(f).Encode()
	if err != nil {
		f.Fatal(err)
	}
	return append(out, keyed, withRetiredKey(f, keyedRequest(f))) // a key ID; the retired key in the clear
}

func FuzzDecodeSSA(f *testing.F) {
	for _, b := range ssaSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSSA(data)
		if err != nil {
			return
		}
		enc, err := s.Encode()
		if err != nil {
			t.Fatalf("a decoded SSA does not encode: %v", err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("decoded and re-encoded:\n%x\nread:\n%x", enc, data)
		}
		c, err := s.Clone().Encode()
		if err != nil || !bytes.Equal(c, data) {
			t.Fatalf("the clone differs: %v", err)
		}
		if _, err := s.SigningBytes(); err != nil {
			t.Fatal(err)
		}
		// The re-encoding above keeps extension values as they are: check them on their own.
		for k, raw := range s.Other {
			var v any
			if err := decMode.Unmarshal(raw, &v); err != nil || noFloats(v) != nil {
				t.Fatalf("other.%s %x accepted: %v", k, raw, err)
			}
			if b, err := Marshal(v); err != nil || !bytes.Equal(b, raw) {
				t.Fatalf("other.%s %x accepted, its canonical form is %x", k, raw, b)
			}
		}
		// The human forms and verification may refuse, but never panic.
		_, _ = s.YAML()
		_, _ = json.Marshal(s)
		_, _ = VerifySSA(s)
	})
}

func FuzzOpen(f *testing.F) {
	for _, b := range goldenSeeds(f) {
		f.Add(b)
	}
	for _, v := range otherValues {
		_, env := withOther(f, v.raw)
		f.Add(env)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Open(data)
		if err != nil {
			return
		}
		if !bytes.Equal(env.Bytes(), data) {
			t.Fatal("Bytes is not what was opened")
		}
		again, err := Marshal(sign1{Protected: env.protected, Unprotected: map[int64]any{}, Payload: env.Payload(), Signature: env.sig})
		if err != nil || !bytes.Equal(append([]byte{0xd2}, again...), data) {
			t.Fatalf("the envelope re-encodes differently: %v", err)
		}
		var body []byte
		if env.SSA != nil {
			body, err = env.SSA.SigningBytes()
		} else {
			body, err = Marshal(env.Rejection)
		}
		if err != nil || !bytes.Equal(body, env.Payload()) {
			t.Fatalf("the body re-encodes differently: %v", err)
		}
	})
}

func FuzzDecodeSignature(f *testing.F) {
	for name, b := range goldenSeeds(f) {
		switch name {
		case "agreement", "annulment":
			s, err := DecodeSSA(b)
			if err != nil {
				f.Fatal(err)
			}
			for _, sig := range s.Signatures {
				f.Add(sig)
			}
		default:
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, h, _, kid, err := decodeSign1(data)
		if err != nil {
			return
		}
		m.Unprotected = map[int64]any{} // empty, as decodeSign1 requires
		again, err := Marshal(m)
		if err != nil || !bytes.Equal(append([]byte{0xd2}, again...), data) {
			t.Fatalf("the signature re-encodes differently: %v", err)
		}
		if _, err := Marshal(&h); err != nil {
			t.Fatal(err)
		}
		if kid.Validate() != nil {
			t.Fatalf("kid %q", kid)
		}
	})
}

func FuzzVerifySSA(f *testing.F) {
	for _, b := range ssaSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSSA(data)
		if err != nil {
			return
		}
		signers, err := VerifySSA(s)
		if err != nil {
			if signers != nil {
				t.Fatal("signers with an error")
			}
			return
		}
		if len(signers) != 2 || signers[0].Role == signers[1].Role || signers[0].PeerID == signers[1].PeerID {
			t.Fatalf("signers %+v", signers)
		}
		for _, sg := range signers {
			p := s.Participants.Requester
			if sg.Role == "provider" {
				p = s.Participants.Provider
			}
			if p.PeerID != sg.PeerID.String() {
				t.Fatalf("signer %s is not the %s %s", sg.PeerID, sg.Role, p.PeerID)
			}
		}
	})
}

// yamlSeeds are the examples, templates with a masking key ID and with the retired key, and
// the human form of the golden agreement.
func yamlSeeds(f *testing.F) [][]byte {
	out := [][]byte{ExampleRequester, ExampleProvider, []byte(minimal), keyedTemplate("key-id: site-a"), keyedTemplate("key: " + retiredKeyHex)}
	s, err := DecodeSSA(goldenSeeds(f)["agreement"])
	if err != nil {
		f.Fatal(err)
	}
	y, err := s.YAML()
	if err != nil {
		f.Fatal(err)
	}
	return append(out, y)
}

func FuzzParseSSAYAML(f *testing.F) {
	for _, b := range yamlSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSSAYAML(data, t0)
		if err != nil {
			return
		}
		enc, err := s.Encode()
		if err != nil {
			t.Fatalf("a template does not encode: %v", err)
		}
		d, err := DecodeSSA(enc)
		if err != nil {
			t.Fatalf("a template's encoding does not decode: %v", err)
		}
		if again, err := d.Encode(); err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("decoded and re-encoded differently: %v", err)
		}
		// Written as YAML and read again, it is the same SSA.
		y, err := s.YAML()
		if err != nil {
			t.Fatalf("a template cannot be written: %v", err)
		}
		back, err := ParseSSAYAML(y, t0)
		if err != nil {
			t.Fatalf("written as\n%s\nit cannot be read: %v", y, err)
		}
		if b, err := back.Encode(); err != nil || !bytes.Equal(b, enc) {
			t.Fatalf("written as\n%s\nit reads back differently: %v", y, err)
		}
	})
}

func FuzzParseOfferYAML(f *testing.F) {
	for _, b := range yamlSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseOfferYAML(data, t0)
		if err != nil {
			return
		}
		enc, err := Marshal(o)
		if err != nil {
			t.Fatalf("an offer does not encode: %v", err)
		}
		var d Offer
		if err := unmarshalCanonical(enc, &d); err != nil {
			t.Fatalf("an offer's encoding does not decode: %v", err)
		}
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatalf("an offer cannot be written: %v", err)
		}
		back, err := ParseOfferYAML(y, t0)
		if err != nil {
			t.Fatalf("written as\n%s\nit cannot be read: %v", y, err)
		}
		if b, err := Marshal(back); err != nil || !bytes.Equal(b, enc) {
			t.Fatalf("written as\n%s\nit reads back differently: %v", y, err)
		}
	})
}

// FuzzHeaders checks the fast paths of decodeSign1 against the strict decoder: the hand-written
// readers accept nothing the strict decoder refuses and read the same values, and the
// hand-written writers write what the encoder writes.
func FuzzHeaders(f *testing.F) {
	for _, b := range goldenSeeds(f) {
		env, err := Open(b)
		if err != nil {
			continue
		}
		f.Add(env.protected)
		var ph protectedHeader
		if err := unmarshalCanonical(env.protected, &ph); err != nil {
			f.Fatal(err)
		}
		f.Add(ph.Head)
	}
	f.Add(appendHeader(nil, &Header{Type: 200, Time: -1 << 40}))
	f.Add(appendHeader(nil, &Header{Negotiation: []byte{}, ID: make([]byte, 16), Prev: make([]byte, 3)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		var strict Header
		strictErr := unmarshalCanonical(data, &strict)
		if fast, ok := parseHeader(data); ok {
			if strictErr != nil {
				t.Fatalf("the fast path reads a header the strict decoder refuses: %v", strictErr)
			}
			if fast.Type != strict.Type || fast.Time != strict.Time || !bytes.Equal(fast.Negotiation, strict.Negotiation) ||
				!bytes.Equal(fast.ID, strict.ID) || !bytes.Equal(fast.Prev, strict.Prev) {
				t.Fatalf("fast %+v, strict %+v", fast, strict)
			}
		}
		if strictErr == nil {
			enc, err := Marshal(&strict)
			if err != nil || !bytes.Equal(appendHeader(nil, &strict), enc) {
				t.Fatalf("appendHeader writes %x, the encoder %x", appendHeader(nil, &strict), enc)
			}
		}
		var ph protectedHeader
		strictErr = unmarshalCanonical(data, &ph)
		if ct, kid, head, ok := parseProtected(data); ok {
			if strictErr != nil {
				t.Fatalf("the fast path reads a protected header the strict decoder refuses: %v", strictErr)
			}
			if strictErr == nil && (ph.Alg != algEdDSA || ph.CT != ct || !bytes.Equal(ph.KID, kid) || !bytes.Equal(ph.Head, head)) {
				t.Fatalf("fast %q %x %x, strict %+v", ct, kid, head, ph)
			}
		}
		if strictErr == nil && ph.Alg == algEdDSA && len(ph.Head) > 0 {
			enc, err := Marshal(&ph)
			if err != nil || !bytes.Equal(appendProtected(nil, ph.CT, ph.KID, ph.Head), enc) {
				t.Fatalf("appendProtected writes %x, the encoder %x", appendProtected(nil, ph.CT, ph.KID, ph.Head), enc)
			}
		}
	})
}
