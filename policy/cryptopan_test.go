package policy

import (
	"bufio"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCryptoPAnVectors reproduces the reference pairs of both vector files.
func TestCryptoPAnVectors(t *testing.T) {
	for _, name := range []string{"cryptopan-sample-ipv4.txt", "cryptopan-ipv6-yawning.txt"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "cryptopan", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			sc.Scan()
			key, err := hex.DecodeString(strings.TrimSpace(sc.Text()))
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewCryptoPAn(key)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for sc.Scan() {
				raw, want, ok := strings.Cut(strings.TrimSpace(sc.Text()), "\t")
				if !ok {
					continue
				}
				if got := c.Anonymize(netip.MustParseAddr(raw)); got != netip.MustParseAddr(want) {
					t.Errorf("Anonymize(%s) = %s, want %s", raw, got, want)
				}
				n++
			}
			if n < 5 {
				t.Fatalf("only %d vectors read", n)
			}
		})
	}
}

func commonPrefix(a, b [16]byte, bits int) int {
	for i := range bits {
		if a[i/8]>>(7-i%8)&1 != b[i/8]>>(7-i%8)&1 {
			return i
		}
	}
	return bits
}

// TestCryptoPAnPrefixPreserving checks on seeded random pairs that two addresses sharing
// exactly k leading bits map to addresses sharing exactly k leading bits.
func TestCryptoPAnPrefixPreserving(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(r.Uint32())
	}
	c, _ := NewCryptoPAn(key)
	for i := range 2000 {
		v6 := i%2 == 1
		var a, b [16]byte
		for j := range a {
			a[j] = byte(r.Uint32())
		}
		b = a
		bits := 32
		if v6 {
			bits = 128
		}
		k := r.IntN(bits)
		b[k/8] ^= 0x80 >> (k % 8) // first difference at bit k
		for j := k + 1; j < bits; j++ {
			if r.IntN(2) == 0 {
				b[j/8] ^= 0x80 >> (j % 8)
			}
		}
		mk := func(x [16]byte) netip.Addr {
			if v6 {
				return netip.AddrFrom16(x)
			}
			return netip.AddrFrom4([4]byte(x[:4]))
		}
		to16 := func(x netip.Addr) [16]byte {
			if v6 {
				return x.As16()
			}
			var o [16]byte
			f := x.As4()
			copy(o[:], f[:])
			return o
		}
		ea, eb := to16(c.Anonymize(mk(a))), to16(c.Anonymize(mk(b)))
		if got := commonPrefix(ea, eb, bits); got != k {
			t.Fatalf("inputs share %d bits, outputs share %d (%s, %s)", k, got, mk(a), mk(b))
		}
	}
}
