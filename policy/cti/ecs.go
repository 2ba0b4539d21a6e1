package cti

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// ECSVersion is the version of the Elastic Common Schema the documents follow: every field
// they use is defined in it with the type they give it.
const ECSVersion = "8.17.0"

// ecsKind is how a view value becomes an ECS value.
type ecsKind uint8

const (
	ecsKeyword ecsKind = iota // a string
	ecsLong                   // an integer; a string that does not parse as one is left out
	ecsIP                     // an address; anything else is left out
	ecsIPs                    // a list of addresses
	ecsLower                  // a string, lower case (network.transport, network.protocol)
)

// ecsFromView lists the view fields an ECS document takes as they are (under the same name)
// and how. The view's other fields are mapped by ECS itself: @timestamp, event.kind,
// event.category, event.severity, rule.id, source.process.name, organization.email.
var ecsFromView = map[string]ecsKind{
	"event.id": ecsKeyword, "event.action": ecsKeyword, "message": ecsKeyword,
	"source.ip": ecsIP, "destination.ip": ecsIP, "observer.ip": ecsIPs, "related.ip": ecsIPs,
	"source.port": ecsLong, "destination.port": ecsLong, "source.bytes": ecsLong, "destination.bytes": ecsLong,
	"source.packets": ecsLong, "destination.packets": ecsLong,
	"source.domain": ecsKeyword, "destination.domain": ecsKeyword,
	"source.user.name": ecsKeyword, "source.user.email": ecsKeyword,
	"destination.user.name": ecsKeyword, "destination.user.email": ecsKeyword,
	"network.transport": ecsLower, "network.protocol": ecsLower,
	"observer.ingress.interface.name": ecsKeyword, "observer.name": ecsKeyword, "observer.hostname": ecsKeyword,
	"rule.name":  ecsKeyword,
	"url.domain": ecsKeyword, "url.original": ecsKeyword, "user_agent.original": ecsKeyword,
	"http.request.method": ecsKeyword, "http.response.status_code": ecsLong,
	"dns.question.name": ecsKeyword, "tls.client.server_name": ecsKeyword,
	"host.name": ecsKeyword, "process.name": ecsKeyword, "process.pid": ecsLong, "event.code": ecsKeyword,
	"log.syslog.priority": ecsLong, "log.syslog.facility.code": ecsLong, "log.syslog.severity.code": ecsLong,
	"service.name": ecsKeyword, "file.name": ecsKeyword, "organization.name": ecsKeyword,
}

// ecsOwn lists every field an ECS document may hold besides those of ecsFromView, with its
// ECS type; labels.* are keywords. The tests check both lists against ECS's ecs_flat.yml.
var ecsOwn = map[string]string{
	"@timestamp": "date", "ecs.version": "keyword", "event.kind": "keyword", "event.category": "keyword",
	"event.module": "keyword", "event.provider": "keyword", "event.ingested": "date", "event.original": "keyword",
	"event.severity": "long", "log.level": "keyword", "rule.id": "keyword", "rule.category": "keyword",
	"threat.indicator.marking.tlp": "keyword",
}

// ECS returns the ECS document of one record, nested as Elasticsearch takes it: the record's
// view under ECS names, the record itself in event.original, the SSA's TLP label in
// threat.indicator.marking.tlp, and in labels the SSA (ssa_id), the SSP hash (ssp_hash), the
// record's sequence number (seq) and format (format). A record that does not parse keeps only
// what the agreement says and event.original. The error wraps ErrRecord for a format the
// engine does not know.
func (a *Agreement) ECS(rec Record) (map[string]any, error) {
	p, err := viewOf(rec)
	if err != nil {
		if !knownFormat(rec.Format) {
			return nil, err
		}
		p = &parsed{Record: rec, view: map[string]any{}}
	}
	flat := map[string]any{
		"@timestamp": p.when().Format(time.RFC3339Nano), "ecs.version": ECSVersion,
		"event.module": "ssanet", "event.provider": rec.Format, "event.kind": ecsEventKind(p),
		"event.ingested": rec.Received.UTC().Format(time.RFC3339Nano), "event.original": string(rec.Data),
	}
	for f, k := range ecsFromView {
		if v, ok := ecsValue(p, f, k); ok {
			flat[f] = v
		}
	}
	switch v := p.view["event.severity"].(type) {
	case int64:
		flat["event.severity"] = v
	case string:
		flat["log.level"] = strings.ToLower(v)
	}
	if id := p.str("rule.id"); id != "" {
		flat["rule.id"] = id
	}
	if c := p.str("event.category"); c != "" {
		flat["rule.category"] = c
	}
	var cat []string
	if flat["event.kind"] == "alert" {
		cat = append(cat, "intrusion_detection")
	}
	if flat["source.ip"] != nil || flat["destination.ip"] != nil {
		cat = append(cat, "network")
	}
	if len(cat) > 0 {
		flat["event.category"] = cat
	}
	if a.TLP != "" {
		flat["threat.indicator.marking.tlp"] = strings.ToUpper(a.TLP)
	}
	flat["labels.ssa_id"], flat["labels.ssp_hash"] = a.SSA, a.SSP
	flat["labels.seq"], flat["labels.format"] = strconv.FormatUint(rec.Seq, 10), rec.Format
	return nest(flat), nil
}

// ECSJSON is ECS as JSON.
func (a *Agreement) ECSJSON(rec Record) (json.RawMessage, error) {
	doc, err := a.ECS(rec)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // event.original keeps its < and >
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// knownFormat reports whether f is a format the engine reads (policy.Formats): a record of
// one that does not parse is still mapped, from what the agreement says.
func knownFormat(f string) bool { return slices.Contains(policy.Formats(), f) }

// ecsEventKind is the ECS event.kind of a record: alert for an alert (or an incident, or a record
// with a signature), event otherwise.
func ecsEventKind(p *parsed) string {
	switch strings.ToLower(p.str("event.kind")) {
	case "alert", "incident":
		return "alert"
	}
	if p.Format == protocol.FormatIDMEFv2 || p.str("rule.name") != "" {
		return "alert"
	}
	return "event"
}

func ecsValue(p *parsed, field string, k ecsKind) (any, bool) {
	v, ok := p.view[field]
	if !ok {
		return nil, false
	}
	switch k {
	case ecsLong:
		switch x := v.(type) {
		case int64:
			return x, true
		case string:
			n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
			return n, err == nil
		}
		return nil, false
	case ecsIP:
		s, _ := v.(string)
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, false
		}
		return a.WithZone("").String(), true
	case ecsIPs:
		var list []string
		switch x := v.(type) {
		case string:
			list = []string{x}
		case []string:
			list = x
		}
		var out []string
		for _, s := range list {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, a.WithZone("").String())
			}
		}
		return out, len(out) > 0
	case ecsLower:
		s := strings.ToLower(p.str(field))
		return s, s != ""
	}
	s := p.str(field)
	return s, s != ""
}

// nest turns dotted names into nested objects.
func nest(flat map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range flat {
		if k == "@timestamp" {
			out[k] = v
			continue
		}
		parts := strings.Split(k, ".")
		m := out
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}
