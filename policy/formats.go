package policy

import (
	"slices"
	"strings"
	"sync"

	"github.com/ssanet/ssanet/protocol"
)

// Formats lists the information formats the engine enforces.
func Formats() []string {
	return []string{protocol.FormatEVE, protocol.FormatIDMEF, protocol.FormatIDMEFv2, protocol.FormatIODEF, protocol.FormatSyslog}
}

// framing says how records are cut out of a stream.
type framing uint8

const (
	frameLine framing = iota // one record per line
	frameJSON                // a sequence of JSON objects
	frameXML                 // a sequence of XML documents
)

// formatSpec describes one format: its view fields and how to read and write it.
type formatSpec struct {
	name    string
	framing framing
	fields  map[string]kind // the normalised view, related.ip included
	codec   func(year int) codec
}

// fieldMap is a native location -> view field binding with the field's kind.
type fieldMap struct {
	native, field string
	kind          kind
}

func kindsOf(maps []fieldMap, extra map[string]kind) map[string]kind {
	k := map[string]kind{fieldRelatedIP: kindIPList}
	for _, m := range maps {
		k[m.field] = m.kind
	}
	for f, x := range extra {
		k[f] = x
	}
	return k
}

// lookupFormat returns the spec of a format. Specs are built once and never changed.
func lookupFormat(name string) (*formatSpec, bool) {
	spec, ok := formatSpecs()[name]
	return spec, ok
}

var formatSpecs = sync.OnceValue(func() map[string]*formatSpec {
	specs := map[string]*formatSpec{}
	for _, name := range Formats() {
		if spec, ok := newFormatSpec(name); ok {
			specs[name] = spec
		}
	}
	return specs
})

func newFormatSpec(name string) (*formatSpec, bool) {
	switch name {
	case protocol.FormatEVE:
		return jsonFormat(name, eveMap(), nil, []string{"timestamp", "event_type"}, "", ""), true
	case protocol.FormatIDMEFv2:
		return jsonFormat(name, idmefv2Map(), idmefv2Slots(), []string{"Version", "ID", "CreateTime", "Analyzer"}, "Version", "2."), true
	case protocol.FormatIDMEF:
		return xmlFormat(name, &xmlCodec{root: "IDMEF-Message", namespaces: []string{"http://iana.org/idmef", ""}, single: []string{"Alert", "Heartbeat"}}, idmefMap()), true
	case protocol.FormatIODEF:
		return xmlFormat(name, &xmlCodec{root: "IODEF-Document", namespaces: []string{"urn:ietf:params:xml:ns:iodef-2.0", "urn:ietf:params:xml:ns:iodef-1.0"}, single: []string{"Incident"}}, iodefMap()), true
	case protocol.FormatSyslog:
		return &formatSpec{name: name, framing: frameLine, fields: map[string]kind{
			fieldRelatedIP:             kindIPList,
			fieldTimestamp:             kindTime,
			"host.name":                kindString,
			"process.name":             kindString,
			"process.pid":              kindString,
			"event.code":               kindString,
			"message":                  kindString,
			"log.syslog.priority":      kindInt,
			"log.syslog.facility.code": kindInt,
			"log.syslog.severity.code": kindInt,
		}, codec: func(year int) codec { return &syslogCodec{year: year} }}, true
	}
	return nil, false
}

func jsonFormat(name string, maps []fieldMap, slots map[string]slot, required []string, version, prefix string) *formatSpec {
	paths := make(map[string]string, len(maps))
	for _, m := range maps {
		paths[m.native] = m.field
	}
	fr := frameJSON
	if name == protocol.FormatEVE {
		fr = frameLine
	}
	tree := newPathTree(paths, slots)
	return &formatSpec{name: name, framing: fr, fields: kindsOf(maps, nil), codec: func(int) codec {
		return &jsonCodec{paths: paths, shared: tree, required: required, version: version, versionPrefix: prefix}
	}}
}

