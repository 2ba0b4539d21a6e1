package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/ssanet/ssanet/protocol"
)

// FindingCode names one way a received record breaks its SSA. Stable: codes are never
// renamed.
type FindingCode string

// Finding codes.
const (
	FindingWrongFormat     FindingCode = "wrong-format"     // not a record of an agreed format
	FindingUnmaskedIP      FindingCode = "unmasked-ip"      // an address a remove or hmac rule should have hidden
	FindingNotTruncated    FindingCode = "not-truncated"    // an address with low bits a truncate rule should have zeroed
	FindingNotRemoved      FindingCode = "not-removed"      // a field a remove rule should have removed
	FindingNotHashed       FindingCode = "not-hashed"       // a field an hmac rule should have hashed
	FindingFilterExcluded  FindingCode = "filter-excluded"  // a record a filter excludes
	FindingTopTooLong      FindingCode = "top-n-too-long"   // a summary listing more than N values
	FindingNotSummarised   FindingCode = "not-summarised"   // a raw record where only summaries are agreed
	FindingOutsideSchedule FindingCode = "outside-schedule" // a batch sent (or taken) outside the schedule: the agent's check, not Verify's
	FindingMethod          FindingCode = "method"           // a batch delivered over a protocol or connection security the SSA does not list: the agent's check
)

// Finding is one violation found in a received record.
type Finding struct {
	Code  FindingCode
	Field string // view field concerned, "" for a place outside the view or the whole record
	Text  string
}

func (f Finding) String() string {
	if f.Field == "" {
		return fmt.Sprintf("%s: %s", f.Code, f.Text)
	}
	return fmt.Sprintf("%s: %s: %s", f.Code, f.Field, f.Text)
}

const maxFindings = 64

// Verify is the requester's check of one received record (clause 8: the requester uses the
// SSP to confirm that sharing follows the SSA). It needs no key. It reports every way the
// record breaks the SSP: a wrong format, a masking rule not applied (an address left with
// non-zero low bits under truncate, left at all under remove or hmac, a field not removed
// or not hashed; cryptopan cannot be told from a real address and is not checked), a record
// a filter excludes, a summary longer than its top N or a raw record where summaries are
// agreed. The schedule is when sharing happens, not a limit on the record's own time: it is
// checked on the batch (its signed time of sending), not here. A filter is only checked when
// masking cannot have changed the fields it reads. No finding means the record is compliant.
// To check more than one record, use a Verifier.
func Verify(p *SSP, format string, record []byte) []Finding {
	return NewVerifier(p).Verify(format, record)
}

// Verifier checks records against one SSP as Verify does, with what it needs readied once
// per format and reused for every record: one walker, view and codec, no copy of the record
// kept and, for a compliant record, no allocation beyond the view's values. A Verifier is not
// safe for concurrent use; use one per stream or batch.
type Verifier struct {
	p *SSP
	// formats holds the readied formats, in the order first seen; at most the SSP's.
	formats []*formatVerifier
}

// formatVerifier verifies the records of one format.
type formatVerifier struct {
	spec  *formatSpec
	codec codec
	c     checker
	w     walker
	// relevant names the view fields the check reads: the filters' and those masked by
	// name. A record is first checked with only these named (the values of other fields
	// are then checked as unnamed text, for addresses: the same verdict at less cost); one
	// with findings is checked again with every field named, so that each finding names its
	// field as Verify always did.
	relevant map[string]bool
	// filters are the SSP's filters that can be checked in this format: those whose fields
	// masking cannot have changed (checker.maskedAny), in the SSP's order; act is their
	// activation over w.view, made once.
	filters []*filter
	act     *viewActivation
	// buf is the scratch the codec writes to, reused: the record as written is not needed,
	// and the codec leaves out of it the bytes it would copy unchanged (jsonRW.copy).
	buf []byte
}

// maxScratch is the largest scratch buffer a Verifier keeps between records.
const maxScratch = 64 << 10

// NewVerifier returns a Verifier for records refined under p.
func NewVerifier(p *SSP) *Verifier {
	return &Verifier{p: p}
}

// Verify checks one record of format: see the package function Verify.
func (v *Verifier) Verify(format string, record []byte) []Finding {
	p := v.p
	fv := v.format(format)
	if fv == nil {
		return []Finding{{Code: FindingWrongFormat, Text: fmt.Sprintf("format %q is not agreed (%v)", format, p.Formats())}}
	}
	if sum, ok := parseSummary(record); ok {
		if p.summary == nil {
			return []Finding{{Code: FindingWrongFormat, Text: "a summary record, but no summarisation is agreed"}}
		}
		c := &checker{p: p}
		c.summary(sum)
		return c.findings
	}
	if p.summary != nil {
		return []Finding{{Code: FindingNotSummarised, Text: "a raw record, but only top-" + fmt.Sprint(p.summary.TopN) + " summaries are agreed"}}
	}
	if f := fv.check(record, fv.relevant); len(f) == 0 {
		return nil
	}
	return fv.check(record, nil)
}

