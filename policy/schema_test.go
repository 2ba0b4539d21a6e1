package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/ssanet/ssanet/protocol"
)

// idmefv2Schemas compiles the IDMEFv2 draft schemas of testdata/idmefv2, by the Version
// they pin ("2.D.V04" -> IDMEFv2.2.D.V04.schema.json), with format assertions on.
func idmefv2Schemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "idmefv2", "IDMEFv2.*.schema.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no IDMEFv2 schema in testdata/idmefv2: %v", err)
	}
	out := map[string]*jsonschema.Schema{}
	for _, f := range files {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(readTestdata(t, filepath.Join("idmefv2", filepath.Base(f)))))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		url := "file:///" + filepath.Base(f)
		if err := c.AddResource(url, doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		s, err := c.Compile(url)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "IDMEFv2."), ".schema.json")] = s
	}
	return out
}

// validateIDMEFv2 validates one IDMEFv2 message against the schema of its Version.
func validateIDMEFv2(schemas map[string]*jsonschema.Schema, msg []byte) error {
	var head struct{ Version string }
	if err := json.Unmarshal(msg, &head); err != nil {
		return err
	}
	s, ok := schemas[head.Version]
	if !ok {
		return fmt.Errorf("no schema for Version %q", head.Version)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(msg))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

// upstreamInvalid are the IDMEFv2 samples that do not validate as published (SOURCES.md of
// the shared testdata says why); the test checks that they still do not.
var upstreamInvalid = []string{"idmefv2.invalid.json", "suricata-idmefv2.json"}

// Every masking method, under every scope, leaves every IDMEFv2 sample valid against the
// schema of its draft, and the requester's Verify finds nothing in what the provider wrote.
func TestIDMEFv2MaskingKeepsSchema(t *testing.T) {
	schemas := idmefv2Schemas(t)
	files, err := filepath.Glob(filepath.Join("testdata", "idmefv2", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var samples []string
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasSuffix(name, ".schema.json") {
			continue
		}
		raw := readTestdata(t, filepath.Join("idmefv2", name))
		err := validateIDMEFv2(schemas, raw)
		if slices.Contains(upstreamInvalid, name) {
			if err == nil {
				t.Errorf("%s validates: take it off upstreamInvalid", name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("sample %s is not valid as read: %v", name, err)
		}
		samples = append(samples, name)
	}
	if len(samples) < 4 {
		t.Fatalf("only %d valid samples: %v", len(samples), samples)
	}
	addrFields := []string{"source.ip", "destination.ip", "observer.ip"}
	var rules []protocol.MaskRule
	for _, m := range []string{protocol.MaskTruncate, protocol.MaskCryptoPAn, protocol.MaskHMAC, protocol.MaskRemove} {
		r := protocol.MaskRule{Method: m}
		switch m {
		case protocol.MaskTruncate:
			r.Bits = 8
		case protocol.MaskCryptoPAn, protocol.MaskHMAC:
			r.KeyID = "sample"
		}
		for _, scope := range []string{protocol.ScopeFields, protocol.ScopeAllIP, protocol.ScopePublicIP} {
			r.Scope, r.Fields = scope, nil
			if scope == protocol.ScopeFields {
				r.Fields = addrFields
			}
			rules = append(rules, r)
		}
	}
	// Free text named by field, and an hmac field rule followed by an address scope that
	// must leave the hmac result alone.
	rules = append(rules,
		protocol.MaskRule{Scope: protocol.ScopeFields, Fields: []string{"message"}, Method: protocol.MaskRemove},
		protocol.MaskRule{Scope: protocol.ScopeFields, Fields: []string{"message", "source.user.name", "destination.domain"}, Method: protocol.MaskHMAC},
	)
	// Every field of the view masked by name, with each method that applies to it.
	spec, _ := lookupFormat(protocol.FormatIDMEFv2)
	for _, f := range slices.Sorted(maps.Keys(spec.fields)) {
		if !spec.maskable(f) {
			continue
		}
		rules = append(rules,
			protocol.MaskRule{Scope: protocol.ScopeFields, Fields: []string{f}, Method: protocol.MaskRemove},
			protocol.MaskRule{Scope: protocol.ScopeFields, Fields: []string{f}, Method: protocol.MaskHMAC})
	}
	pols := make([][]protocol.MaskRule, 0, len(rules)+2)
	for _, r := range rules {
		pols = append(pols, []protocol.MaskRule{r})
	}
	pols = append(pols,
		[]protocol.MaskRule{{Scope: protocol.ScopeFields, Fields: addrFields, Method: protocol.MaskHMAC}, {Scope: protocol.ScopeAllIP, Method: protocol.MaskCryptoPAn, KeyID: "sample"}},
		[]protocol.MaskRule{{Scope: protocol.ScopeFields, Fields: []string{"source.ip"}, Method: protocol.MaskRemove}, {Scope: protocol.ScopeAllIP, Method: protocol.MaskTruncate, Bits: 16}},
	)
	for _, name := range samples {
		raw := readTestdata(t, filepath.Join("idmefv2", name))
		for _, pol := range pols {
			t.Run(fmt.Sprintf("%s/%s", name, ruleName(pol)), func(t *testing.T) {
				p := mustCompile(t, ssaFor(&protocol.Policy{Masking: pol}, protocol.FormatIDMEFv2))
				out, err := Enforce(p, protocol.FormatIDMEFv2, raw)
				if err != nil {
					t.Fatal(err)
				}
				if err := validateIDMEFv2(schemas, out); err != nil {
					t.Errorf("refined record is not valid: %v\nout: %s", err, out)
				}
				if f := Verify(p, protocol.FormatIDMEFv2, out); len(f) != 0 {
					t.Errorf("Verify: %v\nout: %s", f, out)
				}
			})
		}
	}
}

func ruleName(pol []protocol.MaskRule) string {
	var parts []string
	for _, r := range pol {
		s := r.Scope + "-" + r.Method
		if len(r.Fields) > 0 {
			s += "-" + strings.Join(r.Fields, "+")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// What remove and hmac leave in IDMEFv2 address fields and free text.
func TestIDMEFv2AddressFields(t *testing.T) {
	raw := readTestdata(t, "idmefv2/ssh-bruteforce-idmefv2.json")
	type msg struct {
		Description string
		Analyzer    struct{ IP *string }
		Sensor      []struct{ IP *string }
		Source      []struct {
			IP   *string
			Note string
		}
		Target []struct{ IP *string }
	}
	refine := func(t *testing.T, rules ...protocol.MaskRule) msg {
		t.Helper()
		p := mustCompile(t, ssaFor(&protocol.Policy{Masking: rules}, protocol.FormatIDMEFv2))
		out, err := Enforce(p, protocol.FormatIDMEFv2, raw)
		if err != nil {
			t.Fatal(err)
		}
		var m msg
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Run("remove", func(t *testing.T) {
		m := refine(t, protocol.MaskRule{Scope: protocol.ScopeAllIP, Method: protocol.MaskRemove})
		if want := "SSH brute force from (removed) and (removed) against (removed)"; m.Description != want {
			t.Errorf("Description %q, want %q", m.Description, want)
		}
		if m.Source[0].Note != "also seen from (removed)" {
			t.Errorf("Source Note %q", m.Source[0].Note)
		}
		if m.Source[0].IP != nil || m.Source[1].IP != nil || m.Target[0].IP != nil {
			t.Errorf("optional IP members kept: %s %s %s", str(m.Source[0].IP), str(m.Source[1].IP), str(m.Target[0].IP))
		}
		// Analyzer.IP and Sensor.IP are required by the V04 schema.
		if m.Analyzer.IP == nil || *m.Analyzer.IP != "0.0.0.0" || m.Sensor[0].IP == nil || *m.Sensor[0].IP != "::" {
			t.Errorf("required IP members: Analyzer %s Sensor %s, want 0.0.0.0 and ::", str(m.Analyzer.IP), str(m.Sensor[0].IP))
		}
	})
	t.Run("hmac", func(t *testing.T) {
		m := refine(t, protocol.MaskRule{Scope: protocol.ScopePublicIP, Method: protocol.MaskHMAC, KeyID: "sample"})
		a, err := netip.ParseAddr(str(m.Source[0].IP))
		if err != nil || !netip.MustParsePrefix("2001:db8::/32").Contains(a) {
			t.Fatalf("Source IP %q is not an address of 2001:db8::/32", str(m.Source[0].IP))
		}
		// The address and the token in the text name the same host.
		b := a.As16()
		tok := fmt.Sprintf("%x", b[4:])
		if !strings.Contains(m.Description, "from "+tok) || !strings.Contains(m.Description, "against 192.0.2.10") {
			t.Errorf("Description %q does not hold the token %s… of Source IP %s", m.Description, tok, a)
		}
		if str(m.Analyzer.IP) != "192.0.2.62" {
			t.Errorf("a non-public Analyzer IP was masked: %s", str(m.Analyzer.IP))
		}
	})
}

func str(p *string) string {
	if p == nil {
		return "(absent)"
	}
	return *p
}

// IDMEF as Prelude writes it, without a namespace, is refined and verified, and the output
// has no namespace either; a namespaced message keeps its own.
func TestIDMEFWithoutNamespace(t *testing.T) {
	pol := &protocol.Policy{
		Masking:   []protocol.MaskRule{{Scope: protocol.ScopePublicIP, Method: protocol.MaskTruncate, Bits: 8}},
		Filtering: []protocol.Filter{{Expr: `r["source.user.name"] == "mallory"`}},
	}
	p := mustCompile(t, ssaFor(pol, protocol.FormatIDMEF))
	for _, name := range []string{"rfc4765-portscan.xml", "secef-gateway-test-alert.xml"} {
		t.Run(name, func(t *testing.T) {
			withNS := readTestdata(t, "idmef/"+name)
			plain := stripIDMEFNamespace(withNS)
			if bytes.Contains(plain, []byte("iana.org/idmef")) || !bytes.Contains(plain, []byte("<IDMEF-Message")) {
				t.Fatalf("namespace not stripped:\n%s", plain)
			}
			user := name == "rfc4765-portscan.xml" // only this one has the user the filter wants
			for _, in := range [][]byte{withNS, plain, append(append(slices.Clone(plain), '\n'), plain...)} {
				out, st := runAll(t, p, protocol.FormatIDMEF, in)
				if st.Malformed != 0 {
					t.Fatalf("stats %+v", st)
				}
				if !user {
					if st.Refined != 0 || st.Filtered+st.FilterErrors != st.Records {
						t.Errorf("stats %+v, want the record filtered out", st)
					}
					continue
				}
				if want := int64(bytes.Count(in, []byte("IDMEF-Message "))); st.Refined != want {
					t.Fatalf("stats %+v, want %d refined", st, want)
				}
				if f := VerifyStreamBytes(t, p, protocol.FormatIDMEF, out); len(f) != 0 {
					t.Errorf("Verify: %v", f)
				}
				if got, want := bytes.Contains(out, []byte(`xmlns:idmef="http://iana.org/idmef"`)), bytes.Equal(in, withNS); got != want || bytes.Contains(out, []byte("iana.org")) != want {
					t.Errorf("output has a namespace: %v, input had: %v\n%s", got, want, out)
				}
				if bytes.Contains(out, []byte("81.2.69.192")) || !bytes.Contains(out, []byte("81.2.69.0")) {
					t.Errorf("public address not truncated:\n%s", out)
				}
			}
			if !user {
				// Without the filter, the message is refined as well.
				p := mustCompile(t, ssaFor(&protocol.Policy{Masking: pol.Masking}, protocol.FormatIDMEF))
				out, err := Enforce(p, protocol.FormatIDMEF, plain)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(out, []byte("92.222.9.62")) || bytes.Contains(out, []byte("iana.org/idmef")) {
					t.Errorf("refined:\n%s", out)
				}
				if f := Verify(p, protocol.FormatIDMEF, out); len(f) != 0 {
					t.Errorf("Verify: %v", f)
				}
			}
		})
	}
	p = mustCompile(t, ssaFor(nil, protocol.FormatIDMEF))
	for _, bad := range []string{
		`<IDMEF-Message xmlns="urn:example:other"><Alert/></IDMEF-Message>`,
		`<idmef:IDMEF-Message><idmef:Alert/></idmef:IDMEF-Message>`,
	} {
		if _, err := Enforce(p, protocol.FormatIDMEF, []byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// stripIDMEFNamespace writes an IDMEF message as Prelude's XML plugin does: no namespace
// declaration and no prefix.
func stripIDMEFNamespace(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte(` xmlns:idmef="http://iana.org/idmef"`), nil)
	b = bytes.ReplaceAll(b, []byte(`<idmef:`), []byte(`<`))
	return bytes.ReplaceAll(b, []byte(`</idmef:`), []byte(`</`))
}

// Free text under remove reads as a sentence in every format that has some.
func TestRemoveInFreeText(t *testing.T) {
	tests := []struct {
		format string
		in     string
		want   string
	}{
		{protocol.FormatIDMEFv2, `{"Version":"2.D.V04","ID":"5b0d7a6c-3f1e-4c2a-9d8b-2e4f6a1c0b93","CreateTime":"2024-07-30T18:00:00Z","Analyzer":{"IP":"192.0.2.1","Name":"a"},"Description":"SSH brute force from 81.2.69.192 and 175.16.199.1 against 192.0.2.10"}`,
			`"Description":"SSH brute force from (removed) and (removed) against (removed)"`},
		{protocol.FormatEVE, `{"timestamp":"2024-07-30T18:00:00.000000+0000","event_type":"alert","src_ip":"81.2.69.192","alert":{"signature":"scan from 81.2.69.192 to 10.0.0.1"}}`,
			`{"timestamp":"2024-07-30T18:00:00.000000+0000","event_type":"alert","alert":{"signature":"scan from (removed) to (removed)"}}`},
		{protocol.FormatSyslog, `<34>1 2024-07-21T21:24:00Z host sshd 42 ID1 [meta ip="3.20.210.9"] Failed password for root from 7.124.74.254 port 9039`,
			`[meta ip="(removed)"] Failed password for root from (removed) port 9039`},
		{protocol.FormatIDMEF, string(stripIDMEFNamespace(readTestdata(t, "idmef/rfc4765-portscan.xml"))),
			`<string>scan also seen from (removed) and (removed)</string>`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			p := mustCompile(t, ssaFor(&protocol.Policy{Masking: []protocol.MaskRule{{Scope: protocol.ScopeAllIP, Method: protocol.MaskRemove}}}, tt.format))
			out, err := Enforce(p, tt.format, []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(out, []byte(tt.want)) {
				t.Errorf("got %s\nwant it to hold %s", out, tt.want)
			}
			if f := Verify(p, tt.format, out); len(f) != 0 {
				t.Errorf("Verify: %v", f)
			}
		})
	}
}
