package protocol

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The meet (Appendix I step ③): the proposal that "meets all the requirements of both SSA-A
// and SSA-B", built from the requester's SSA and the provider's offer, component by
// component:
//
//   - information: the requested (type, format) pairs the offer shares, in the requester's
//     order of preference, one format per type (the first the requester lists that is
//     offered); none in common is a conflict.
//   - masking: rules are compared by target (scope, or the set of fields). A target masked by
//     one side only keeps that rule; masked by both, the stronger rule wins (none < truncate <
//     cryptopan < hmac < remove; two truncations: more bits). A side's tolerance is a
//     conflict when broken: "method: none" on a target the result masks, or max-bits below
//     the truncation (or a stronger method) that the result applies. Tolerances are usually
//     the requester's; a provider's are read the same way. The result carries no tolerance.
//     Masking keys are the provider's alone: a requester's key ID is never kept, so a
//     requester's cryptopan or hmac rule uses the key ID of the offer's rule for the same
//     target if it has one, else the provider's secret per-SSA key.
//   - filtering: the conjunction of both sides' filters.
//   - summarization: taken from the side that has one; if both do, they must rank the same
//     field the same way, and the result keeps the smaller top-N and the longer window.
//   - handling: the stricter TLP, the shorter retention, the narrower redistribution.
//   - method: the intersection of protocols and of security, in the requester's order (a side
//     that lists none accepts the other's). Empty intersection: conflict. Access is where the
//     requester reaches the provider, so it is the provider's to say: the offer's access (the
//     agent puts its current addresses there before the meet), without duplicates; a
//     requester's access is not kept.
//   - schedule: the intersection of both windows; empty, or already over, is a conflict.
//   - other components: the union; one name with two different values is a conflict.
//
// Satisfies checks the result against either input; the meet always satisfies both.
//
// An SSA is read by both parties, so it never carries a masking key: whoever knows the key of
// a cryptopan rule inverts it, and whoever knows the key of an hmac rule recomputes its
// tokens. An SSA names at most a key ID, which only the provider chooses (in its offer, or by
// leaving it out so that its secret per-SSA key applies) and only the provider can resolve.

var maskOrder = map[string]int{MaskNone: 0, MaskTruncate: 1, MaskCryptoPAn: 2, MaskHMAC: 3, MaskRemove: 4}

// stronger reports whether rule a hides at least as much as b on the same target.
func stronger(a, b MaskRule) bool {
	if maskOrder[a.Method] != maskOrder[b.Method] {
		return maskOrder[a.Method] > maskOrder[b.Method]
	}
	return a.Bits >= b.Bits
}

func describeMask(r MaskRule) string {
	switch r.Method {
	case MaskTruncate:
		return fmt.Sprintf("%s truncate %d bits", r.Target(), r.Bits)
	case MaskNone:
		return r.Target() + " unmasked"
	}
	return r.Target() + " " + r.Method
}

// Meet computes the provider's proposal from the requester's SSA and the provider's offer at
// time now, or the conflicts that prevent one.
func Meet(req *SSA, offer *Offer, now Time) (*SSA, []Reason) {
	off := &offer.Terms
	var conflicts []Reason
	p := &SSA{
		ID:         req.ID,
		Version:    max(req.Version, 1),
		Supersedes: req.Supersedes,
		Status:     StatusProposal,
		Participants: Participants{
			Requester: req.Participants.Requester,
			Provider:  off.Participants.Provider,
		},
		Expires: now + Time(offer.Validity()),
	}

	p.Information, conflicts = meetInformation(req.Information, off.Information, conflicts)
	p.Policy, conflicts = meetPolicy(req.Policy, off.Policy, conflicts)
	p.Method, conflicts = meetMethod(req.Method, off.Method, conflicts)
	p.Schedule, conflicts = meetSchedule(req.Schedule, off.Schedule, now, conflicts)
	p.Other, conflicts = meetOther(req.Other, off.Other, conflicts)
	if len(conflicts) > 0 {
		return nil, conflicts
	}
	return p, nil
}

func infoList(in []Information) string {
	s := make([]string, len(in))
	for i, x := range in {
		s[i] = x.Type + "/" + x.Format
	}
	return strings.Join(s, ", ")
}