// format returns the readied verifier of format, nil if the SSP does not cover it.
func (v *Verifier) format(name string) *formatVerifier {
	for _, fv := range v.formats {
		if fv.spec.name == name {
			return fv
		}
	}
	spec, ok := v.p.format(name)
	if !ok {
		return nil
	}
	fv := &formatVerifier{spec: spec, codec: spec.codec(0), c: checker{p: v.p}, relevant: map[string]bool{}}
	fv.w = walker{kinds: spec.fields, check: &fv.c}
	for _, f := range v.p.filters {
		if !fv.c.maskedAny(spec, f.fields) {
			fv.filters = append(fv.filters, f)
		}
	}
	if len(fv.filters) > 0 {
		// Only a filter that is checked needs the view: the others' fields are neither
		// captured nor named.
		fv.w.view = map[string]any{}
		fv.act = newViewActivation(fv.w.view)
	}
	for _, f := range fv.filters {
		for _, k := range f.fields {
			fv.w.wantIPs = fv.w.wantIPs || k == fieldRelatedIP
			fv.relevant[k] = true
		}
	}
	for _, m := range v.p.masks {
		for _, f := range m.Fields {
			fv.relevant[f] = true
		}
	}
	v.formats = append(v.formats, fv)
	return fv
}

// check walks a raw record with the fields in relevant named (every field if nil) and
// returns its findings.
func (fv *formatVerifier) check(record []byte, relevant map[string]bool) []Finding {
	c, w := &fv.c, &fv.w
	c.findings = nil // handed to the caller: never reused
	w.reset()
	w.relevant = relevant
	out, err := fv.codec.refine(fv.buf[:0], record, w)
	if cap(out) <= maxScratch {
		fv.buf = out[:0]
	}
	if err != nil {
		return []Finding{{Code: FindingWrongFormat, Text: err.Error()}}
	}
	small := w.small()
	for _, f := range fv.filters {
		ok, err := f.evalIn(fv.act, small)
		switch {
		case err != nil:
			c.add(Finding{Code: FindingFilterExcluded, Text: fmt.Sprintf("filter %q cannot be evaluated: %v", f.expr, err)})
		case !ok:
			c.add(Finding{Code: FindingFilterExcluded, Text: fmt.Sprintf("filter %q excludes the record", f.expr)})
		}
	}
	return c.findings
}

func parseSummary(record []byte) (*Summary, bool) {
	if !maySummarise(record) || !bytes.Contains(record, []byte(`"ssanet_summary"`)) {
		return nil, false
	}
	var r summaryRecord
	d := json.NewDecoder(bytes.NewReader(record))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil || r.Summary == nil {
		return nil, false
	}
	return r.Summary, true
}

// maySummarise reports whether record may decode as a summary record, looking only at its
// first member name: a summary record is an object with no member but ssanet_summary (in any
// case, as encoding/json matches names), so a record whose first name is plain ASCII and
// another is not one. It spares a raw record a search for the name through all its bytes.
func maySummarise(record []byte) bool {
	i := skipJSONSpace(record, 0)
	if i == len(record) || record[i] != '{' {
		return false
	}
	i = skipJSONSpace(record, i+1)
	if i == len(record) || record[i] != '"' {
		return false
	}
	end := bytes.IndexByte(record[i+1:], '"')
	if end < 0 {
		return false
	}
	name := record[i+1 : i+1+end]
	for _, c := range name {
		if c == '\\' || c >= utf8.RuneSelf {
			return true // escaped or not ASCII: left to the decoder
		}
	}
	return bytes.EqualFold(name, []byte("ssanet_summary"))
}

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// checker collects the findings of Verify; the walker hands it every value as written.
type checker struct {
	p        *SSP
	findings []Finding
}

func (c *checker) add(f Finding) {
	if len(c.findings) < maxFindings {
		c.findings = append(c.findings, f)
	}
}

// maskedAny reports whether masking may have changed one of fields in this format.
func (c *checker) maskedAny(spec *formatSpec, fields []string) bool {
	for _, m := range c.p.masks {
		if m.Method == protocol.MaskNone {
			continue
		}
		for _, f := range fields {
			if m.Scope == protocol.ScopeFields && m.hasField(f) {
				return true
			}
			if k := spec.fields[f]; m.Scope != protocol.ScopeFields && k != kindInt && k != kindTime {
				return true
			}
		}
	}
	return false
}

