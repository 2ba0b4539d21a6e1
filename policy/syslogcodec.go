package policy

import (
	"fmt"
	"strings"
	"time"

	syslog "github.com/leodido/go-syslog/v4"
	"github.com/leodido/go-syslog/v4/rfc3164"
	"github.com/leodido/go-syslog/v4/rfc5424"
)

// syslogCodec reads one syslog line per record: RFC 5424 when the priority is followed by a
// version number, BSD syslog (RFC 3164) otherwise. go-syslog parses and validates the line;
// the line is then written back piece by piece, so what is not masked stays byte for byte.
type syslogCodec struct {
	// year is given to RFC 3164 time stamps, which carry none; 0 leaves @timestamp out.
	year int
	// The parsers, made for the first line of each kind and reused: a codec is made per
	// Enforcer or Verifier and is not safe for concurrent use.
	rfc5424, rfc3164 syslog.Machine
}

func (c *syslogCodec) refine(dst, raw []byte, w *walker) ([]byte, error) {
	line := string(raw)
	gt := strings.IndexByte(line, '>')
	if len(line) < 3 || line[0] != '<' || gt < 2 || gt > 4 {
		return dst, fmt.Errorf("%w: no <PRI> at the start of the line", ErrFormat)
	}
	if gt+2 < len(line) && line[gt+1] >= '1' && line[gt+1] <= '9' && (line[gt+2] == ' ' || gt+3 < len(line) && line[gt+3] == ' ' || gt+4 < len(line) && line[gt+4] == ' ') {
		return c.refine5424(dst, raw, line, gt, w)
	}
	return c.refine3164(dst, raw, line, gt, w)
}

// syslogCommon hands w the values of the header that are not masked, those it needs.
func syslogCommon(w *walker, pri *uint8, ts *time.Time) {
	if pri != nil {
		for _, v := range [...]struct {
			field string
			value int64
		}{{"log.syslog.priority", int64(*pri)}, {"log.syslog.facility.code", int64(*pri / 8)}, {"log.syslog.severity.code", int64(*pri % 8)}} {
			if w.named(v.field) != "" {
				w.value(v.field, v.value)
			}
		}
	}
	if ts != nil && w.named(fieldTimestamp) != "" {
		w.value(fieldTimestamp, ts.UTC())
	}
}

// refine5424 refines the RFC 5424 line, raw as read and as a string.
func (c *syslogCodec) refine5424(dst, raw []byte, line string, gt int, w *walker) ([]byte, error) {
	if c.rfc5424 == nil {
		c.rfc5424 = rfc5424.NewMachine()
	}
	m, err := c.rfc5424.Parse(raw)
	msg, ok := m.(*rfc5424.SyslogMessage)
	if err != nil || !ok || msg == nil {
		return dst, fmt.Errorf("%w: RFC 5424: %v", ErrFormat, err)
	}
	// HEADER: VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, then SD and MSG.
	rest := line[gt+1:]
	var tok [6]string
	for i := range tok {
		sp := strings.IndexByte(rest, ' ')
		if sp < 0 {
			return dst, fmt.Errorf("%w: RFC 5424: short header", ErrFormat)
		}
		tok[i], rest = rest[:sp], rest[sp+1:]
	}
	sdEnd := sdLength(rest)
	if sdEnd < 0 {
		return dst, fmt.Errorf("%w: RFC 5424: bad structured data", ErrFormat)
	}
	sd, body := rest[:sdEnd], rest[sdEnd:]
	hasMsg := strings.HasPrefix(body, " ")
	body = strings.TrimPrefix(body, " ")

	syslogCommon(w, msg.Priority, msg.Timestamp)
	dst = append(dst, line[:gt+1]...)
	dst = append(dst, tok[0]...)
	dst = append(dst, ' ')
	dst = append(dst, tok[1]...)
	for i, f := range []string{"host.name", "process.name", "process.pid", "event.code"} {
		v := tok[i+2]
		if v != "-" {
			out, drop := w.unscannedText(f, v)
			if drop || out == "" {
				out = "-"
			}
			v = out
		}
		dst = append(dst, ' ')
		dst = append(dst, v...)
	}
	dst = append(dst, ' ')
	if sd != "-" {
		sd, _ = w.unscannedText("", sd)
	}
	dst = append(dst, sd...)
	if hasMsg {
		out, drop := w.unscannedText("message", body)
		if !drop {
			dst = append(dst, ' ')
			dst = append(dst, out...)
		}
	}
	w.finish()
	return dst, nil
}

