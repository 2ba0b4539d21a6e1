package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

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
	s.Participants.Requester.PeerID = pr.rid.PeerID().String()
	s.Policy.Masking = []MaskRule{{Scope: ScopeFields, Fields: []string{"user.name"}, Method: MaskHMAC, Bits: 1, Key: "k", MaxBits: 2}}
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
