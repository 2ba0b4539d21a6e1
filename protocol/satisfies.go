package protocol

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Satisfies lists every way the proposal p fails the requirements of template t (a request
// or an offer's terms). An empty result means p is acceptable to t's author. Like Meet, it
// goes component by component.
//
// Against an offer's terms (any template that is not a request, see isRequest), every key ID
// of p's cryptopan and hmac rules must be one that t's own rules set for the same target: a
// key ID from anywhere else was chosen by the requester, which may know the key it names.
// Against a request, key IDs are not checked: the requester cannot resolve any of them, and
// masking is no weaker for the requester's own key ID being left out.
func Satisfies(p, t *SSA) []Reason { return satisfies(p, t, "proposal") }

// satisfies is Satisfies with reasons that name p as what: a proposal or a revision.
func satisfies(p, t *SSA, what string) []Reason {
	pp, tp := orEmpty(p.Policy), orEmpty(t.Policy)
	var rs []Reason
	rs = append(rs, satisfiesInformation(p.Information, t.Information, what)...)
	if !isRequest(t) {
		rs = append(rs, satisfiesMaskKeys(pp.Masking, tp.Masking)...)
	}
	rs = append(rs, satisfiesMasking(pp.Masking, tp.Masking, what)...)
	rs = append(rs, satisfiesFiltering(pp.Filtering, tp.Filtering, what)...)
	rs = append(rs, satisfiesSummarization(pp.Summarization, tp.Summarization, what)...)
	rs = append(rs, satisfiesHandling(pp.Handling, tp.Handling, what)...)
	rs = append(rs, satisfiesSubset(p.Method.Protocols, t.Method.Protocols, CodeMethodProtocol, "method.protocols", what)...)
	rs = append(rs, satisfiesSubset(p.Method.Security, t.Method.Security, CodeMethodSecurity, "method.security", what)...)
	rs = append(rs, satisfiesSchedule(p.Schedule, t.Schedule, what)...)
	return append(rs, satisfiesOther(p.Other, t.Other, what)...)
}

func reason(c Code, component, text string) Reason {
	return Reason{Code: c, Component: component, Text: text}
}

// orEmpty reads a missing policy as the empty one.
func orEmpty(p *Policy) *Policy {
	if p == nil {
		return &Policy{}
	}
	return p
}

func satisfiesInformation(p, t []Information, what string) []Reason {
	var rs []Reason
	if len(p) == 0 {
		rs = append(rs, reason(CodeInformation, "information", "the "+what+" shares nothing"))
	}
	for _, in := range p {
		if !slices.ContainsFunc(t, func(x Information) bool { return x.Type == in.Type && x.Format == in.Format }) {
			rs = append(rs, reason(CodeInformation, "information", in.Type+"/"+in.Format+" was not asked for or offered"))
		}
	}
	return rs
}

// satisfiesMaskKeys checks that every key ID of the proposal's rules is one the offer's rules
// t set for the same target.
func satisfiesMaskKeys(p, t []MaskRule) []Reason {
	var rs []Reason
	for _, r := range p {
		if r.KeyID != "" && !slices.ContainsFunc(t, func(o MaskRule) bool { return o.Target() == r.Target() && o.KeyID == r.KeyID }) {
			rs = append(rs, reason(CodeMasking, "policy.masking", "the "+describeMask(r)+" rule names a key ID the offer does not set for "+r.Target()+
				": only the provider chooses masking keys; leave key-id out and the provider's secret key applies"))
		}
	}
	return rs
}

// satisfiesMasking checks every rule of the template: a target it keeps unmasked stays so, one
// it masks is masked at least as strongly, within its max-bits tolerance.
func satisfiesMasking(p, t []MaskRule, what string) []Reason {
	rules := map[string]MaskRule{}
	for _, r := range p {
		rules[r.Target()] = r
	}
	var rs []Reason
	for _, r := range t {
		got, ok := rules[r.Target()]
		switch {
		case r.Method == MaskNone && ok:
			rs = append(rs, reason(CodeMasking, "policy.masking", r.Target()+" must stay unmasked, the "+what+" applies "+describeMask(got)))
		case r.Method != MaskNone && (!ok || !stronger(got, r)):
			rs = append(rs, reason(CodeMasking, "policy.masking", "the "+what+" does not apply "+describeMask(r)))
		}
		if ok && r.MaxBits > 0 && (got.Method != MaskTruncate || got.Bits > r.MaxBits) {
			rs = append(rs, reason(CodeMasking, "policy.masking", fmt.Sprintf("%s is masked beyond the %d bits tolerated", r.Target(), r.MaxBits)))
		}
	}
	return rs
}

func satisfiesFiltering(p, t []Filter, what string) []Reason {
	var rs []Reason
	for _, f := range t {
		if !slices.Contains(p, f) {
			rs = append(rs, reason(CodeFiltering, "policy.filtering", "the "+what+" drops the filter "+f.Expr))
		}
	}
	return rs
}

func satisfiesSummarization(p, t *Summarization, what string) []Reason {
	if t == nil {
		return nil
	}
	if p == nil || p.GroupBy != t.GroupBy || p.RankBy != t.RankBy || p.TopN > t.TopN || p.Window < t.Window {
		return []Reason{reason(CodeSummarization, "policy.summarization", "the "+what+" does not summarise as required")}
	}
	return nil
}

func satisfiesHandling(p, t *Handling, what string) []Reason {
	if t == nil {
		return nil
	}
	if p == nil {
		p = &Handling{}
	}
	var rs []Reason
	if level(TLPLevels, p.TLP) < level(TLPLevels, t.TLP) {
		rs = append(rs, reason(CodeHandling, "policy.handling", "the "+what+"'s TLP "+orNone(p.TLP)+" is weaker than "+t.TLP))
	}
	if t.Retention > 0 && (p.Retention == 0 || p.Retention > t.Retention) {
		rs = append(rs, reason(CodeHandling, "policy.handling", "the "+what+" keeps records longer than "+t.Retention.String()))
	}
	if t.Redistribution != "" && (p.Redistribution == "" || level(RedistributionLevels, p.Redistribution) > level(RedistributionLevels, t.Redistribution)) {
		rs = append(rs, reason(CodeHandling, "policy.handling", "the "+what+" allows wider redistribution than "+t.Redistribution))
	}
	return rs
}

// satisfiesSubset checks one list of the method: the proposal's choices must all be among the
// template's, which lists none when it accepts anything.
func satisfiesSubset(p, t []string, c Code, component string, what string) []Reason {
	if len(t) == 0 {
		return nil
	}
	var rs []Reason
	if len(p) == 0 {
		rs = append(rs, reason(c, component, "the "+what+" names none of "+strings.Join(t, ", ")))
	}
	for _, g := range p {
		if !slices.Contains(t, g) {
			rs = append(rs, reason(c, component, g+" is not one of "+strings.Join(t, ", ")))
		}
	}
	return rs
}

func satisfiesSchedule(p, t Schedule, what string) []Reason {
	if (t.Start != 0 && p.Start < t.Start) || (t.End != 0 && (p.End == 0 || p.End > t.End)) {
		return []Reason{reason(CodeSchedule, "schedule", "the "+what+"'s schedule "+describeSchedule(p)+" is outside "+describeSchedule(t))}
	}
	return nil
}

// satisfiesOther checks that the proposal carries every other component of the template as
// it is, in the order of their names.
func satisfiesOther(p, t Extensions, what string) []Reason {
	var rs []Reason
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if !bytes.Equal(p[k], t[k]) {
			rs = append(rs, reason(CodeUnspecified, "other."+k, "the "+what+" does not carry this component as required"))
		}
	}
	return rs
}

// isRequest reports whether template t is a request: an SSA with status proposal, as every
// request is (Start sets it, and a received request without it is refused). An offer's terms
// carry no status (Offer.Validate), so they are never taken for a request.
func isRequest(t *SSA) bool { return t.Status == StatusProposal }
