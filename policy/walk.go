package policy

import (
	"strconv"
	"strings"
	"time"
)

// kind is the type of a field of the normalised view, as CEL sees it.
type kind uint8

const (
	kindString kind = iota + 1 // string
	kindInt                    // int
	kindIP                     // string holding an IP address
	kindTime                   // timestamp
	kindIPList                 // list of strings (related.ip), derived: never masked by name
)

func (k kind) String() string {
	switch k {
	case kindInt:
		return "int"
	case kindIP:
		return "ip"
	case kindTime:
		return "timestamp"
	case kindIPList:
		return "list(ip)"
	default:
		return "string"
	}
}

// Derived fields, present in every format.
const (
	fieldRelatedIP = "related.ip"
	fieldTimestamp = "@timestamp"
)

// codec reads and writes one record format.
type codec interface {
	// refine parses one record, passes each of its values through w and appends the record
	// as written to dst. An error means the record is malformed; dst is then unspecified.
	refine(dst, raw []byte, w *walker) ([]byte, error)
}

// walker is what a codec hands every value of a record to: it masks the value, captures
// the normalised view before and after masking, and, when verifying, checks it.
type walker struct {
	kinds   map[string]kind
	mask    *masker        // nil: values are written as read
	view    map[string]any // nil: not captured; values as read
	mview   map[string]any // nil: not captured; values as written
	wantIPs bool           // collect related.ip
	ips     []string
	mips    []string
	maxLen  int      // the longest string captured in a view since reset
	check   *checker // nil unless verifying
	// relevant, if not nil, lists the view fields worth a look: those the views need and
	// those masked by name. Values of other fields are handled as unnamed text.
	relevant map[string]bool
	// spans and buf are the scratch of maskedText.
	spans [4]ipSpan
	buf   []byte
}

// scannedText is text for a value of which the codec knows whether it may hold an address
// (mayIP: mayHoldIP(s), from the codec's own scan). Unnamed text that holds no address is
// nothing to a walker that does not list addresses: it is not scanned again; one that may
// hold one is masked from one scan where the walker only masks.
func (w *walker) scannedText(field, s string, mayIP bool) (string, bool) {
	if field = w.named(field); field == "" && !w.wantIPs {
		if !mayIP {
			return s, false
		}
		if out, ok := w.maskedText(s); ok {
			return out, false
		}
	}
	return w.text(field, s)
}

// unscannedText is scannedText for a value whose codec did not scan it: whether it may hold
// an address is looked at only where that decides something (unnamed text).
func (w *walker) unscannedText(field, s string) (string, bool) {
	if w.named(field) == "" && !w.wantIPs {
		return w.scannedText(field, s, mayHoldIP(s))
	}
	return w.text(field, s)
}

// maskedText returns the masked form of the unnamed text s, for a walker that only masks
// (no view reads unnamed text, no address list, no check), from one scan of s, as text
// would return it; ok is false where maskedText leaves s to text.
func (w *walker) maskedText(s string) (out string, ok bool) {
	if w.mask == nil || w.check != nil || w.wantIPs {
		return "", false
	}
	spans := findIPs(w.spans[:0], s)
	if len(spans) == 0 {
		return s, true
	}
	b, ok := appendText(w.mask, w.buf[:0], s, spans)
	if !ok {
		return "", false
	}
	w.buf = b
	if string(b) == s {
		return s, true // no address the rule changes
	}
	return string(b), true
}

// named returns field if the walker needs to know a value belongs to it, "" otherwise.
func (w *walker) named(field string) string {
	if field == "" || w.relevant == nil || w.relevant[field] {
		return field
	}
	return ""
}

func (w *walker) reset() {
	clear(w.view)
	clear(w.mview)
	w.ips = w.ips[:0]
	w.mips = w.mips[:0]
	w.maxLen = 0
}

// small reports whether every value of the views is within viewValueHint: no string
// longer in bytes, no related.ip list longer in elements.
func (w *walker) small() bool {
	return w.maxLen <= viewValueHint && len(w.ips) <= viewValueHint && len(w.mips) <= viewValueHint
}

// text handles one text value found at field ("" for a location outside the view) and
// returns what to write and whether to remove the value.
func (w *walker) text(field, s string) (string, bool) {
	return w.slotText(field, s, slotText)
}

// slotText is text for a value the format's schema gives a slot to (an address field).
func (w *walker) slotText(field, s string, sl slot) (string, bool) {
	out, drop := s, false
	if w.mask != nil {
		out, drop = w.mask.value(field, s, sl)
	}
	if field != "" {
		if w.view != nil {
			w.capture(w.view, field, s)
		}
		if w.mview != nil && !drop {
			w.capture(w.mview, field, out)
		}
	}
	if w.wantIPs {
		w.ips = appendIPs(w.ips, s)
		if !drop {
			w.mips = appendIPs(w.mips, out)
		}
	}
	if w.check != nil {
		w.check.text(field, out, drop, sl)
	}
	return out, drop
}

