package policy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// randAddr returns a random address, public about half of the time.
func randAddr(r *rand.Rand) netip.Addr {
	switch r.IntN(6) {
	case 0:
		return netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	case 1:
		return netip.AddrFrom4([4]byte{192, 168, byte(r.Uint32()), byte(r.Uint32())})
	case 2:
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		b[0] = 0x20 | b[0]&0x1f // 2000::/3
		b[1] |= 0x10            // keep out of 2001::/23 and 2002::/16
		return netip.AddrFrom16(b)
	default:
		return netip.AddrFrom4([4]byte{byte(1 + r.IntN(9)), byte(r.Uint32()), byte(r.Uint32()), byte(1 + r.IntN(254))})
	}
}

// genRecord writes a record of format holding random addresses in view fields and inside
// free text; it returns the record and the addresses it holds.
func genRecord(r *rand.Rand, format string) ([]byte, []netip.Addr) {
	var as []netip.Addr
	a := func() string { x := randAddr(r); as = append(as, x); return x.String() }
	ts := fmt.Sprintf("2024-07-%02dT%02d:%02d:00", 1+r.IntN(28), r.IntN(24), r.IntN(60))
	switch format {
	case "eve":
		return fmt.Appendf(nil, `{"timestamp":"%s.000000+0000","event_type":"alert","src_ip":"%s","src_port":%d,"dest_ip":"%s","dest_port":443,"proto":"TCP","alert":{"signature":"scan from %s, relayed by %s","severity":%d},"http":{"hostname":"%s","url":"\/x?ip=%s"},"flow":{"bytes_toserver":%d},"k\u002e%s":["%s"]}`,
			ts, a(), r.IntN(65536), a(), a(), a(), 1+r.IntN(3), a(), a(), r.IntN(1e6), a(), strings.ReplaceAll(a(), ".", `\u002e`)), as
	case "idmefv2":
		return fmt.Appendf(nil, `{"Version":"2.D.V06","ID":"x","CreateTime":"%sZ","Description":"seen %s","Analyzer":{"IP":"%s","Name":"n"},"Source":[{"IP":"%s","Port":[%d],"User":"u%d"}],"Target":[{"IP":"%s"}]}`,
			ts, a(), a(), a(), 1+r.IntN(65535), r.IntN(99), a()), as
	case "idmef":
		return fmt.Appendf(nil, `<?xml version="1.0"?><!-- from %s --><IDMEF-Message xmlns="http://iana.org/idmef"><Alert messageid="m"><CreateTime>%sZ</CreateTime><Source><Node><Address><address>%s</address></Address></Node><User><UserId><name>bob</name></UserId></User></Source><Target><Node><Address><address>%s</address></Address></Node></Target><Classification text="x %s"/><AdditionalData type="string" meaning="%s"><string>{"ip"=&gt;"%s"}</string></AdditionalData><X y="%s"/></Alert></IDMEF-Message>`,
			a(), ts, a(), a(), a(), a(), a(), a()), as
	case "iodef":
		return fmt.Appendf(nil, `<IODEF-Document version="2.00" xmlns="urn:ietf:params:xml:ns:iodef-2.0"><Incident purpose="reporting"><IncidentID name="c">1</IncidentID><DetectTime>%sZ</DetectTime><EventData><Flow><System category="source"><Node><Address category="ipv4-addr">%s</Address></Node><Service ip-protocol="6"><Port>%d</Port></Service></System><System category="target"><Node><Address category="ipv6-addr">%s</Address></Node></System></Flow></EventData><AdditionalData dtype="string">%s,%s</AdditionalData></Incident></IODEF-Document>`,
			ts, a(), r.IntN(65536), a(), a(), a()), as
	default:
		if r.IntN(2) == 0 {
			return fmt.Appendf(nil, `<34>1 %sZ %s sshd 42 ID1 [meta ip="%s"] Failed password for root from %s port %d`, ts, a(), a(), a(), r.IntN(65536)), as
		}
		return fmt.Appendf(nil, `<38>Jul %2d %02d:%02d:00 %s sshd[7]: Failed password from %s via %s`, 1+r.IntN(28), r.IntN(24), r.IntN(60), a(), a(), a()), as
	}
}

func randPolicy(r *rand.Rand, format string) *protocol.Policy {
	p := &protocol.Policy{}
	switch r.IntN(4) {
	case 0:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: uint8(1 + r.IntN(64))})
	case 1:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskCryptoPAn},
			protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8})
	case 2:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskRemove})
	case 3:
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskHMAC})
	}
	if format != "syslog" && r.IntN(2) == 0 {
		p.Masking = append(p.Masking, protocol.MaskRule{Scope: protocol.ScopeFields, Fields: []string{"source.ip"}, Method: protocol.MaskHMAC})
	}
	if r.IntN(3) == 0 {
		p.Filtering = append(p.Filtering, protocol.Filter{Expr: `size(r["related.ip"]) > 0`})
	}
	return p
}

// TestPropertyEnforceVerify: whatever the record and the policy, what the enforcer emits
// passes Verify, and under a public-ip truncate rule no public address keeps its low bits.
func TestPropertyEnforceVerify(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for i := range 1500 {
		format := Formats()[i%len(Formats())]
		rec, addrs := genRecord(r, format)
		pol := randPolicy(r, format)
		p := mustCompile(t, ssaFor(pol, format))
		e, err := NewEnforcer(p, format, Config{Year: 2024})
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.Refine(nil, rec)
		if err != nil {
			t.Fatalf("%s record %d: %v\n%s", format, i, err, rec)
		}
		if len(out) == 0 {
			continue
		}
		out = bytes.TrimSuffix(out, []byte("\n"))
		if f := Verify(p, format, out); len(f) != 0 {
			t.Fatalf("%s record %d, policy %+v: %v\nin:  %s\nout: %s", format, i, pol.Masking, f, rec, out)
		}
		trunc := 0
		for _, m := range pol.Masking {
			if m.Scope == protocol.ScopePublicIP && m.Method == protocol.MaskTruncate {
				trunc = int(m.Bits)
			}
		}
		for _, a := range addrs {
			if !IsPublic(a) || trunc == 0 && len(pol.Masking) == 0 {
				continue
			}
			if Truncate(a, max(trunc, 1)) != a && bytes.Contains(out, []byte(a.String())) {
				t.Fatalf("%s record %d: public address %s survived\nout: %s", format, i, a, out)
			}
		}
	}
}
