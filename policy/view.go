package policy

import (
	"fmt"
	"net/netip"

	"github.com/ssanet/ssanet/protocol"
)

// View returns the normalised view of one record of format (the package documentation lists
// each format's fields): a map from field name to a string, an int64 or a time.Time, and
// related.ip to a []string of every address in the record. A field the record does not hold is
// absent. year completes an RFC 3164 syslog timestamp, which has none (0: the current year is
// not guessed and such a timestamp is left out). The error wraps ErrFormat for a format the
// engine does not know, or says why the record does not parse.
func View(format string, year int, record []byte) (map[string]any, error) {
	spec, ok := lookupFormat(format)
	if !ok {
		return nil, fmt.Errorf("%w: %q (want one of %v)", ErrFormat, format, Formats())
	}
	w := walker{kinds: spec.fields, view: map[string]any{}, wantIPs: true}
	if _, err := spec.codec(year).refine(nil, record, &w); err != nil {
		return nil, fmt.Errorf("%s record: %w", format, err)
	}
	return w.view, nil
}

// AddrPrefix returns the network that address a, read at view field field of a record refined
// under p, stands for: a itself (a single-address prefix) unless a truncate rule of p covers
// the field and a has the low bits that rule zeroes at zero, in which case it is the truncated
// network (a public-ip rule covers only public addresses). The widest such network wins. So a
// masked address stays masked: 198.51.100.0 truncated by 8 bits is 198.51.100.0/24.
func (p *SSP) AddrPrefix(field string, a netip.Addr) netip.Prefix {
	a = a.WithZone("")
	keep := a.BitLen()
	for i := range p.masks {
		r := &p.masks[i]
		if r.Method != protocol.MaskTruncate || !r.applies(field) || r.Scope == protocol.ScopePublicIP && !IsPublic(a) {
			continue
		}
		if k := max(a.BitLen()-r.Bits, 0); k < keep && Truncate(a, r.Bits) == a {
			keep = k
		}
	}
	pr, err := a.Prefix(keep)
	if err != nil {
		return netip.PrefixFrom(a, a.BitLen())
	}
	return pr
}
