package cti

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The MISP core format (IETF draft-dulaunoy-misp-core-format): an event of one SSA and one
// day holds, once each, the observables of the day's records as attributes; the SSA's TLP
// label and the SSA itself are its tags. A MISP instance reads such events from a feed
// (agent/sink writes the directory: manifest.json, hashes.csv, one EVENT-UUID.json each).

// MISPOrg is an Org or Orgc object.
type MISPOrg struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	UUID string `json:"uuid"`
}

// MISPTag is a tag of an event.
type MISPTag struct {
	Name       string `json:"name"`
	Colour     string `json:"colour"`
	Exportable bool   `json:"exportable"`
}

// MISPAttribute is an attribute of an event, with the fields the draft says must be present.
type MISPAttribute struct {
	UUID               string `json:"uuid"`
	ID                 string `json:"id"`
	EventID            string `json:"event_id"`
	Type               string `json:"type"`
	Category           string `json:"category"`
	ToIDS              bool   `json:"to_ids"`
	Distribution       string `json:"distribution"`
	SharingGroupID     string `json:"sharing_group_id"`
	Timestamp          string `json:"timestamp"`
	Deleted            bool   `json:"deleted"`
	DisableCorrelation bool   `json:"disable_correlation"`
	Comment            string `json:"comment"`
	Value              string `json:"value"`
	FirstSeen          string `json:"first_seen,omitempty"`
}

// MISPEvent is an event, with the fields the draft says must (or shall) be present.
type MISPEvent struct {
	UUID             string          `json:"uuid"`
	ID               string          `json:"id"`
	Info             string          `json:"info"`
	Date             string          `json:"date"`
	ThreatLevelID    string          `json:"threat_level_id"`
	Analysis         string          `json:"analysis"`
	Published        bool            `json:"published"`
	Timestamp        string          `json:"timestamp"`
	PublishTimestamp string          `json:"publish_timestamp"`
	OrgID            string          `json:"org_id"`
	OrgcID           string          `json:"orgc_id"`
	AttributeCount   string          `json:"attribute_count"`
	Distribution     string          `json:"distribution"`
	SharingGroupID   string          `json:"sharing_group_id"`
	Orgc             MISPOrg         `json:"Orgc"`
	Tag              []MISPTag       `json:"Tag"`
	Attribute        []MISPAttribute `json:"Attribute"`

	index map[string]bool // type and value of each attribute
}

// MISPFeedEvent is an event file of a feed: {"Event": {…}}.
type MISPFeedEvent struct {
	Event *MISPEvent `json:"Event"`
}

// MISPManifestEntry is an event's entry in a feed's manifest.json.
type MISPManifestEntry struct {
	Orgc          MISPOrg   `json:"Orgc"`
	Tag           []MISPTag `json:"Tag"`
	Info          string    `json:"info"`
	Date          string    `json:"date"`
	Analysis      string    `json:"analysis"`
	ThreatLevelID string    `json:"threat_level_id"`
	Timestamp     string    `json:"timestamp"`
}

// MISPEventUUID is the UUID of the agreement's event of the day of t (UTC).
func (a *Agreement) MISPEventUUID(t time.Time) string {
	return uuid5("ssanet misp event\x00" + a.SSA + "\x00" + t.UTC().Format(time.DateOnly))
}

// MISPOrg is the provider's organisation as the creator of the events.
func (a *Agreement) MISPOrg() MISPOrg {
	return MISPOrg{ID: "0", Name: a.Organisation(), UUID: uuid5("ssanet misp org\x00" + a.Organisation() + "\x00" + a.Provider.PeerID)}
}

// MISPTags are the tags of the agreement's events: its TLP label (the MISP tlp taxonomy) and
// the SSA and SSP hash (ssanet:ssa="…", ssanet:ssp="…").
func (a *Agreement) MISPTags() []MISPTag {
	var tags []MISPTag
	if a.TLP != "" {
		colour := map[string]string{"clear": "#ffffff", "green": "#33ff00", "amber": "#ffc000", "amber+strict": "#ffc000", "red": "#ff2b2b"}
		l := lower(a.TLP)
		tags = append(tags, MISPTag{Name: "tlp:" + l, Colour: colour[l], Exportable: true})
	}
	return append(tags, MISPTag{Name: `ssanet:ssa="` + a.SSA + `"`, Colour: "#0088cc", Exportable: true},
		MISPTag{Name: `ssanet:ssp="` + a.SSP + `"`, Colour: "#0088cc", Exportable: true})
}

// mispDistribution is the distribution level of the SSA's redistribution rule.
func (a *Agreement) mispDistribution() string {
	switch a.Redistribution {
	case "community":
		return "1" // this community only
	case "any":
		return "3" // all communities
	}
	return "0" // your organisation only
}

