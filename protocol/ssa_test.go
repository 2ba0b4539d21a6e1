package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fullSSA sets every field of an SSA, at every depth.
func fullSSA(t *testing.T) *SSA {
	t.Helper()
	pr := newPair(t)
	rout, _ := pr.approve()
	s := rout.Agreement.Clone()
	s.Supersedes = "ssa-test-0"
	s.Expires = FromTime(pr.now.Add(time.Hour)) // an agreement has none, a revision may
	s.Participants.Requester.PeerID = pr.rid.PeerID().String()
	s.Participants.Requester.Phone, s.Participants.Provider.Phone = "+1 555 0100", "+1 555 0199"
	s.Policy.Masking = []MaskRule{{Scope: ScopeFields, Fields: []string{"user.name"}, Method: MaskHMAC, Bits: 1, MaxBits: 2, KeyID: "k"}}
	s.Policy.Summarization = &Summarization{GroupBy: "source.ip", RankBy: RankByCount, TopN: 1, Window: 60}
	s.Method.Access = []string{"/ip4/127.0.0.1/tcp/4001"}
	s.Information[0].Name = "alerts"
	return s
}

// zeroField names a field of v left at its zero value, or "".
func zeroField(v reflect.Value, path string) string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return path
		}
		return zeroField(v.Elem(), path)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				if z := zeroField(v.Field(i), path+"."+f.Name); z != "" {
					return z
				}
			}
		}
		return ""
	case reflect.Slice:
		if v.Len() == 0 {
			return path
		}
		return zeroField(v.Index(0), path+"[0]")
	}
	if v.IsZero() {
		return path
	}
	return ""
}

// shared names memory that a and b share, or "".
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			return path
		}
		if a.IsNil() {
			return ""
		}
		return shared(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if s := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); s != "" {
				return s
			}
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if s := shared(a.Index(i), b.Index(i), path+"[i]"); s != "" {
				return s
			}
		}
	case reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for _, k := range a.MapKeys() {
			if s := shared(a.MapIndex(k), b.MapIndex(k), path+"["+k.String()+"]"); s != "" {
				return s
			}
		}
	}
	return ""
}

// TestCloneIsDeep fails when a field is added to the SSA and Clone does not copy it.
func TestCloneIsDeep(t *testing.T) {
	s := fullSSA(t)
	if z := zeroField(reflect.ValueOf(s), "SSA"); z != "" {
		t.Fatalf("fullSSA leaves %s unset: set it so that Clone is tested on it", z)
	}
	c := s.Clone()
	if p := shared(reflect.ValueOf(s), reflect.ValueOf(c), "SSA"); p != "" {
		t.Fatalf("the clone shares %s", p)
	}
	a, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || !reflect.DeepEqual(s, c) {
		t.Fatal("the clone differs")
	}
}

// TestEd25519Key checks the fast path of ed25519Key against libp2p's key extraction.
func TestEd25519Key(t *testing.T) {
	for b := byte(1); b <= 8; b++ {
		id := testIdentity(t, b).PeerID()
		got, err := ed25519Key(id)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := id.ExtractPublicKey()
		if err != nil {
			t.Fatal(err)
		}
		want, err := pub.Raw()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("identity %d: %x, want %x (%v)", b, got, want, err)
		}
	}
	k, _, err := crypto.GenerateSecp256k1Key(bytes.NewReader(bytes.Repeat([]byte{9}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	secp, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []peer.ID{secp, peer.ID(ed25519Prefix + "short"), ""} {
		if _, err := ed25519Key(id); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("%q: %v, want ErrUnsupportedKey", id, err)
		}
	}
}

// otherValues are extension values, canonical (ok) or not; the fuzz targets take them as
// seeds too.
var otherValues = []struct {
	name string
	raw  []byte
	ok   bool
}{
	{"integer", []byte{0x01}, true},
	{"negative integer", []byte{0x20}, true},
	{"text", []byte{0x62, 'o', 'k'}, true},
	{"bytes", []byte{0x41, 0x00}, true},
	{"true, null", []byte{0x82, 0xf5, 0xf6}, true},
	{"sorted map", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'b', 0x82, 0x01, 0x02}, true},
	{"map with integer keys", []byte{0xa2, 0x01, 0x01, 0x20, 0x02}, true},
	{"non-shortest integer", []byte{0x18, 0x01}, false},
	{"non-shortest length", []byte{0x78, 0x01, 'a'}, false},
	{"non-shortest integer inside a map", []byte{0xa1, 0x61, 'a', 0x19, 0x00, 0x01}, false},
	{"unsorted map keys", []byte{0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02}, false},
	{"duplicate map keys", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, false},
	{"float64", []byte{0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, false},
	{"float16 in shortest form", []byte{0xf9, 0x3c, 0x00}, false},
	{"float inside an array", []byte{0x81, 0xf9, 0x3e, 0x00}, false},
	{"undefined", []byte{0xf7}, false},
	{"tag", []byte{0xc1, 0x01}, false},
	{"invalid UTF-8", []byte{0x61, 0xff}, false},
}

// TestOtherMustBeCanonical: extension values are signed as they are, so each must be
// canonical CBOR, or one SSA would have several signing encodings. DecodeSSA and Open (for
// every message carrying an SSA) refuse any other encoding.
func TestOtherMustBeCanonical(t *testing.T) {
	for _, tc := range otherValues {
		t.Run(tc.name, func(t *testing.T) {
			ssa, env := withOther(t, tc.raw)
			_, derr := DecodeSSA(ssa)
			_, oerr := Open(env)
			for what, err := range map[string]error{"DecodeSSA": derr, "Open": oerr} {
				switch {
				case tc.ok && err != nil:
					t.Errorf("%s refuses a canonical value: %v", what, err)
				case !tc.ok && !errors.Is(err, ErrMalformed):
					t.Errorf("%s: %v, want ErrMalformed", what, err)
				}
			}
		})
	}
}

// withOther returns the encoding of a request whose extension "ticket" is raw, as is, and of
// the envelope that sends it.
func withOther(t testing.TB, raw []byte) (ssa, env []byte) {
	t.Helper()
	id := testIdentity(t, 1)
	s := exampleRequest(t, t0)
	s.Status, s.Participants.Requester.PeerID = StatusProposal, id.PeerID().String()
	s.Other = Extensions{"ticket": raw}
	b, err := s.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	e, err := Seal(id, Header{Type: MsgRequest, Negotiation: testNID(7), ID: testNID(8), Time: t0.UnixMilli()}, s)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return b, e.Bytes()
}

func TestOfferTermsCarryNoStatus(t *testing.T) {
	for _, st := range []Status{StatusProposal, StatusApproval, StatusAnnulment} {
		t.Run(st.String(), func(t *testing.T) {
			o := exampleOffer(t, t0)
			o.Terms.Status = st
			if err := o.Validate(); !errors.Is(err, ErrInvalidSSA) {
				t.Fatalf("Validate: %v, want ErrInvalidSSA", err)
			}
		})
	}
	if err := exampleOffer(t, t0).Validate(); err != nil {
		t.Fatalf("the example offer: %v", err)
	}
}
