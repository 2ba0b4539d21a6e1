package protocol

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/veraison/go-cose"
)

// go-cose is an independent COSE implementation, used only here: every signed document
// ssanet makes must verify with it, and every document it signs the way ssanet does must be
// byte for byte what Identity.sign makes and verify with ssanet's code.

func coseSigner(t testing.TB, id *Identity) cose.Signer {
	t.Helper()
	s, err := cose.NewSigner(cose.AlgorithmEdDSA, id.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// coseVerify verifies a tagged COSE_Sign1 with go-cose, with the key inside its kid; payload,
// if not nil, replaces a detached payload.
func coseVerify(t *testing.T, raw, payload, aad []byte) {
	t.Helper()
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	if payload != nil {
		m.Payload = payload
	}
	kid, err := peer.IDFromBytes(m.Headers.Protected[cose.HeaderLabelKeyID].([]byte))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kid.ExtractPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	rawPub, err := pub.Raw()
	if err != nil {
		t.Fatal(err)
	}
	v, err := cose.NewVerifier(cose.AlgorithmEdDSA, ed25519.PublicKey(rawPub))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(aad, v); err != nil {
		t.Fatalf("go-cose: %v", err)
	}
}

// coseSealDoc signs payload as a document of kind k with go-cose, as sealDoc did before it
// used Identity.sign.
func coseSealDoc(t *testing.T, id *Identity, k docKind, payload []byte) []byte {
	t.Helper()
	msg := cose.Sign1Message{
		Headers: cose.Headers{Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm:   cose.AlgorithmEdDSA,
			cose.HeaderLabelKeyID:       []byte(id.PeerID()),
			cose.HeaderLabelContentType: k.contentType,
		}},
		Payload: payload,
	}
	if err := msg.Sign(nil, k.aad, coseSigner(t, id)); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestCOSEVerifiesOurs: go-cose reads every golden message and document and verifies its
// signature, and the detached signatures of the agreements over their SSA's signing bytes.
func TestCOSEVerifiesOurs(t *testing.T) {
	for name, b := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			switch name {
			case "agreement", "annulment":
				s, err := DecodeSSA(b)
				if err != nil {
					t.Fatal(err)
				}
				payload, err := s.SigningBytes()
				if err != nil {
					t.Fatal(err)
				}
				for _, sig := range s.Signatures {
					coseVerify(t, sig, payload, aadSSA)
				}
			case "rejection":
				coseVerify(t, b, nil, aadRejection)
			default:
				coseVerify(t, b, nil, aadSSA)
			}
		})
	}
	docs := docGoldenCases(t)
	for _, name := range []string{"offers", "batch", "report"} {
		t.Run(name, func(t *testing.T) {
			raw, k := docs[name], docKinds[name]
			if name == "batch" {
				raw = batchHeader(t, raw)
			}
			coseVerify(t, raw, nil, k.aad)
		})
	}
}

var docKinds = map[string]docKind{"offers": docOffers, "batch": docBatch, "report": docReport}

// batchHeader returns the signed header of a batch as sent.
func batchHeader(t *testing.T, raw []byte) []byte {
	t.Helper()
	var w batchWire
	if err := batchDecMode.Unmarshal(raw, &w); err != nil {
		t.Fatal(err)
	}
	return w.Signed
}

// TestOursVerifiesCOSE: what go-cose signs the way ssanet does is byte for byte what ssanet
// signs, and ssanet's code opens it.
func TestOursVerifiesCOSE(t *testing.T) {
	id := testIdentity(t, 2)
	msgs := goldenCases(t)
	delete(msgs, "agreement")
	delete(msgs, "annulment")
	for name, ours := range msgs {
		t.Run(name, func(t *testing.T) {
			env, err := Open(ours)
			if err != nil {
				t.Fatal(err)
			}
			ct, aad := ctSSA, aadSSA
			if env.Header.Type == MsgRejection {
				ct, aad = ctRejection, aadRejection
			}
			signer := testIdentity(t, 1)
			if env.Sender == id.PeerID() {
				signer = id
			}
			theirs := coseSign(t, signer, env.Header, ct, env.Payload(), aad)
			if !bytes.Equal(theirs, ours) {
				t.Fatalf("go-cose signs %x, ssanet %x", theirs, ours)
			}
			if _, err := Open(theirs); err != nil {
				t.Fatal(err)
			}
		})
	}
	for name, ours := range docGoldenCases(t) {
		k, signed := docKinds[name]
		if !signed {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if name == "batch" {
				ours = batchHeader(t, ours)
			}
			var m sign1
			if err := unmarshalCanonical(ours[1:], &m); err != nil {
				t.Fatal(err)
			}
			theirs := coseSealDoc(t, id, k, m.Payload)
			if !bytes.Equal(theirs, ours) {
				t.Fatalf("go-cose signs %x, ssanet %x", theirs, ours)
			}
			var v any
			switch name {
			case "offers":
				v = &SignedOffers{}
			case "batch":
				v = &Batch{}
			case "report":
				v = &Report{}
			}
			if err := openDoc(theirs, id.PeerID(), k, v); err != nil {
				t.Fatal(err)
			}
		})
	}
}