func meetInformation(req, off []Information, conflicts []Reason) ([]Information, []Reason) {
	var out []Information
	for _, r := range req {
		if slices.ContainsFunc(out, func(o Information) bool { return o.Type == r.Type }) {
			continue
		}
		i := slices.IndexFunc(off, func(o Information) bool { return o.Type == r.Type && o.Format == r.Format })
		if i < 0 {
			continue
		}
		name := r.Name
		if name == "" {
			name = off[i].Name
		}
		out = append(out, Information{Name: name, Type: r.Type, Format: r.Format})
	}
	if len(out) == 0 {
		conflicts = append(conflicts, Reason{Code: CodeInformation, Component: "information",
			Requester: infoList(req), Provider: infoList(off),
			Text: "none of the requested information is offered in a requested format"})
	}
	return out, conflicts
}

func meetPolicy(req, off *Policy, conflicts []Reason) (*Policy, []Reason) {
	req, off = orEmpty(req), orEmpty(off)
	p := &Policy{}
	p.Masking, conflicts = meetMasking(req.Masking, off.Masking, conflicts)
	for _, f := range slices.Concat(req.Filtering, off.Filtering) {
		if !slices.Contains(p.Filtering, f) {
			p.Filtering = append(p.Filtering, f)
		}
	}
	p.Summarization, conflicts = meetSummarization(req.Summarization, off.Summarization, conflicts)
	p.Handling = meetHandling(req.Handling, off.Handling)
	if len(p.Masking) == 0 && len(p.Filtering) == 0 && p.Summarization == nil && p.Handling == nil {
		return nil, conflicts
	}
	return p, conflicts
}

func meetMasking(req, off []MaskRule, conflicts []Reason) ([]MaskRule, []Reason) {
	byTarget := map[string]MaskRule{}
	for _, r := range off {
		if r.Method == MaskNone {
			continue
		}
		r.MaxBits = 0
		if cur, ok := byTarget[r.Target()]; !ok || stronger(r, cur) {
			byTarget[r.Target()] = r
		}
	}
	for _, r := range req {
		if r.Method == MaskNone {
			continue
		}
		r.MaxBits, r.KeyID = 0, "" // a key the requester chose would let it undo the masking
		cur, ok := byTarget[r.Target()]
		switch {
		case !ok:
			byTarget[r.Target()] = r
		case stronger(r, cur) && !(r.Method == cur.Method && r.Bits == cur.Bits):
			if r.Method == MaskCryptoPAn || r.Method == MaskHMAC {
				r.KeyID = cur.KeyID // the provider's named key stays with its target
			}
			byTarget[r.Target()] = r
		}
	}
	conflicts = append(conflicts, maskTolerances(req, byTarget, true)...)
	conflicts = append(conflicts, maskTolerances(off, byTarget, false)...)
	keys := slices.Sorted(maps.Keys(byTarget))
	out := make([]MaskRule, 0, len(keys))
	for _, k := range keys {
		out = append(out, byTarget[k])
	}
	if len(out) == 0 {
		return nil, conflicts
	}
	return out, conflicts
}

// maskTolerances lists the conflicts between one side's tolerances ("none", max-bits) and the
// met rules, by target. They are read from both sides, as Satisfies reads them.
func maskTolerances(rules []MaskRule, met map[string]MaskRule, requester bool) []Reason {
	var conflicts []Reason
	for _, r := range rules {
		got, ok := met[r.Target()]
		if !ok || !(r.Method == MaskNone || (r.MaxBits > 0 && (got.Method != MaskTruncate || got.Bits > r.MaxBits))) {
			continue
		}
		want := r.Target() + " unmasked"
		if r.Method != MaskNone {
			want = fmt.Sprintf("%s truncate at most %d bits", r.Target(), r.MaxBits)
		}
		c := Reason{Code: CodeMasking, Component: "policy.masking",
			Requester: want, Provider: describeMask(got), Text: "the provider masks more than the requester tolerates"}
		if !requester {
			c.Requester, c.Provider, c.Text = describeMask(got), want, "the requester asks for more masking than the provider tolerates"
		}
		conflicts = append(conflicts, c)
	}
	return conflicts
}

