package policy

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// testKey is the 32-byte key of the Crypto-PAn sample vectors.
const testKey = "1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202"

func ssaFor(pol *protocol.Policy, formats ...string) *protocol.SSA {
	s := &protocol.SSA{ID: "ssa-test-0001", Version: 1, Policy: pol}
	for _, f := range formats {
		s.Information = append(s.Information, protocol.Information{Name: f, Type: protocol.TypeAttackDetectionLog, Format: f})
	}
	return s
}

// testKeys is a provider's KeySource: the Crypto-PAn sample key under the key ID "sample",
// and one per-SSA key for every SSA.
func testKeys(_, keyID string) ([]byte, error) {
	switch keyID {
	case "":
		return bytes.Repeat([]byte{7}, 32), nil
	case "sample":
		return hex.DecodeString(testKey)
	}
	return nil, fmt.Errorf("%w: no key named %q", ErrKey, keyID)
}

func mustCompile(t testing.TB, s *protocol.SSA) *SSP {
	t.Helper()
	p, err := Compile(s, testKeys)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runAll streams in through a fresh enforcer and returns the output and stats.
func runAll(t testing.TB, p *SSP, format string, in []byte) ([]byte, Stats) {
	t.Helper()
	e, err := NewEnforcer(p, format, Config{Year: 2024})
	if err != nil {
		t.Fatalf("NewEnforcer: %v", err)
	}
	var out bytes.Buffer
	st, err := e.Run(context.Background(), bytes.NewReader(in), &out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return out.Bytes(), st
}
