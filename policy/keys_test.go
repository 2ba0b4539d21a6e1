package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestNamedKeys: a rule's key ID is resolved by the provider's KeySource, whose key masks as
// is; a key ID the KeySource does not know is an error, not a fallback; the requester, with
// no key, gets the same SSP hash; and nothing computed from a key is in what is hashed.
func TestNamedKeys(t *testing.T) {
	sample, err := hex.DecodeString(testKey)
	if err != nil {
		t.Fatal(err)
	}
	keyed := func(id string) *protocol.SSA {
		return ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{
			{Scope: protocol.ScopeAllIP, Method: protocol.MaskCryptoPAn, KeyID: id},
			{Scope: protocol.ScopeFields, Fields: []string{"observer.name"}, Method: protocol.MaskHMAC},
		}}, "eve")
	}
	t.Run("resolved", func(t *testing.T) {
		var asked []string
		keys := func(ssaID, keyID string) ([]byte, error) {
			asked = append(asked, ssaID+"/"+keyID)
			return testKeys(ssaID, keyID)
		}
		p, err := Compile(keyed("sample"), keys)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"ssa-test-0001/sample", "ssa-test-0001/"}; !slices.Equal(asked, want) {
			t.Errorf("asked the KeySource for %v, want %v", asked, want)
		}
		if !p.CanEnforce() {
			t.Fatal("CanEnforce: false with every key")
		}
		out, err := Enforce(p, "eve", []byte(`{"timestamp":"2024-01-01T00:00:00Z","event_type":"x","src_ip":"128.11.68.132"}`))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(out, []byte(`"src_ip":"135.242.180.132"`)) {
			t.Errorf("the named key is not the one used: %s", out)
		}
		req, err := Compile(keyed("sample"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if req.Hash() != p.Hash() || req.CanEnforce() {
			t.Errorf("requester's SSP: hash %s (provider %s), CanEnforce %v", req.Hash(), p.Hash(), req.CanEnforce())
		}
		if _, err := NewEnforcer(req, "eve", Config{}); !errors.Is(err, ErrKey) {
			t.Errorf("NewEnforcer without the keys: %v, want ErrKey", err)
		}
		other, err := Compile(keyed("sample"), StaticKey(bytes.Repeat([]byte{9}, 32)))
		if err != nil {
			t.Fatal(err)
		}
		if other.Hash() != p.Hash() {
			t.Error("the SSP hash depends on the key")
		}
		if renamed := mustCompile(t, keyed("")); renamed.Hash() == p.Hash() {
			t.Error("the SSP hash does not cover the key ID")
		}
		c, err := p.canonical()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(sample)
		for _, leak := range [][]byte{sample, []byte(testKey), sum[:], []byte(hex.EncodeToString(sum[:]))} {
			if bytes.Contains(c, leak) {
				t.Errorf("the hashed SSP encoding holds %x", leak)
			}
		}
	})
	for _, tc := range []struct {
		name string
		keys KeySource
		want string
	}{
		{"unknown key ID", testKeys, `masking key "site-b" of SSA "ssa-test-0001"`},
		{"derived keys know no name", DerivedKeys([]byte("a long-term provider secret")), `no key named "site-b"`},
		{"short key", func(string, string) ([]byte, error) { return make([]byte, 16), nil }, "16 bytes, want 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(keyed("site-b"), tc.keys)
			if !errors.Is(err, ErrKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile: %v, want ErrKey with %q", err, tc.want)
			}
		})
	}
}
