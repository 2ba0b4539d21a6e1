package policy

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestSSPHashGolden pins the SSP hash of fixed SSAs: requester and provider compare it, and
// agreements already made carry it in their reports, so it must never change. The agreed
// SSA is the golden one of package protocol (the example request met with the example
// offer); the others exercise every part of the hashed encoding.
func TestSSPHashGolden(t *testing.T) {
	agreed := func(name string) *protocol.SSA {
		t.Helper()
		text, err := os.ReadFile(filepath.Join("..", "protocol", "testdata", "golden", name+".hex"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
		if err != nil {
			t.Fatal(err)
		}
		s, err := protocol.DecodeSSA(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	full := ssaFor(&protocol.Policy{
		Masking: []protocol.MaskRule{
			{Scope: "public-ip", Method: "truncate", Bits: 8},
			{Scope: "fields", Fields: []string{"source.ip", "destination.ip"}, Method: "cryptopan"},
			{Scope: "fields", Fields: []string{"source.user.name"}, Method: "hmac", KeyID: "sample"},
			{Scope: "fields", Fields: []string{"rule.name"}, Method: "remove"},
		},
		Filtering:     []protocol.Filter{{Expr: `r["event.kind"] == "alert"`}, {Expr: `r["source.ip"] != "10.0.0.1"`}},
		Summarization: &protocol.Summarization{GroupBy: "source.ip", RankBy: protocol.RankByCount, TopN: 10, Window: protocol.Duration(3600)},
		Handling:      &protocol.Handling{TLP: protocol.TLPAmberStrict, Retention: protocol.Duration(90 * 86400), Redistribution: "organisation"},
	}, "idmef")
	full.Version = 3
	full.Schedule = protocol.Schedule{Start: 1795435200, End: 1826971200}
	cases := []struct {
		name string
		ssa  *protocol.SSA
		want string
	}{
		{"agreement", agreed("agreement"), "2cacbd3b592e26147a417e624955be2cdf9def407a8bd44058b4e01cf787aded"},
		{"no policy", ssaFor(nil, "eve"), "2631dad5bfa9fb3c24720e4ca0f972a12ed55b172b75dd178bcbea4ee58e76b1"},
		{"every component", full, "5575c60bf85345a23c0814fe084dfa8afa4c824354d0ddf213db293010b7e5d6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, keys := range []KeySource{nil, testKeys} { // requester and provider
				p, err := Compile(tc.ssa, keys)
				if err != nil {
					t.Fatal(err)
				}
				if p.Hash() != tc.want {
					t.Errorf("SSP hash %s, want %s: the SSP encoding changed", p.Hash(), tc.want)
				}
			}
		})
	}
}
