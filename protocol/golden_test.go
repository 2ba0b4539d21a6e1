package protocol

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const goldenDir = "testdata/golden"

// goldenCases builds one of each of the seven messages and the agreed SSAs from fixed
// identities (1: requester, 2: provider), a fixed negotiation ID and the fixed time t0. Every
// step is deterministic (Ed25519 signatures included), so the bytes only change when the
// protocol does.
func goldenCases(t testing.TB) map[string][]byte {
	t.Helper()
	cases := map[string][]byte{}
	encode := func(s *SSA) []byte {
		t.Helper()
		b, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	pr := newPair(t)
	req := pr.step(pr.r, Start{exampleRequest(t, pr.now)})
	cases["request"] = req.Send.Bytes()
	pr.deliver(pr.p, req.Send)
	prop, conflicts := Meet(pr.p.Pending(), pr.offer, FromTime(pr.now))
	if conflicts != nil {
		t.Fatalf("meet: %v", conflicts)
	}
	pout := pr.step(pr.p, Propose{prop})
	cases["proposal"] = pout.Send.Bytes()
	pr.deliver(pr.r, pout.Send)
	acc := pr.step(pr.r, Accept{})
	cases["acceptance"] = acc.Send.Bytes()
	conf := pr.deliver(pr.p, acc.Send)
	cases["confirmation"] = conf.Send.Bytes()
	cases["agreement"] = encode(pr.deliver(pr.r, conf.Send).Agreement)

	v2 := pr.p.Agreement().Clone()
	v2.ID = "ssa-test-2"
	v2.Policy.Handling.TLP = TLPRed
	cases["revision"] = pr.step(pr.p, Revise{v2}).Send.Bytes()

	pr = newPair(t)
	pr.approve()
	cancel := pr.step(pr.r, Cancel{})
	cases["cancellation"] = cancel.Send.Bytes()
	cases["annulment"] = encode(pr.deliver(pr.p, cancel.Send).Agreement)

	pr = newPair(t)
	pr.deliver(pr.p, pr.step(pr.r, Start{exampleRequest(t, pr.now)}).Send)
	rej := pr.step(pr.p, Reject{[]Reason{{Code: CodeInformation, Component: "information",
		Requester: "attack-detection-log/eve", Provider: "incident/iodef", Text: "not offered"}}})
	cases["rejection"] = rej.Send.Bytes()
	return cases
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(goldenDir, name+".hex"))
	if err != nil {
		t.Fatalf("%v (run go test ./protocol -run Golden -update to create it)", err)
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		t.Fatalf("%s.hex: %v", name, err)
	}
	return b
}

func writeGolden(t testing.TB, name string, b []byte) {
	t.Helper()
	var sb strings.Builder
	h := hex.EncodeToString(b)
	for len(h) > 64 {
		sb.WriteString(h[:64] + "\n")
		h = h[64:]
	}
	sb.WriteString(h + "\n")
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goldenDir, name+".hex"), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkGolden compares got with the golden file name (rewriting it first under -update) and
// returns the golden bytes.
func checkGolden(t testing.TB, name string, got []byte) []byte {
	t.Helper()
	if *update {
		writeGolden(t, name, got)
	}
	want := readGolden(t, name)
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, golden %d, first difference at byte %d: the wire format changed", name, len(got), len(want), i)
	}
	return want
}

// TestGolden fails when the bytes of a message or of an agreed SSA change: if they do, the
// protocol changed. It also checks that today's code still reads yesterday's bytes.
func TestGolden(t *testing.T) {
	cases := goldenCases(t)
	if len(cases) != len(msgNames)+2 {
		t.Fatalf("%d golden cases, want one per message type and two agreements", len(cases))
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			want := checkGolden(t, name, got)
			switch name {
			case "agreement", "annulment":
				s, err := DecodeSSA(want)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := VerifySSA(s); err != nil {
					t.Fatal(err)
				}
			default:
				env, err := Open(want)
				if err != nil {
					t.Fatal(err)
				}
				if env.Header.Type.String() != name {
					t.Fatalf("golden %s holds a %s", name, env.Header.Type)
				}
			}
		})
	}
}
