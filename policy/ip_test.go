package policy

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

func TestFindIPs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"1.2.3.4", []string{"1.2.3.4"}},
		{"src=1.2.3.4:80 dst=[2001:db8::1]:443", []string{"1.2.3.4", "2001:db8::1"}},
		{`"ipaddress"=>"92.222.9.62"}`, []string{"92.222.9.62"}},
		{"host1.2.3.4", []string{"1.2.3.4"}},
		{"at 10.0.0.1.", []string{"10.0.0.1"}},
		{"oid 1.3.6.1.4.1.2021 version 10.0.14393", nil},
		{"Chrome/67.0.3396.99", nil},
		{"256.1.1.1 1.2.3", nil},
		{"192.168.001.010", []string{"192.168.1.10"}},
		{"2018-07-05T15:01:09.820360-0400", nil},
		{"10:52:12 and 00:03:2d:3f:e5:63", nil},
		{"std::string", nil},
		{"id:2001:db8::1 fe80::1%eth0", []string{"2001:db8::1", "fe80::1"}},
		{"::ffff:1.2.3.4", []string{"::ffff:1.2.3.4"}},
		{"addr 2a02:c7f:1234::7.", []string{"2a02:c7f:1234::7"}},
		{"::1", []string{"::1"}},
		{"fp 1:2:3:4:5:6:7:8:9:a:b:c:d:e:f", []string{"8:9:a:b:c:d:e:f"}},
		{"fp 0:1:2:3:4:5:6:7:8:9:a:b:c:d:e:f", nil},
		{"mac 00:1b:17:00:01:18 and 1:2:3:4:5:6:10.0.0.1", []string{"1:2:3:4:5:6:a00:1"}},
		{"1.2.3.4..5.6.7.8", []string{"1.2.3.4", "5.6.7.8"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got []string
			for _, sp := range findIPs(nil, tt.in) {
				got = append(got, sp.addr.String())
				if a, err := netip.ParseAddr(tt.in[sp.start:sp.end]); err == nil && a != sp.addr {
					t.Errorf("span %q does not hold %s", tt.in[sp.start:sp.end], sp.addr)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("findIPs(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestIsPublic(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"1.1.1.1", true}, {"175.16.199.1", true}, {"81.2.69.192", true}, {"92.222.9.62", true},
		{"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.86.85", false}, {"127.0.0.1", false},
		{"100.64.0.1", false}, {"169.254.1.1", false}, {"192.0.2.1", false}, {"198.51.100.7", false},
		{"203.0.113.9", false}, {"224.0.0.1", false}, {"255.255.255.255", false}, {"0.0.0.0", false},
		{"2a02:c7f:1234::7", true}, {"2001:4860::8888", true}, {"2001:db8::1", false}, {"fe80::1", false},
		{"::1", false}, {"fc00::1", false}, {"ff02::1", false}, {"::ffff:1.1.1.1", true}, {"::ffff:10.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := IsPublic(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("IsPublic(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		addr string
		bits int
		want string
	}{
		{"175.16.199.1", 8, "175.16.199.0"},
		{"175.16.199.1", 16, "175.16.0.0"},
		{"175.16.199.1", 32, "0.0.0.0"},
		{"175.16.199.1", 128, "0.0.0.0"},
		{"2a02:c7f:1234::7", 8, "2a02:c7f:1234::"},
		{"2a02:c7f:1234::1234", 8, "2a02:c7f:1234::1200"},
		{"2a02:c7f:1234:5678:9abc:def0:1234:5678", 32, "2a02:c7f:1234:5678:9abc:def0::"},
		{"2a02:c7f:1234:5678:9abc:def0:1234:5678", 64, "2a02:c7f:1234:5678::"},
		{"::ffff:1.2.3.4", 8, "::ffff:1.2.3.0"},
	}
	for _, tt := range tests {
		if got := Truncate(netip.MustParseAddr(tt.addr), tt.bits); got.String() != tt.want {
			t.Errorf("Truncate(%s, %d) = %s, want %s", tt.addr, tt.bits, got, tt.want)
		}
	}
}

func FuzzFindIPs(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "2001:db8::1", "::ffff:1.2.3.4:80", "a:b:c:d:e:f:1:2:3", "1.2.3.4.5", ":::::", "[::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		last := 0
		for _, sp := range findIPs(nil, s) {
			if sp.start < last || sp.end <= sp.start || sp.end > len(s) {
				t.Fatalf("bad span %+v in %q", sp, s)
			}
			last = sp.end
		}
	})
}

// TestParseV6 checks that parseV6 accepts exactly the IPv6 literals netip.ParseAddr does
// (without zones, which no run of address characters holds), on hand-picked cases and on
// random strings of the characters findIPs runs are made of, and that it does not allocate.
func TestParseV6(t *testing.T) {
	cases := []string{
		"::", "::1", "1::", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4",
		"::1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "1::2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
		"00:03:2d:3f:e5:63", "12345::1", "1:::2", "1::2::3", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:", "::1.2.3.04",
		"::1.2.3", "::1.2.3.4.5", "1.2::3", "1:2:3:4:5:6:7:1.2.3.4", "::256.1.1.1", "fe80::1:2.3.4.5", "::1.2.3.4:5",
		"aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd", "::ffff", "FFFF::ABCD", "1:2:3:4:5::1.2.3.4",
	}
	const alphabet = "0123456789abcdefABCDEF.::::"
	r := uint64(1)
	for range 200000 {
		n := 0
		r = r*6364136223846793005 + 1442695040888963407
		n = 2 + int(r>>33)%40
		b := make([]byte, n)
		for i := range b {
			r = r*6364136223846793005 + 1442695040888963407
			b[i] = alphabet[int(r>>33)%len(alphabet)]
		}
		cases = append(cases, string(b))
	}
	accepted := 0
	for _, s := range cases {
		want, err := netip.ParseAddr(s)
		wantOK := err == nil && want.Is6()
		got, ok := parseV6(s)
		if ok != wantOK || ok && got != want {
			t.Errorf("parseV6(%q) = %v, %v; netip: %v, %v", s, got, ok, want, err)
		}
		if gotb, okb := parseV6([]byte(s)); okb != ok || gotb != got {
			t.Errorf("parseV6([]byte(%q)) = %v, %v, from a string %v, %v", s, gotb, okb, got, ok)
		}
		if ok {
			accepted++
		}
	}
	if accepted < 20 {
		t.Errorf("only %d cases are addresses: the random ones test little", accepted)
	}
	fields := bytes.Fields([]byte("aa:bb:cc:dd:ee:ff 2001:db8::1 1:2:3:4:5:6:7:8:9 1::2::3"))
	if n := testing.AllocsPerRun(100, func() {
		for _, s := range fields {
			parseV6(s)
		}
	}); n != 0 {
		t.Errorf("parseV6 allocates %v times", n)
	}
}

// FuzzParseV6: parseV6 accepts exactly what netip.ParseAddr accepts as an IPv6 address
// without a zone, as the same address (an address it missed would go unmasked).
func FuzzParseV6(f *testing.F) {
	for _, s := range []string{"::", "2001:db8::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7:8", "fe80::1:2.3.4.5", "1::2::3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := netip.ParseAddr(s)
		wantOK := err == nil && want.Is6() && want.Zone() == ""
		if got, ok := parseV6(s); ok != wantOK || ok && got != want {
			t.Fatalf("parseV6(%q) = %v, %v; netip: %v, %v", s, got, ok, want, err)
		}
	})
}