func (c *checker) text(field, s string, dropped bool, sl slot) {
	// An unnamed value (a member name, a field outside the view) matters only for its
	// addresses.
	if dropped || field == "" && !mayHoldIP(s) {
		return
	}
	for i := range c.p.masks {
		m := &c.p.masks[i]
		if m.Method == protocol.MaskNone {
			continue
		}
		if m.Scope == protocol.ScopeFields {
			if field == "" || !m.hasField(field) {
				continue
			}
			v := strings.TrimSpace(s)
			if isRemoved(v) {
				continue
			}
			switch m.Method {
			case protocol.MaskRemove:
				c.add(Finding{Code: FindingNotRemoved, Field: field, Text: "the field is still present"})
			case protocol.MaskHMAC:
				if !isSlotToken(v, sl) {
					c.add(Finding{Code: FindingNotHashed, Field: field, Text: "the value is not an hmac token"})
				}
			case protocol.MaskTruncate:
				c.addresses(m, field, s, false)
			}
			continue
		}
		c.addresses(m, field, s, m.Scope == protocol.ScopePublicIP)
	}
}

// unnamed checks unnamed text (a member name, a value outside the view) from the address
// literals findIPs found in it, as text("", …) would: only the address scopes apply to it.
func (c *checker) unnamed(spans []ipSpan) {
	for i := range c.p.masks {
		if m := &c.p.masks[i]; m.Method != protocol.MaskNone && m.Scope != protocol.ScopeFields {
			c.addressSpans(m, "", spans, m.Scope == protocol.ScopePublicIP)
		}
	}
}

func (c *checker) addresses(m *maskRule, field, s string, publicOnly bool) {
	if !mayHoldIP(s) || m.Method == protocol.MaskCryptoPAn {
		return
	}
	var spans [4]ipSpan
	c.addressSpans(m, field, findIPs(spans[:0], s), publicOnly)
}

// addressSpans checks the addresses found in a value of field against m.
func (c *checker) addressSpans(m *maskRule, field string, spans []ipSpan, publicOnly bool) {
	if m.Method == protocol.MaskCryptoPAn {
		return
	}
	for _, sp := range spans {
		a := sp.addr
		// An address of tokenPrefix is an hmac token; the unspecified address is what remove
		// leaves in a required address field. Neither names a host.
		if publicOnly && !IsPublic(a) || tokenPrefix.Contains(a) || a.IsUnspecified() {
			continue
		}
		what := "address"
		if publicOnly {
			what = "public address"
		}
		switch m.Method {
		case protocol.MaskTruncate:
			if Truncate(a, m.Bits) != a.WithZone("") {
				c.add(Finding{Code: FindingNotTruncated, Field: field, Text: fmt.Sprintf("%s %s has non-zero low %d bits", what, a, m.Bits)})
			}
		default:
			c.add(Finding{Code: FindingUnmaskedIP, Field: field, Text: fmt.Sprintf("%s %s should be %s", what, a, pastTense(m.Method))})
		}
	}
}

func pastTense(method string) string {
	if method == protocol.MaskHMAC {
		return "hashed"
	}
	return "removed"
}

func (c *checker) summary(s *Summary) {
	spec := c.p.summary
	if len(s.Top) > int(spec.TopN) {
		c.add(Finding{Code: FindingTopTooLong, Field: spec.GroupBy, Text: fmt.Sprintf("%d values, the SSA allows top %d", len(s.Top), spec.TopN)})
	}
	if s.GroupBy != spec.GroupBy || s.RankBy != spec.RankBy {
		c.add(Finding{Code: FindingWrongFormat, Text: fmt.Sprintf("summary of %s by %s, the SSA agrees %s by %s", s.GroupBy, s.RankBy, spec.GroupBy, spec.RankBy)})
	}
	for _, t := range s.Top {
		c.text(spec.GroupBy, t.Value, false, slotText)
	}
}

// RecordFindings are the findings of one record of a stream.
type RecordFindings struct {
	Line     int   // line of the record's first byte, from 1
	Offset   int64 // byte offset of the record's first byte
	Findings []Finding
}

// VerifyStream verifies every record read from r, cut as Run cuts them (under a
// summarisation, one summary per line). It returns the records with findings, in order,
// and the number of records read; a record that cannot be cut out is a wrong-format
// finding. The error is that of reading or ctx.
func VerifyStream(ctx context.Context, p *SSP, format string, r io.Reader) ([]RecordFindings, int64, error) {
	spec, ok := p.format(format)
	if !ok {
		return []RecordFindings{{Line: 1, Findings: Verify(p, format, nil)}}, 0, nil
	}
	v := NewVerifier(p)
	fr := spec.framing
	if p.summary != nil {
		fr = frameLine
	}
	sp := newSplitter(r, fr)
	var out []RecordFindings
	var n int64
	for ; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return out, n, err
			}
		}
		rec, line, off, err := sp.next()
		if errors.Is(err, io.EOF) {
			return out, n, nil
		}
		var ioErr *readError
		if errors.As(err, &ioErr) {
			return out, n, ioErr.err
		}
		var fs []Finding
		if err != nil {
			fs = []Finding{{Code: FindingWrongFormat, Text: err.Error()}}
		} else {
			fs = v.Verify(format, rec)
		}
		if len(fs) > 0 {
			out = append(out, RecordFindings{Line: line, Offset: off, Findings: fs})
		}
	}
}