func meetSummarization(req, off *Summarization, conflicts []Reason) (*Summarization, []Reason) {
	switch {
	case req == nil && off == nil:
		return nil, conflicts
	case req == nil:
		c := *off
		return &c, conflicts
	case off == nil:
		c := *req
		return &c, conflicts
	}
	if req.GroupBy != off.GroupBy || req.RankBy != off.RankBy {
		return nil, append(conflicts, Reason{Code: CodeSummarization, Component: "policy.summarization",
			Requester: "top by " + req.GroupBy + " ranked by " + req.RankBy,
			Provider:  "top by " + off.GroupBy + " ranked by " + off.RankBy,
			Text:      "both sides summarise, but not the same way"})
	}
	return &Summarization{GroupBy: req.GroupBy, RankBy: req.RankBy,
		TopN: min(req.TopN, off.TopN), Window: max(req.Window, off.Window)}, conflicts
}

func level(levels []string, v string) int { return slices.Index(levels, v) }

func meetHandling(req, off *Handling) *Handling {
	switch {
	case req == nil && off == nil:
		return nil
	case req == nil:
		c := *off
		return &c
	case off == nil:
		c := *req
		return &c
	}
	h := &Handling{TLP: req.TLP, Retention: req.Retention, Redistribution: req.Redistribution}
	if level(TLPLevels, off.TLP) > level(TLPLevels, h.TLP) {
		h.TLP = off.TLP
	}
	if off.Retention > 0 && (h.Retention == 0 || off.Retention < h.Retention) {
		h.Retention = off.Retention
	}
	if off.Redistribution != "" && (h.Redistribution == "" || level(RedistributionLevels, off.Redistribution) < level(RedistributionLevels, h.Redistribution)) {
		h.Redistribution = off.Redistribution
	}
	return h
}

// intersect keeps the elements of a also in b, in a's order; a side that lists nothing
// accepts everything.
func intersect(a, b []string) []string {
	switch {
	case len(a) == 0:
		return slices.Clone(b)
	case len(b) == 0:
		return slices.Clone(a)
	}
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func meetMethod(req, off Method, conflicts []Reason) (Method, []Reason) {
	m := Method{Protocols: intersect(req.Protocols, off.Protocols), Security: intersect(req.Security, off.Security)}
	if len(req.Protocols) > 0 && len(off.Protocols) > 0 && len(m.Protocols) == 0 {
		conflicts = append(conflicts, Reason{Code: CodeMethodProtocol, Component: "method.protocols",
			Requester: strings.Join(req.Protocols, ", "), Provider: strings.Join(off.Protocols, ", "),
			Text: "no delivery protocol in common"})
	}
	if len(req.Security) > 0 && len(off.Security) > 0 && len(m.Security) == 0 {
		conflicts = append(conflicts, Reason{Code: CodeMethodSecurity, Component: "method.security",
			Requester: strings.Join(req.Security, ", "), Provider: strings.Join(off.Security, ", "),
			Text: "no delivery security in common"})
	}
	for _, a := range off.Access {
		if !slices.Contains(m.Access, a) {
			m.Access = append(m.Access, a)
		}
	}
	return m, conflicts
}

func describeSchedule(s Schedule) string {
	str := func(t Time, open string) string {
		if t == 0 {
			return open
		}
		return t.String()
	}
	return str(s.Start, "always") + " to " + str(s.End, "open end")
}

func meetSchedule(req, off Schedule, now Time, conflicts []Reason) (Schedule, []Reason) {
	s := Schedule{Start: max(req.Start, off.Start), End: req.End}
	if off.End != 0 && (s.End == 0 || off.End < s.End) {
		s.End = off.End
	}
	if s.End != 0 && (s.End <= s.Start || s.End <= now) {
		conflicts = append(conflicts, Reason{Code: CodeSchedule, Component: "schedule",
			Requester: describeSchedule(req), Provider: describeSchedule(off),
			Text: "the schedules have no future time in common"})
	}
	return s, conflicts
}

func meetOther(req, off Extensions, conflicts []Reason) (Extensions, []Reason) {
	if len(req) == 0 && len(off) == 0 {
		return nil, conflicts
	}
	out := maps.Clone(req)
	if out == nil {
		out = Extensions{}
	}
	for _, k := range slices.Sorted(maps.Keys(off)) {
		if v, ok := out[k]; ok && !bytes.Equal(v, off[k]) {
			conflicts = append(conflicts, Reason{Code: CodeUnspecified, Component: "other." + k,
				Text: "both sides set this component to different values"})
			continue
		}
		out[k] = off[k]
	}
	return out, conflicts
}
