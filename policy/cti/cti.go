package cti

import (
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

// Formats of a mapped record: the values of an output's format setting.
const (
	FormatRaw  = "raw"  // the record as received, in its envelope
	FormatSTIX = "stix" // a STIX 2.1 bundle
	FormatECS  = "ecs"  // an ECS document
)

// OutputFormats lists the output formats, raw first.
func OutputFormats() []string { return []string{FormatRaw, FormatSTIX, FormatECS} }

// ErrRecord means a record cannot be mapped: its format is unknown or it does not parse.
var ErrRecord = errors.New("cti: record cannot be mapped")

// Agreement is what the mappings need of the SSA the records were shared under.
type Agreement struct {
	// SSA is the SSA's ID and SSP the hash of its SSP.
	SSA, SSP string
	// TLP is the TLP 2.0 label ("" if the SSA sets none); Redistribution the effective
	// onward-sharing rule (policy.SSP.Redistribution).
	TLP, Redistribution string
	// Provider is the provider's contact: its affiliation names the organisation.
	Provider protocol.Participant
	// Retention is how long, from receipt, the requester may keep the records (0: no limit).
	Retention time.Duration
	// Date is when the SSA was agreed (the creation time of the provider's identity).
	Date time.Time
	// Prefix returns the network an address at a view field stands for
	// (policy.SSP.AddrPrefix); nil: every address is itself.
	Prefix func(field string, a netip.Addr) netip.Prefix
}

// NewAgreement returns the Agreement of ssa, compiled into p.
func NewAgreement(ssa *protocol.SSA, p *policy.SSP) *Agreement {
	m := p.Marking()
	a := &Agreement{SSA: ssa.ID, SSP: m.SSP, TLP: m.TLP, Redistribution: m.Redistribution,
		Provider: ssa.Participants.Provider, Retention: time.Duration(m.Retention) * time.Second, Prefix: p.AddrPrefix}
	if ssa.Date != 0 {
		a.Date = ssa.Date.Std()
	}
	return a
}

// Organisation is the name of the provider's organisation: its affiliation, else its name,
// else its peer ID.
func (a *Agreement) Organisation() string {
	switch p := a.Provider; {
	case p.Affiliation != "":
		return p.Affiliation
	case p.Name != "":
		return p.Name
	case p.PeerID != "":
		return p.PeerID
	}
	return "unnamed provider of SSA " + a.SSA
}

// Record is one received record.
type Record struct {
	Seq      uint64
	Received time.Time
	Format   string // protocol.FormatEVE, …
	Data     []byte
}

// parsed is a record with its view.
type parsed struct {
	Record
	view map[string]any
}

// viewOf reads rec's normalised view. RFC 3164 syslog timestamps take the year of receipt.
func viewOf(rec Record) (*parsed, error) {
	v, err := policy.View(rec.Format, rec.Received.UTC().Year(), rec.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: seq %d: %w", ErrRecord, rec.Seq, err)
	}
	return &parsed{Record: rec, view: v}, nil
}

func (p *parsed) str(field string) string {
	switch v := p.view[field].(type) {
	case string:
		return v
	case int64:
		return fmt.Sprint(v)
	}
	return ""
}

func (p *parsed) num(field string) (int64, bool) {
	v, ok := p.view[field].(int64)
	return v, ok
}

// when is the record's own time, or its receipt when it has none.
func (p *parsed) when() time.Time {
	if t, ok := p.view["@timestamp"].(time.Time); ok && !t.IsZero() {
		return t.UTC()
	}
	return p.Received.UTC()
}

// addr returns the network an address field stands for, and whether it holds an address.
func (a *Agreement) addr(p *parsed, field string) (netip.Prefix, bool) {
	ad, err := netip.ParseAddr(p.str(field))
	if err != nil {
		return netip.Prefix{}, false
	}
	ad = ad.WithZone("").Unmap()
	if a.Prefix != nil {
		return a.Prefix(field, ad), true
	}
	return netip.PrefixFrom(ad, ad.BitLen()), true
}

// prefixValue is a network as STIX and MISP write it: an address alone, a CIDR otherwise.
func prefixValue(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

// stixNamespace is the namespace of STIX 2.1 §2.9 deterministic identifiers.
var stixNamespace = [16]byte{0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7}

// uuid5 is the RFC 9562 version 5 UUID of name in the STIX namespace.
func uuid5(name string) string {
	h := sha1.New()
	h.Write(stixNamespace[:])
	h.Write([]byte(name))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func lower(s string) string   { return strings.ToLower(s) }
func trimDot(s string) string { return strings.TrimSuffix(s, ".") }

// Marshal returns one record as JSON in an output format: a STIX bundle (FormatSTIX) of the
// record's objects and the shared ones, or an ECS document (FormatECS). FormatRaw is the
// caller's own envelope and an error here, as any other format is.
func Marshal(format string, a *Agreement, rec Record) (json.RawMessage, error) {
	switch format {
	case FormatSTIX:
		b, err := a.Bundle([]Record{rec})
		if err != nil {
			return nil, err
		}
		return json.Marshal(b)
	case FormatECS:
		return a.ECSJSON(rec)
	}
	return nil, fmt.Errorf("cti: output format %q: want stix or ecs", format)
}