// key handles a JSON member name: only the address scopes apply to it.
func (w *walker) key(s string) string {
	out := s
	if w.mask != nil && mayHoldIP(s) {
		out = w.mask.key(s)
	}
	if w.wantIPs {
		w.ips = appendIPs(w.ips, s)
		w.mips = appendIPs(w.mips, out)
	}
	if w.check != nil {
		w.check.text("", out, false, slotText)
	}
	return out
}

// number handles a JSON number at field, in slot sl. quoted means the result is a string
// (an hmac token).
func (w *walker) number(field, raw string, sl slot) (out string, drop, quoted bool) {
	if field == "" {
		return raw, false, false
	}
	out = raw
	if w.mask != nil {
		o, d := w.mask.value(field, raw, sl)
		drop = d
		if !d && o != raw {
			out, quoted = o, sl != slotPort
		}
	}
	if w.view != nil {
		w.capture(w.view, field, raw)
	}
	if w.mview != nil && !drop {
		w.capture(w.mview, field, out)
	}
	if w.check != nil {
		w.check.text(field, out, drop, sl)
	}
	return out, drop, quoted
}

// value records a typed value that is not masked (syslog priority, time).
func (w *walker) value(field string, v any) {
	if s, ok := v.(string); ok {
		w.maxLen = max(w.maxLen, len(s))
	}
	if w.view != nil {
		if _, ok := w.view[field]; !ok {
			w.view[field] = v
		}
	}
	if w.mview != nil {
		if _, ok := w.mview[field]; !ok {
			w.mview[field] = v
		}
	}
}

// finish completes the views once every value has been walked.
func (w *walker) finish() {
	if !w.wantIPs {
		return
	}
	if w.view != nil {
		w.view[fieldRelatedIP] = append([]string(nil), w.ips...)
	}
	if w.mview != nil {
		w.mview[fieldRelatedIP] = append([]string(nil), w.mips...)
	}
}

// capture stores the first value of a field, converted to the field's kind. A value that
// does not convert is left out, as if absent.
func (w *walker) capture(view map[string]any, field, s string) {
	if _, ok := view[field]; ok {
		return
	}
	s = strings.TrimSpace(s)
	w.maxLen = max(w.maxLen, len(s))
	switch w.kinds[field] {
	case kindInt:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			view[field] = n
		} else if isToken(s) {
			view[field] = s
		}
	case kindTime:
		if t, ok := parseTime(s); ok && s != nilTime {
			view[field] = t
		}
	case kindString, kindIP:
		if field == "network.transport" {
			s = transportName(s)
		}
		view[field] = s
	}
}

func appendIPs(dst []string, s string) []string {
	if !mayHoldIP(s) {
		return dst
	}
	var spans [4]ipSpan
	for _, sp := range findIPs(spans[:0], s) {
		a := sp.addr.String()
		dup := false
		for _, x := range dst {
			if x == a {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, a)
		}
	}
	return dst
}

// timeLayouts are the timestamp forms of the formats: RFC 3339 (IDMEF, IDMEFv2, IODEF) and
// Suricata's numeric zone without a colon.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999Z07:00",
}

// parseTime reads a timestamp in one of timeLayouts. The forms the formats write (Suricata's
// 2021-01-27T01:28:11.488362+0100, RFC 3339 with Z or a colon in the zone, and the same
// with a space for T) are read without time.Parse, which would allocate a zone and, for
// every layout that does not fit, an error; anything else is left to time.Parse.
func parseTime(s string) (time.Time, bool) {
	if t, ok := parseTimeFast(s); ok {
		return t, true
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// transportName normalises a transport protocol name or IANA number to lower case ECS form.
func transportName(s string) string {
	switch s {
	case "1":
		return "icmp"
	case "6":
		return "tcp"
	case "17":
		return "udp"
	case "58":
		return "ipv6-icmp"
	case "132":
		return "sctp"
	}
	return strings.ToLower(s)
}

// parseTimeFast reads exactly dddd-dd-dd[T ]dd:dd:dd[.d{1,9}](Z|±dd:dd|±dddd), the
// forms timeLayouts accept in this shape (a space only before a zone with a colon or Z),
// with every number in range; it declines everything else, for time.Parse to decide.
func parseTimeFast(s string) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' || s[10] != 'T' && s[10] != ' ' {
		return time.Time{}, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, minute, sec := num(11, 2), num(14, 2), num(17, 2)
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	if day > 28 && time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC).Day() != day {
		return time.Time{}, false
	}
	i, nsec := 19, 0
	if s[i] == '.' {
		i++
		digits := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			nsec = nsec*10 + int(s[i]-'0')
			digits++
			i++
		}
		if digits == 0 || digits > 9 {
			return time.Time{}, false
		}
		for range 9 - digits {
			nsec *= 10
		}
	}
	zone := s[i:]
	offset := 0
	switch {
	case zone == "Z":
	case len(zone) == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':',
		len(zone) == 5 && (zone[0] == '+' || zone[0] == '-') && s[10] == 'T':
		zh, zm := num(i+1, 2), num(len(s)-2, 2)
		if zh < 0 || zh > 23 || zm < 0 || zm > 59 {
			return time.Time{}, false
		}
		offset = zh*3600 + zm*60
		if zone[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), true
}