// NewMISPEvent returns the agreement's empty event of the day of t, made at now.
func (a *Agreement) NewMISPEvent(t, now time.Time) *MISPEvent {
	day := t.UTC().Format(time.DateOnly)
	info := fmt.Sprintf("ssanet: records shared by %s under SSA %s on %s", a.Organisation(), a.SSA, day)
	for utf8.RuneCountInString(info) > 256 { // the draft: no more than 256 characters
		_, n := utf8.DecodeLastRuneInString(info)
		info = info[:len(info)-n]
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	return &MISPEvent{UUID: a.MISPEventUUID(t), ID: "0", Info: info, Date: day, ThreatLevelID: "4", Analysis: "1",
		Published: true, Timestamp: ts, PublishTimestamp: ts, OrgID: "0", OrgcID: "0", AttributeCount: "0",
		Distribution: a.mispDistribution(), SharingGroupID: "0", Orgc: a.MISPOrg(), Tag: a.MISPTags(), Attribute: []MISPAttribute{}}
}

// Manifest is the event's entry in a feed's manifest.
func (e *MISPEvent) Manifest() MISPManifestEntry {
	return MISPManifestEntry{Orgc: e.Orgc, Tag: e.Tag, Info: e.Info, Date: e.Date, Analysis: e.Analysis,
		ThreatLevelID: e.ThreatLevelID, Timestamp: e.Timestamp}
}

// Add adds the attributes the event does not hold yet (by type and value), at most until it
// holds max (0: no limit), stamped now; it returns how many it added and how many it left out
// for want of room.
func (e *MISPEvent) Add(attrs []MISPAttribute, now time.Time, max int) (added, dropped int) {
	if e.index == nil {
		e.index = make(map[string]bool, len(e.Attribute))
		for _, x := range e.Attribute {
			e.index[x.Type+"\x00"+x.Value] = true
		}
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, x := range attrs {
		k := x.Type + "\x00" + x.Value
		if e.index[k] {
			continue
		}
		if max > 0 && len(e.Attribute) >= max {
			dropped++
			continue
		}
		e.index[k] = true
		x.UUID = uuid5("ssanet misp attribute\x00" + e.UUID + "\x00" + k)
		x.ID, x.EventID, x.Distribution, x.SharingGroupID, x.Timestamp = "0", "0", "5", "0", ts
		e.Attribute = append(e.Attribute, x)
		added++
	}
	if added > 0 {
		e.Timestamp, e.PublishTimestamp = ts, ts
		e.AttributeCount = strconv.Itoa(len(e.Attribute))
	}
	return added, dropped
}

// mispMap is how a view field becomes an attribute.
var mispMap = []struct{ field, typ, category string }{
	{"source.ip", "ip-src", "Network activity"},
	{"destination.ip", "ip-dst", "Network activity"},
	{"url.domain", "domain", "Network activity"},
	{"dns.question.name", "domain", "Network activity"},
	{"tls.client.server_name", "domain", "Network activity"},
	{"source.domain", "hostname", "Network activity"},
	{"destination.domain", "hostname", "Network activity"},
	{"host.name", "hostname", "Network activity"},
	{"user_agent.original", "user-agent", "Network activity"},
	{"http.request.method", "http-method", "Network activity"},
	{"source.user.email", "email-src", "Network activity"},
	{"destination.user.email", "email-dst", "Network activity"},
	{"destination.user.name", "target-user", "Targeting data"},
	{"source.user.name", "text", "Other"},
	{"file.name", "filename", "Payload delivery"},
	{"rule.name", "text", "Other"},
}

// MISPAttributes returns the attributes of one record (without UUID and timestamps, which
// MISPEvent.Add sets): its addresses (a truncated one as the network it is), domains, host
// names, URL, user agent, HTTP method, e-mail addresses, user names, file name and signature,
// each with the view field it came from as comment. None is for intrusion detection (to_ids
// false): they are observations shared under an SSA, not vetted indicators. A record that
// does not parse has none; the error wraps ErrRecord for a format the engine does not know.
func (a *Agreement) MISPAttributes(rec Record) ([]MISPAttribute, error) {
	p, err := viewOf(rec)
	if err != nil {
		if !knownFormat(rec.Format) {
			return nil, err
		}
		return nil, nil
	}
	var out []MISPAttribute
	seen := map[string]bool{}
	add := func(typ, cat, val, comment string) {
		if val == "" || seen[typ+"\x00"+val] {
			return
		}
		seen[typ+"\x00"+val] = true
		out = append(out, MISPAttribute{Type: typ, Category: cat, Value: val, Comment: comment + " (" + rec.Format + ")",
			FirstSeen: p.when().Format(time.RFC3339)})
	}
	for _, m := range mispMap {
		v := p.str(m.field)
		switch m.typ {
		case "ip-src", "ip-dst":
			if pr, ok := a.addr(p, m.field); ok {
				add(m.typ, m.category, prefixValue(pr), m.field)
			}
			continue
		case "domain", "hostname":
			if _, err := netip.ParseAddr(v); err == nil { // a name field that holds an address
				typ := "ip-dst"
				if strings.HasPrefix(m.field, "source.") || m.field == "host.name" { // the sender of a syslog message
					typ = "ip-src"
				}
				if pr, ok := a.addr(p, m.field); ok {
					add(typ, m.category, prefixValue(pr), m.field)
				}
				continue
			}
			if !isDomain(v) {
				continue
			}
			v = lower(trimDot(v))
		case "email-src", "email-dst":
			if !isEmail(v) {
				continue
			}
		}
		add(m.typ, m.category, v, m.field)
	}
	if u := recordURL(p); u != "" {
		add("url", "Network activity", u, "url.original")
	}
	return out, nil
}
