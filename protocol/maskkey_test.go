package protocol

import (
	"errors"
	"strings"
	"testing"
)

// retiredKeyHex is a masking key written in the clear, as CBOR key 5 of a MaskRule and the
// YAML key "key" once carried it.
var retiredKeyHex = strings.Repeat("5a", 32)

// keyedRequest is the example request with an hmac rule that names a key of the provider.
func keyedRequest(t testing.TB) *SSA {
	t.Helper()
	s := exampleRequest(t, t0)
	s.Policy.Masking = append(s.Policy.Masking, MaskRule{Scope: ScopeFields, Fields: []string{"user.name"}, Method: MaskHMAC, KeyID: "site-a"})
	return s
}

// withRetiredKey returns the encoding of s with the retired CBOR key 5 (a masking key in the
// clear) added to its last masking rule, in canonical form.
func withRetiredKey(t testing.TB, s *SSA) []byte {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var m map[any]any
	if err := decMode.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	field := func(m map[any]any, k int64) any {
		for key, v := range m {
			if n, ok := key.(int64); ok && n == k {
				return v
			}
			if n, ok := key.(uint64); ok && n == uint64(k) {
				return v
			}
		}
		t.Fatalf("no CBOR key %d in %v", k, m)
		return nil
	}
	rules := field(field(m, 7).(map[any]any), 1).([]any)
	rules[len(rules)-1].(map[any]any)[int64(5)] = retiredKeyHex
	out, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keyedTemplate is the minimal template with one hmac rule, given the extra line.
func keyedTemplate(extra string) []byte {
	return []byte(strings.Replace(minimal, "information:", `policy:
  masking:
    - scope: fields
      fields: [user.name]
      method: hmac
      `+extra+`
information:`, 1))
}

// TestRetiredMaskKey: CBOR key 5 of a masking rule, the key in the clear, is refused wherever
// an SSA is read, and a template or offer that writes "key:" is told where the key goes now.
func TestRetiredMaskKey(t *testing.T) {
	t.Run("wire", func(t *testing.T) {
		ok, err := keyedRequest(t).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSSA(ok); err != nil {
			t.Fatalf("the SSA without field 5 does not decode: %v", err)
		}
		b := withRetiredKey(t, keyedRequest(t))
		if _, err := DecodeSSA(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("an SSA carrying a masking key (field 5) decodes: %v", err)
		}
		var o Offer
		if err := unmarshalCanonical(b, &o.Terms); !errors.Is(err, ErrMalformed) {
			t.Fatalf("offer terms carrying a masking key (field 5) decode: %v", err)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		tmpl := keyedTemplate("key: " + retiredKeyHex)
		_, err := ParseSSAYAML(tmpl, t0)
		if !errors.Is(err, ErrTemplate) {
			t.Fatalf("a template with a masking key: %v, want ErrTemplate", err)
		}
		for _, want := range []string{"line 10", "keys/NAME", "key-id: NAME", "0600"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		offer := "id: o\nterms:\n" + indent(string(tmpl))
		if _, err := ParseOfferYAML([]byte(offer), t0); !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), "key-id: NAME") {
			t.Fatalf("an offer with a masking key: %v, want ErrTemplate naming key-id", err)
		}
		if _, err := ParseSSAYAML(keyedTemplate("key-id: site-a"), t0); err != nil {
			t.Fatalf("a template naming a key ID: %v", err)
		}
	})
}

// TestKeyIDGrammar: a key ID names a file of the provider's home, so only a short run of
// lower-case letters, digits and hyphens is one; and only cryptopan and hmac take one.
func TestKeyIDGrammar(t *testing.T) {
	cases := []struct {
		name   string
		method string
		id     string
		ok     bool
	}{
		{"letters and hyphens", MaskHMAC, "site-a", true},
		{"digits", MaskCryptoPAn, "2026", true},
		{"longest", MaskHMAC, strings.Repeat("k", MaxKeyIDLen), true},
		{"too long", MaskHMAC, strings.Repeat("k", MaxKeyIDLen+1), false},
		{"upper case", MaskHMAC, "Site-A", false},
		{"parent directory", MaskHMAC, "..", false},
		{"path", MaskHMAC, "../../etc/passwd", false},
		{"slash", MaskHMAC, "a/b", false},
		{"dot", MaskHMAC, "a.key", false},
		{"leading hyphen", MaskHMAC, "-rf", false},
		{"space", MaskHMAC, "a b", false},
		{"nul", MaskHMAC, "a\x00", false},
		{"not a keyed method", MaskTruncate, "site-a", false},
		{"remove takes none", MaskRemove, "site-a", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := exampleRequest(t, t0)
			r := MaskRule{Scope: ScopeFields, Fields: []string{"user.name"}, Method: tc.method, KeyID: tc.id}
			if tc.method == MaskTruncate {
				r.Bits = 8
			}
			s.Policy.Masking = []MaskRule{r}
			err := s.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidSSA) {
				t.Fatalf("Validate: %v, want ErrInvalidSSA", err)
			}
		})
	}
}
