package agent

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestReadMaskKey: a key ID is resolved to the file keys/ID of the home, which must be a
// regular file of mode 0600 holding 64 hex digits; anything else is an error that says what
// to do, and never holds the key.
func TestReadMaskKey(t *testing.T) {
	key := strings.Repeat("3c", 32)
	cases := []struct {
		name  string
		id    string
		setup func(t *testing.T, path string) // nil: no file
		want  string                          // in the error; "" for success
	}{
		{"key", "site-a", file(key+"\n", 0o600), ""},
		{"upper-case hex", "site-a", file(strings.ToUpper(key), 0o400), ""},
		{"missing", "site-a", nil, "write its 64 hex digits to "},
		{"readable by the group", "site-a", file(key, 0o640), "chmod 600 "},
		{"readable by all", "site-a", file(key, 0o644), "mode 0644"},
		{"not hex", "site-a", file(strings.Repeat("zz", 32), 0o600), "openssl rand -hex 32"},
		{"short", "site-a", file(key[:62], 0o600), "does not hold 64 hex digits"},
		{"two keys", "site-a", file(key+key, 0o600), "does not hold 64 hex digits"},
		{"a directory", "site-a", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"not a key ID", "../config.yaml", nil, "is not a key ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.Mkdir(filepath.Join(home, MaskKeysDir), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, filepath.Join(home, MaskKeysDir, tc.id))
			}
			k, err := readMaskKey(home, tc.id)
			if tc.want == "" {
				if err != nil || hex.EncodeToString(k) != key {
					t.Fatalf("readMaskKey: %x, %v; want the key", k, err)
				}
				return
			}
			if !errors.Is(err, ErrMaskKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("readMaskKey: %v; want ErrMaskKey with %q", err, tc.want)
			}
			if strings.Contains(strings.ToLower(err.Error()), key[:16]) {
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}

// file writes text to the path with mode perm.
func file(text string, perm os.FileMode) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, perm); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKeyedSSANotImplementedWithoutKey: an SSA whose named key the provider does not have
// (the file went away after the offer was added) is agreed but not implemented: no record is
// queued for it, masked some other way; once the key is back, the next start implements it.
func TestKeyedSSANotImplementedWithoutKey(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, func(o *protocol.Offer) {
		o.Terms.Policy.Masking = append(o.Terms.Policy.Masking, protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC, KeyID: "site-a"})
	})
	rec, err := req.Request(t.Context(), addrInfo(prov), requestTemplate(t))
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)
	s, err := prov.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(s.Policy.Masking, func(r protocol.MaskRule) bool { return r.KeyID == "site-a" }) {
		t.Fatalf("the agreed masking %+v does not name the key", s.Policy.Masking)
	}
	line := `{"timestamp":"` + time.Now().UTC().Format(time.RFC3339) + `","event_type":"alert","src_ip":"1.1.1.1","dest_ip":"8.8.4.4","alert":{"signature":"x","signature_id":1,"severity":1}}` + "\n"
	queued := func(a *Agent) int64 {
		t.Helper()
		st, err := a.Ingest(t.Context(), "eve", strings.NewReader(line))
		if err != nil {
			t.Fatal(err)
		}
		return st.Queued[rec.SSAID]
	}
	if n := queued(prov); n != 0 {
		t.Fatalf("%d records queued under an SSA whose key the provider does not have", n)
	}
	// With the key in place, the SSA is implemented when the agent starts again.
	path := filepath.Join(prov.home, MaskKeysDir, "site-a")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	file(strings.Repeat("3c", 32), 0o600)(t, path)
	if err := prov.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := New(prov.home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	if n := queued(again); n != 1 {
		t.Fatalf("%d records queued once the key is in place, want 1", n)
	}
}
