package cti

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// Object is one STIX 2.1 object as JSON has it.
type Object map[string]any

// ID is the object's id.
func (o Object) ID() string { s, _ := o["id"].(string); return s }

// Type is the object's type.
func (o Object) Type() string { s, _ := o["type"].(string); return s }

// Bundle is a STIX 2.1 bundle.
type Bundle struct {
	Type    string   `json:"type"` // "bundle"
	ID      string   `json:"id"`
	Objects []Object `json:"objects"`
}

const (
	// tlpExtension is the OASIS TLP 2.0 extension-definition of the marking-definitions.
	tlpExtension = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d" // TLP 2.0 (OASIS)
	stixTime     = "2006-01-02T15:04:05.000Z"
)

var (
	// ExtensionID is the ID of the ssanet extension-definition whose properties ssa_id and
	// ssp_hash every object mapped from an SSA's records carries.
	ExtensionID = "extension-definition--" + uuid5("ssanet extension ssa")
	// SystemIdentityID is the identity of ssanet, the creator of the extension-definition.
	SystemIdentityID = "identity--" + uuid5("ssanet identity")
	// fixedDate is the creation time of the objects above.
	fixedDate = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func stamp(t time.Time) string { return t.UTC().Format(stixTime) }

// ExtensionDefinition is the ssanet extension-definition object.
func ExtensionDefinition() Object {
	return Object{
		"type": "extension-definition", "spec_version": "2.1", "id": ExtensionID,
		"created_by_ref": SystemIdentityID, "created": stamp(fixedDate), "modified": stamp(fixedDate),
		"name":        "ssanet shared under an SSA",
		"description": "The object was made from records shared under an ITU-T X.1205 Supplement 20 security information sharing agreement (SSA).",
		"schema": "property-extension with two string properties: ssa_id, the ID of the SSA the records were shared under; " +
			"ssp_hash, the lower-case hex SHA-256 of the canonical CBOR of the security information sharing policy (SSP) compiled from it, " +
			"as ssanet computes it.",
		"version": "1.0.0", "extension_types": []string{"property-extension"},
	}
}

// SystemIdentity is ssanet's identity, the creator of the extension-definition.
func SystemIdentity() Object {
	return Object{"type": "identity", "spec_version": "2.1", "id": SystemIdentityID,
		"created": stamp(fixedDate), "modified": stamp(fixedDate), "name": "ssanet", "identity_class": "system"}
}

// TLPMarking returns the TLP 2.0 marking-definition of a label (OASIS
// cti-stix-common-objects, extension-definition-specifications/tlp-2.0), false for none.
func TLPMarking(label string) (Object, bool) {
	id, ok := policy.TLPMarkingID(label)
	if !ok {
		return nil, false
	}
	name := strings.TrimPrefix(label, "TLP:")
	return Object{"type": "marking-definition", "spec_version": "2.1", "id": id,
		"created": "2022-10-01T00:00:00.000Z", "name": "TLP:" + strings.ToUpper(name),
		"extensions": map[string]any{tlpExtension: map[string]any{"extension_type": "property-extension", "tlp_2_0": strings.ToLower(name)}},
	}, true
}

// ProviderIdentityID is the ID of the identity of the provider's organisation.
func (a *Agreement) ProviderIdentityID() string {
	return "identity--" + uuid5("ssanet provider\x00"+a.SSA+"\x00"+a.Organisation())
}

// common marks o as made under the agreement: its TLP marking and the ssanet extension.
func (a *Agreement) common(o Object) Object {
	o["spec_version"] = "2.1"
	if id, ok := policy.TLPMarkingID(a.TLP); ok {
		o["object_marking_refs"] = []string{id}
	}
	o["extensions"] = map[string]any{ExtensionID: map[string]any{"extension_type": "property-extension", "ssa_id": a.SSA, "ssp_hash": a.SSP}}
	return o
}

// sdo marks an SDO or SRO: common, and created by the provider.
func (a *Agreement) sdo(o Object, created time.Time) Object {
	o["created"], o["modified"] = stamp(created), stamp(created)
	o["created_by_ref"] = a.ProviderIdentityID()
	return a.common(o)
}

func (a *Agreement) date() time.Time {
	if a.Date.IsZero() {
		return time.Unix(0, 0)
	}
	return a.Date
}

// ProviderIdentity is the identity of the provider's organisation.
func (a *Agreement) ProviderIdentity() Object {
	o := Object{"type": "identity", "id": a.ProviderIdentityID(), "name": a.Organisation(), "identity_class": "organization",
		"created": stamp(a.date()), "modified": stamp(a.date())}
	var contact []string
	for _, s := range []string{a.Provider.Name, a.Provider.Email, a.Provider.Address, a.Provider.Phone} {
		if s != "" && s != a.Organisation() {
			contact = append(contact, s)
		}
	}
	if len(contact) > 0 {
		o["contact_information"] = strings.Join(contact, "; ")
	}
	if a.Provider.PeerID != "" {
		o["external_references"] = []map[string]any{{"source_name": "libp2p-peer-id", "external_id": a.Provider.PeerID}}
	}
	return a.common(o)
}

// Shared returns the objects every bundle of the agreement holds besides those of its
// records: the TLP marking-definition (if the SSA sets a label), ssanet's identity and the
// provider's identity. The ssanet extension-definition (ExtensionDefinition) is not among
// them: the OASIS bundle schema admits no extension-definition object in a bundle (it takes
// one for a custom object and finds it both an SDO and an SCO), so it is published on its own,
// by the TAXII collection and in the README.
func (a *Agreement) Shared() []Object {
	var out []Object
	if m, ok := TLPMarking(a.TLP); ok {
		out = append(out, m)
	}
	return append(out, SystemIdentity(), a.ProviderIdentity())
}

// STIX returns the STIX objects of one record: an observed-data and its Cyber-observable
// Objects (an artifact holding the record when its view yields none, or it does not parse),
// and, for an alert with a signature (rule.name in the view), an attack-pattern for the
// signature and a sighting of it that points at the observed-data. The objects Shared
// returns are not repeated. The error wraps ErrRecord for a format the engine does not know.
func (a *Agreement) STIX(rec Record) ([]Object, error) {
	p, err := viewOf(rec)
	if err != nil {
		if !knownFormat(rec.Format) {
			return nil, err
		}
		p = &parsed{Record: rec, view: map[string]any{}} // kept whole, as an artifact
	}
	scos := a.observables(p)
	refs := make([]string, len(scos))
	for i, o := range scos {
		refs[i] = o.ID()
	}
	od := a.sdo(Object{"type": "observed-data", "id": "observed-data--" + uuid5(fmt.Sprintf("ssanet observed-data\x00%s\x00%d", a.SSA, rec.Seq)),
		"first_observed": stamp(p.when()), "last_observed": stamp(p.when()), "number_observed": 1, "object_refs": refs,
		"labels": []string{"ssanet:format=" + rec.Format}}, rec.Received)
	if id := p.str("event.id"); id != "" {
		od["external_references"] = []map[string]any{{"source_name": rec.Format, "external_id": id}}
	}
	out := append([]Object{od}, scos...)
	if sig := p.str("rule.name"); sig != "" {
		ap := a.sdo(Object{"type": "attack-pattern", "name": sig,
			"id": "attack-pattern--" + uuid5("ssanet attack-pattern\x00"+a.SSA+"\x00"+rec.Format+"\x00"+p.str("rule.id")+"\x00"+sig)}, a.date())
		ext := map[string]any{"source_name": signatureSource(rec.Format), "description": sig}
		if id := p.str("rule.id"); id != "" {
			ext["external_id"] = id
		}
		ap["external_references"] = []map[string]any{ext}
		if c := p.str("event.category"); c != "" {
			ap["description"] = c
		}
		si := a.sdo(Object{"type": "sighting", "id": "sighting--" + uuid5(fmt.Sprintf("ssanet sighting\x00%s\x00%d", a.SSA, rec.Seq)),
			"first_seen": stamp(p.when()), "last_seen": stamp(p.when()), "count": 1, "sighting_of_ref": ap.ID(),
			"observed_data_refs": []string{od.ID()}, "where_sighted_refs": []string{a.ProviderIdentityID()}}, rec.Received)
		out = append(out, ap, si)
	}
	return out, nil
}

// signatureSource names where a format's signatures come from.
func signatureSource(format string) string {
	if format == protocol.FormatEVE {
		return "suricata"
	}
	return format
}

// Bundle returns one bundle of the shared objects and those of every record, each object
// once; its ID is derived from the SSA and the records' sequence numbers.
func (a *Agreement) Bundle(recs []Record) (*Bundle, error) {
	objs := a.Shared()
	seen := map[string]bool{}
	for _, o := range objs {
		seen[o.ID()] = true
	}
	name := "ssanet bundle\x00" + a.SSA
	for _, r := range recs {
		os, err := a.STIX(r)
		if err != nil {
			return nil, err
		}
		for _, o := range os {
			if !seen[o.ID()] {
				seen[o.ID()] = true
				objs = append(objs, o)
			}
		}
		name += "\x00" + strconv.FormatUint(r.Seq, 10)
	}
	return &Bundle{Type: "bundle", ID: "bundle--" + uuid5(name), Objects: objs}, nil
}

// scoID is the deterministic ID of an SCO of type typ over its ID contributing properties
// (STIX 2.1 §2.9): the UUIDv5 of their JCS (RFC 8785) serialisation. For the objects made
// here, with ASCII keys and no floats, encoding/json without HTML escaping is JCS.
func scoID(typ string, props map[string]any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(props); err != nil {
		panic(err) // strings, integers and maps of them always encode
	}
	return typ + "--" + uuid5(strings.TrimSuffix(b.String(), "\n"))
}

// scoSet collects a record's SCOs, each once.
type scoSet struct {
	a    *Agreement
	objs []Object
}

// add makes an SCO of typ with props, its ID over the contributing properties idProps
// (extensions among them when the type counts it), and returns its ID.
func (s *scoSet) add(typ string, props map[string]any, idProps ...string) string {
	o := s.a.common(Object{"type": typ})
	for k, v := range props {
		o[k] = v
	}
	contrib := map[string]any{}
	for _, k := range idProps {
		if v, ok := o[k]; ok {
			contrib[k] = v
		}
	}
	id := scoID(typ, contrib)
	for _, x := range s.objs {
		if x.ID() == id {
			return id
		}
	}
	o["id"] = id
	s.objs = append(s.objs, o)
	return id
}

// ip adds the address SCO of an address field; "" if the field holds no address.
func (s *scoSet) ip(p *parsed, field string) string {
	pr, ok := s.a.addr(p, field)
	if !ok {
		return ""
	}
	typ := "ipv6-addr"
	if pr.Addr().Is4() {
		typ = "ipv4-addr"
	}
	return s.add(typ, map[string]any{"value": prefixValue(pr)}, "value")
}

func (a *Agreement) observables(p *parsed) []Object {
	s := &scoSet{a: a}
	src, dst := s.ip(p, "source.ip"), s.ip(p, "destination.ip")
	s.ip(p, "observer.ip")
	if src != "" || dst != "" {
		nt := map[string]any{"protocols": protocols(p)}
		for k, f := range map[string]string{"src_ref": src, "dst_ref": dst} {
			if f != "" {
				nt[k] = f
			}
		}
		for k, f := range map[string]string{"src_port": "source.port", "dst_port": "destination.port"} {
			if n, ok := p.num(f); ok && n >= 0 && n <= 65535 {
				nt[k] = n
			}
		}
		for k, f := range map[string]string{"src_byte_count": "source.bytes", "dst_byte_count": "destination.bytes",
			"src_packets": "source.packets", "dst_packets": "destination.packets"} {
			if n, ok := p.num(f); ok && n >= 0 {
				nt[k] = n
			}
		}
		s.add("network-traffic", nt, "start", "end", "src_ref", "dst_ref", "src_port", "dst_port", "protocols", "extensions")
	}
	for _, f := range []string{"url.domain", "dns.question.name", "tls.client.server_name", "source.domain", "destination.domain", "host.name"} {
		v := p.str(f)
		if _, err := netip.ParseAddr(v); err == nil {
			s.ip(p, f)
		} else if isDomain(v) {
			s.add("domain-name", map[string]any{"value": strings.ToLower(strings.TrimSuffix(v, "."))}, "value")
		}
	}
	if u := recordURL(p); u != "" {
		s.add("url", map[string]any{"value": u}, "value")
	}
	for _, f := range []string{"source.user.email", "destination.user.email"} {
		if v := p.str(f); isEmail(v) {
			s.add("email-addr", map[string]any{"value": v}, "value")
		}
	}
	for _, f := range []string{"source.user.name", "destination.user.name"} {
		if v := p.str(f); v != "" {
			s.add("user-account", map[string]any{"account_login": v}, "account_type", "user_id", "account_login")
		}
	}
	if v := p.str("file.name"); v != "" {
		s.add("file", map[string]any{"name": v}, "hashes", "name", "extensions", "parent_directory_ref")
	}
	if len(s.objs) == 0 {
		s.add("artifact", map[string]any{"payload_bin": base64.StdEncoding.EncodeToString(p.Data), "mime_type": mimeType(p.Format)}, "hashes", "payload_bin")
	}
	return s.objs
}

// protocols of a network-traffic: the transport and application protocols, lower case, or
// the address family when the record names none.
func protocols(p *parsed) []string {
	var out []string
	for _, f := range []string{"network.transport", "network.protocol"} {
		if v := strings.ToLower(p.str(f)); isToken(v) && v != "failed" && v != "unknown" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		out = []string{"ipv4"}
		for _, f := range []string{"source.ip", "destination.ip"} {
			if a, err := netip.ParseAddr(p.str(f)); err == nil && a.Unmap().Is6() {
				out = []string{"ipv6"}
			}
		}
	}
	return out
}

func isToken(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != ""
}

// isDomain reports whether s looks like a DNS name with at least two labels.
func isDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func isEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return at > 0 && isDomain(s[at+1:]) && !strings.ContainsAny(s, " \t<>\"")
}

// recordURL is the record's URL, absolute: url.original, or url.domain and the path in
// url.original (Suricata's http.url is a path); "" if it has none.
func recordURL(p *parsed) string {
	orig, dom := p.str("url.original"), p.str("url.domain")
	if orig == "" {
		return ""
	}
	if !strings.Contains(orig, "://") {
		if dom == "" || !strings.HasPrefix(orig, "/") {
			return ""
		}
		scheme := "http"
		if n, _ := p.num("destination.port"); n == 443 {
			scheme = "https"
		}
		orig = scheme + "://" + dom + orig
	}
	u, err := url.Parse(orig)
	if err != nil || u.Host == "" || u.Scheme == "" {
		return ""
	}
	return orig
}

func mimeType(format string) string {
	switch format {
	case protocol.FormatEVE, protocol.FormatIDMEFv2:
		return "application/json"
	case protocol.FormatIDMEF, protocol.FormatIODEF:
		return "application/xml"
	}
	return "text/plain"
}