func xmlFormat(name string, c *xmlCodec, maps []fieldMap) *formatSpec {
	for _, s := range c.single {
		c.kinds = append(c.kinds, strings.ToLower(s))
	}
	for _, m := range maps {
		c.maps = append(c.maps, xpath(m.field, m.native))
	}
	return &formatSpec{name: name, framing: frameXML, fields: kindsOf(maps, map[string]kind{"event.kind": kindString}),
		codec: func(int) codec {
			own := *c // the spec's codec is shared; its scanner is not
			return &own
		}}
}

// maskable reports whether a field names locations of the record (derived fields do not).
func (f *formatSpec) maskable(field string) bool {
	k, ok := f.fields[field]
	if !ok || k == kindIPList || field == "event.kind" && f.framing == frameXML {
		return false
	}
	if f.name == protocol.FormatSyslog {
		return slices.Contains([]string{"host.name", "process.name", "process.pid", "event.code", "message"}, field)
	}
	return true
}

// The view of each format. The package documentation lists the same table, and
// TestDocFields checks that it does.

func eveMap() []fieldMap {
	return []fieldMap{
		{"timestamp", fieldTimestamp, kindTime},
		{"event_type", "event.kind", kindString},
		{"src_ip", "source.ip", kindIP},
		{"src_port", "source.port", kindInt},
		{"dest_ip", "destination.ip", kindIP},
		{"dest_port", "destination.port", kindInt},
		{"proto", "network.transport", kindString},
		{"app_proto", "network.protocol", kindString},
		{"in_iface", "observer.ingress.interface.name", kindString},
		{"host", "observer.name", kindString},
		{"alert.signature", "rule.name", kindString},
		{"alert.signature_id", "rule.id", kindInt},
		{"alert.category", "event.category", kindString},
		{"alert.severity", "event.severity", kindInt},
		{"alert.action", "event.action", kindString},
		{"flow.bytes_toserver", "source.bytes", kindInt},
		{"flow.bytes_toclient", "destination.bytes", kindInt},
		{"flow.pkts_toserver", "source.packets", kindInt},
		{"flow.pkts_toclient", "destination.packets", kindInt},
		{"http.hostname", "url.domain", kindString},
		{"http.url", "url.original", kindString},
		{"http.http_user_agent", "user_agent.original", kindString},
		{"http.http_method", "http.request.method", kindString},
		{"http.status", "http.response.status_code", kindInt},
		{"dns.rrname", "dns.question.name", kindString},
		{"tls.sni", "tls.client.server_name", kindString},
	}
}

func idmefv2Map() []fieldMap {
	return []fieldMap{
		{"CreateTime", fieldTimestamp, kindTime},
		{"ID", "event.id", kindString},
		{"Category.*", "event.category", kindString},
		{"Description", "message", kindString},
		{"Priority", "event.severity", kindString},
		{"Analyzer.Name", "observer.name", kindString},
		{"Analyzer.IP", "observer.ip", kindIP},
		{"Analyzer.Hostname", "observer.hostname", kindString},
		{"Source.*.IP", "source.ip", kindIP},
		{"Source.*.Hostname", "source.domain", kindString},
		{"Source.*.Port.*", "source.port", kindInt},
		{"Source.*.User", "source.user.name", kindString},
		{"Source.*.Email", "source.user.email", kindString},
		{"Target.*.IP", "destination.ip", kindIP},
		{"Target.*.Hostname", "destination.domain", kindString},
		{"Target.*.Port.*", "destination.port", kindInt},
		{"Target.*.User", "destination.user.name", kindString},
		{"Target.*.Email", "destination.user.email", kindString},
		{"Target.*.Service", "service.name", kindString},
	}
}

// idmefv2Slots are the members of the view the IDMEFv2 schemas (drafts V04 to V06) give a
// type masking must keep: addresses (ipType), the message ID (uuidType), the creation time,
// e-mail addresses (format email), ports (integers), enumerations and the required names.
// Analyzer.IP and Sensor.IP are required by V04 and V05.
func idmefv2Slots() map[string]slot {
	return map[string]slot{
		"ID":              slotUUID,
		"CreateTime":      slotTime,
		"Category.*":      slotEnum,
		"Priority":        slotEnum,
		"Analyzer.IP":     slotAddrRequired,
		"Analyzer.Name":   slotRequired,
		"Sensor.*.IP":     slotAddrRequired,
		"Sensor.*.Name":   slotRequired,
		"Source.*.IP":     slotAddr,
		"Source.*.Email":  slotEmail,
		"Source.*.Port.*": slotPort,
		"Target.*.IP":     slotAddr,
		"Target.*.Email":  slotEmail,
		"Target.*.Port.*": slotPort,
	}
}

