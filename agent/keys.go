package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// MaskKeysDir is the directory of a provider's named masking keys, in its home: the key that
// a cryptopan or hmac rule names with key-id NAME is the file keys/NAME, holding 64 hex
// digits (32 bytes), of mode 0600. The key stays in that file: SSAs, offers, the control API
// and the logs carry only its name.
const MaskKeysDir = "keys"

// ErrMaskKey means a named masking key is missing or unusable; the message says how to fix it.
var ErrMaskKey = errors.New("agent: masking key unusable")

// PolicyKeyFile holds the secret from which each SSA's CryptoPAn and HMAC keys are derived.
const PolicyKeyFile = "policy.key"

// providerKeys is the KeySource of the provider's masking keys in home: the masking secret
// (made on first use) and the named keys.
func providerKeys(home string) (policy.KeySource, error) {
	secret, err := loadOrCreateSecret(filepath.Join(home, PolicyKeyFile))
	if err != nil {
		return nil, err
	}
	return maskKeys(home, secret), nil
}

func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("masking secret %s: unreadable or not 32 bytes", path)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make a masking secret: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("write masking secret: %w", err)
	}
	return b, nil
}

// maskKeys is the provider's KeySource: a named key from the home's keys directory, else the
// SSA's own key derived from the masking secret.
func maskKeys(home string, secret []byte) policy.KeySource {
	derived := policy.DerivedKeys(secret)
	return func(ssaID, keyID string) ([]byte, error) {
		if keyID == "" {
			return derived(ssaID, "")
		}
		return readMaskKey(home, keyID)
	}
}

// readMaskKey reads the key named id from home's keys directory.
func readMaskKey(home, id string) ([]byte, error) {
	if !protocol.ValidKeyID(id) {
		return nil, fmt.Errorf("%w: %q is not a key ID (1 to %d lower-case letters, digits and hyphens)", ErrMaskKey, id, protocol.MaxKeyIDLen)
	}
	path := filepath.Join(home, MaskKeysDir, id)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no key %q: write its 64 hex digits to %s and chmod 600 %s", ErrMaskKey, id, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMaskKey, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMaskKey, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrMaskKey, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, open to other users: chmod 600 %s", ErrMaskKey, path, perm, path)
	}
	// 64 hex digits and a line end; a longer file is not a key, and is not read further.
	b, err := io.ReadAll(io.LimitReader(f, 80))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrMaskKey, path, err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%w: %s does not hold 64 hex digits (32 bytes); make one with: (umask 077; openssl rand -hex 32 > %s)", ErrMaskKey, path, path)
	}
	return k, nil
}

// checkOfferKeys refuses an offer that names a masking key this agent does not have: its
// requests would be agreed and then could not be implemented.
func (a *Agent) checkOfferKeys(o *protocol.Offer) error {
	if o.Terms.Policy == nil {
		return nil
	}
	for i, r := range o.Terms.Policy.Masking {
		if r.KeyID == "" {
			continue
		}
		if _, err := readMaskKey(a.home, r.KeyID); err != nil {
			return fmt.Errorf("offer %s: masking[%d] names key %q: %w", o.ID, i, r.KeyID, err)
		}
	}
	return nil
}