// sdLength returns the length of the STRUCTURED-DATA at the start of s, or -1.
func sdLength(s string) int {
	if strings.HasPrefix(s, "-") {
		return 1
	}
	i := 0
	for i < len(s) && s[i] == '[' {
		inQuote := false
		j := i + 1
		for ; j < len(s); j++ {
			switch c := s[j]; {
			case c == '\\' && inQuote:
				j++
			case c == '"':
				inQuote = !inQuote
			case c == ']' && !inQuote:
				goto closed
			}
		}
		return -1
	closed:
		i = j + 1
	}
	if i == 0 {
		return -1
	}
	return i
}

// refine3164 refines the RFC 3164 line, raw as read and as a string.
func (c *syslogCodec) refine3164(dst, raw []byte, line string, gt int, w *walker) ([]byte, error) {
	if c.rfc3164 == nil {
		var opts []syslog.MachineOption
		if c.year != 0 {
			opts = append(opts, rfc3164.WithYear(rfc3164.Year{YYYY: c.year}))
		}
		c.rfc3164 = rfc3164.NewMachine(opts...)
	}
	m, err := c.rfc3164.Parse(raw)
	msg, ok := m.(*rfc3164.SyslogMessage)
	if err != nil || !ok || msg == nil {
		return dst, fmt.Errorf("%w: RFC 3164: %v", ErrFormat, err)
	}
	ts := msg.Timestamp
	if c.year == 0 {
		ts = nil
	}
	syslogCommon(w, msg.Priority, ts)
	// <PRI>TIMESTAMP SP HOSTNAME SP TAG[PID]: MSG, located from the parsed values.
	pos := gt + 1 + len(time.Stamp)
	if pos >= len(line) || line[pos] != ' ' {
		return dst, fmt.Errorf("%w: RFC 3164: no time stamp", ErrFormat)
	}
	pos++
	dst = append(dst, line[:pos]...)
	msgStart := len(line)
	if msg.Message != nil {
		if !strings.HasSuffix(line, *msg.Message) {
			return dst, fmt.Errorf("%w: RFC 3164: cannot locate the message", ErrFormat)
		}
		msgStart -= len(*msg.Message)
	}
	// Header parts the parser reports inside the message (a tag it took from the text) are
	// masked as part of the message.
	parts := []struct {
		field string
		value *string
	}{{"host.name", msg.Hostname}, {"process.name", msg.Appname}, {"process.pid", msg.ProcID}}
	for _, p := range parts {
		if p.value == nil || *p.value == "" || pos > msgStart {
			continue
		}
		at := strings.Index(line[pos:msgStart], *p.value)
		if at < 0 {
			continue
		}
		between, _ := w.unscannedText("", line[pos:pos+at])
		dst = append(dst, between...)
		out, drop := w.unscannedText(p.field, *p.value)
		if drop {
			out = ""
			if p.field == "host.name" {
				out = "-"
			}
		}
		dst = append(dst, out...)
		pos += at + len(*p.value)
	}
	if pos < msgStart {
		between, _ := w.unscannedText("", line[pos:msgStart])
		dst = append(dst, between...)
		pos = msgStart
	}
	if msg.Message != nil {
		body := line[max(pos, msgStart):]
		out, drop := w.unscannedText("message", body)
		if !drop {
			dst = append(dst, out...)
		}
		pos = len(line)
	}
	tail, _ := w.unscannedText("", line[pos:])
	dst = append(dst, tail...)
	w.finish()
	return dst, nil
}