func idmefMap() []fieldMap {
	return []fieldMap{
		{"Alert@messageid", "event.id", kindString},
		{"Alert/CreateTime", fieldTimestamp, kindTime},
		{"Heartbeat/CreateTime", fieldTimestamp, kindTime},
		{"Alert/Classification@text", "rule.name", kindString},
		{"Alert/Classification@ident", "rule.id", kindString},
		{"Alert/Assessment/Impact@severity", "event.severity", kindString},
		{"Alert/Assessment/Impact@type", "event.category", kindString},
		{"Alert/Analyzer@name", "observer.name", kindString},
		{"Alert/Analyzer/Node/name", "observer.hostname", kindString},
		{"Alert/Analyzer/Node/Address/address", "observer.ip", kindIP},
		{"Alert/Source/Node/Address/address", "source.ip", kindIP},
		{"Alert/Source/Node/name", "source.domain", kindString},
		{"Alert/Source/Service/port", "source.port", kindInt},
		{"Alert/Source/Service@iana_protocol_name", "network.transport", kindString},
		{"Alert/Source/User/UserId/name", "source.user.name", kindString},
		{"Alert/Source/Process/name", "source.process.name", kindString},
		{"Alert/Target/Node/Address/address", "destination.ip", kindIP},
		{"Alert/Target/Node/name", "destination.domain", kindString},
		{"Alert/Target/Service/port", "destination.port", kindInt},
		{"Alert/Target/Service@iana_protocol_name", "network.transport", kindString},
		{"Alert/Target/User/UserId/name", "destination.user.name", kindString},
		{"Alert/Target/Process/name", "process.name", kindString},
		{"Alert/Target/File/name", "file.name", kindString},
	}
}

// The systems of an IODEF flow, as the package documentation abbreviates them.
const (
	iodefSource = "Incident/EventData/Flow/System[category=source]"
	iodefTarget = "Incident/EventData/Flow/System[category=target]"
)

func iodefMap() []fieldMap {
	const src, dst = iodefSource, iodefTarget
	return []fieldMap{
		{"Incident/IncidentID", "event.id", kindString},
		{"Incident@purpose", "event.action", kindString},
		{"Incident/DetectTime", fieldTimestamp, kindTime},
		{"Incident/StartTime", fieldTimestamp, kindTime},
		{"Incident/ReportTime", fieldTimestamp, kindTime},
		{"Incident/GenerationTime", fieldTimestamp, kindTime},
		{"Incident/Description", "message", kindString},
		{"Incident/Assessment/SystemImpact@severity", "event.severity", kindString},
		{"Incident/Assessment/SystemImpact@type", "event.category", kindString},
		{"Incident/Assessment/Impact@severity", "event.severity", kindString},
		{"Incident/Assessment/Impact@type", "event.category", kindString},
		{"Incident/Method/Reference/ReferenceName", "rule.name", kindString},
		{src + "/Node/Address", "source.ip", kindIP},
		{src + "/Node/DomainData/Name", "source.domain", kindString},
		{src + "/Node/NodeName", "source.domain", kindString},
		{src + "/Service/Port", "source.port", kindInt},
		{src + "/Service@ip-protocol", "network.transport", kindString},
		{src + "/Service@ip_protocol", "network.transport", kindString},
		{dst + "/Node/Address", "destination.ip", kindIP},
		{dst + "/Node/DomainData/Name", "destination.domain", kindString},
		{dst + "/Node/NodeName", "destination.domain", kindString},
		{dst + "/Service/Port", "destination.port", kindInt},
		{dst + "/Service@ip-protocol", "network.transport", kindString},
		{dst + "/Service@ip_protocol", "network.transport", kindString},
		{"Incident/Contact/ContactName", "organization.name", kindString},
		{"Incident/Contact/Email/EmailTo", "organization.email", kindString},
	}
}
