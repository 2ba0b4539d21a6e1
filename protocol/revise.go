package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// A revision (clause 10.2.4) changes some components of the SSA in force and keeps the
// others. The terms it asks for are built here from what an operator writes: a template,
// full or partial, merged over the SSA in force, and single values set by path. Only the
// negotiable components are taken: information, policy, method, schedule and other. What a
// template says of its ID, version, status, participants, date or validity is left out
// (the negotiation sets them), so the template of a request, or the YAML of `ssa show`,
// can be given as a revision as it is.

// ErrRevisionPath means a path given to set a value of a revision names no component that
// can be set; the message lists those that can.
var ErrRevisionPath = errors.New("protocol: no such revision path")

// revisionPaths are the paths a revision takes from a template or a set, in the order they
// are listed to operators. A template gives a path by giving its key; maps merge key by key
// down to these paths, whose values replace those of the SSA in force whole (a list is
// replaced, not appended to). other.NAME, for any NAME, is one too.
var revisionPaths = []string{
	"information",
	"policy.masking", "policy.filtering", "policy.summarization",
	"policy.handling.tlp", "policy.handling.retention", "policy.handling.redistribution",
	"method.protocols", "method.security", "method.access",
	"schedule.start", "schedule.end",
}

// RevisionPaths lists the paths a revision's values can be set at (other.NAME besides).
func RevisionPaths() []string { return slices.Clone(revisionPaths) }

// revisionPath returns the canonical form of a path an operator wrote: "policy." may be left
// out before masking, filtering, summarization and handling.
func revisionPath(p string) (string, error) {
	for _, short := range []string{"masking", "filtering", "summarization", "handling"} {
		if p == short || strings.HasPrefix(p, short+".") {
			p = "policy." + p
			break
		}
	}
	if slices.Contains(revisionPaths, p) {
		return p, nil
	}
	if name, ok := strings.CutPrefix(p, "other."); ok && name != "" && !strings.Contains(name, ".") {
		return p, nil
	}
	return "", fmt.Errorf("%w %q: set one of %s, or other.NAME (policy. may be left out)", ErrRevisionPath, p, strings.Join(revisionPaths, ", "))
}

// RevisionTerms returns the terms of a revision of inForce: a copy of inForce in which every
// negotiable component that template (YAML; empty for none) gives replaces the one in force,
// then each of sets ("path=value", value in YAML, as a template would write it at that path;
// an empty value clears the path) is applied in order. Relative times ("now", "now+30d") are read at now. The result keeps
// inForce's ID, version, status and participants: Revise sets them. An unknown key of the
// template, an unknown path, a value that does not parse or terms that are not a valid SSA
// are an error naming what is wrong.
func RevisionTerms(inForce *SSA, template []byte, sets []string, now time.Time) (*SSA, error) {
	out := inForce.Clone()
	out.Signatures = nil
	given := len(bytes.TrimSpace(template)) > 0
	if given {
		t, err := ParseSSAYAML(template, now)
		if err != nil {
			return nil, fmt.Errorf("the revision's template: %w", err)
		}
		var root yaml.Node
		if err := yaml.Unmarshal(template, &root); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTemplate, err)
		}
		paths := templatePaths(&root)
		if len(paths) == 0 {
			return nil, fmt.Errorf("%w: the revision's template gives none of information, policy, method, schedule or other: nothing to revise", ErrTemplate)
		}
		for _, p := range paths {
			setPath(out, t, p)
		}
	}
	for _, kv := range sets {
		if err := applySet(out, kv, now); err != nil {
			return nil, err
		}
	}
	if !given && len(sets) == 0 {
		return nil, fmt.Errorf("%w: a revision needs a template or a value to set", ErrTemplate)
	}
	if p := out.Policy; p != nil && len(p.Masking) == 0 && len(p.Filtering) == 0 && p.Summarization == nil && p.Handling == nil {
		out.Policy = nil
	}
	if len(out.Information) == 0 {
		return nil, fmt.Errorf("%w: the revision shares no information", ErrInvalidSSA)
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("the revision: %w", err)
	}
	return out, nil
}

// templatePaths lists the revision paths a template document gives, in document order.
func templatePaths(root *yaml.Node) []string {
	var out []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			p := prefix + k
			switch {
			case slices.Contains(revisionPaths, p), prefix == "other.":
				out = append(out, p)
			case slices.ContainsFunc(revisionPaths, func(r string) bool { return strings.HasPrefix(r, p+".") }), p == "other":
				walk(v, p+".")
			}
		}
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		walk(root.Content[0], "")
	}
	return out
}

// applySet applies one "path=value" to s.
func applySet(s *SSA, kv string, now time.Time) error {
	path, value, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("%w: set %q: write path=value, for example policy.handling.tlp=AMBER", ErrTemplate, kv)
	}
	path, err := revisionPath(strings.TrimSpace(path))
	if err != nil {
		return err
	}
	if strings.TrimSpace(value) == "" { // "schedule.end=": an open end; "summarization=": none
		setPath(s, &SSA{}, path)
		return nil
	}
	if path == "policy.handling.tlp" {
		value = strings.ToUpper(value) // TLP labels are upper case; amber means AMBER
	}
	var v yaml.Node
	if err := yaml.Unmarshal([]byte(value), &v); err != nil {
		return fmt.Errorf("%w: set %s: the value %q is not YAML: %v", ErrTemplate, path, value, err)
	}
	leaf := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	if v.Kind == yaml.DocumentNode && len(v.Content) == 1 {
		leaf = v.Content[0]
	}
	doc := leaf
	keys := strings.Split(path, ".")
	for i := len(keys) - 1; i >= 0; i-- {
		doc = &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: keys[i]}, doc}}
	}
	text, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%w: set %s: %v", ErrTemplate, path, err)
	}
	t, err := ParseSSAYAML(text, now)
	if err != nil {
		return fmt.Errorf("set %s=%s: %w", path, value, err)
	}
	setPath(s, t, path)
	return nil
}

// setPath copies the component at path from src into dst.
func setPath(dst, src *SSA, path string) {
	src = src.Clone()
	sp := orEmpty(src.Policy)
	pol := func() *Policy {
		if dst.Policy == nil {
			dst.Policy = &Policy{}
		}
		return dst.Policy
	}
	hand := func() *Handling {
		p := pol()
		if p.Handling == nil {
			p.Handling = &Handling{}
		}
		return p.Handling
	}
	sh := sp.Handling
	if sh == nil {
		sh = &Handling{}
	}
	switch path {
	case "information":
		dst.Information = src.Information
	case "policy.masking":
		pol().Masking = sp.Masking
	case "policy.filtering":
		pol().Filtering = sp.Filtering
	case "policy.summarization":
		pol().Summarization = sp.Summarization
	case "policy.handling.tlp":
		hand().TLP = sh.TLP
	case "policy.handling.retention":
		hand().Retention = sh.Retention
	case "policy.handling.redistribution":
		hand().Redistribution = sh.Redistribution
	case "method.protocols":
		dst.Method.Protocols = src.Method.Protocols
	case "method.security":
		dst.Method.Security = src.Method.Security
	case "method.access":
		dst.Method.Access = src.Method.Access
	case "schedule.start":
		dst.Schedule.Start = src.Schedule.Start
	case "schedule.end":
		dst.Schedule.End = src.Schedule.End
	default:
		name, _ := strings.CutPrefix(path, "other.")
		v, ok := src.Other[name]
		if !ok {
			delete(dst.Other, name)
			return
		}
		if dst.Other == nil {
			dst.Other = Extensions{}
		}
		dst.Other[name] = v
	}
	if h := orEmpty(dst.Policy).Handling; h != nil && *h == (Handling{}) {
		dst.Policy.Handling = nil
	}
}

// SetTerms copies the negotiable components (information, policy, method, schedule, other)
// of src into dst, leaving dst's ID, version, status, participants and dates.
func SetTerms(dst, src *SSA) {
	c := src.Clone()
	dst.Information, dst.Policy, dst.Method, dst.Schedule, dst.Other = c.Information, c.Policy, c.Method, c.Schedule, c.Other
}

// Changed lists the components in which b differs from a, named as reasons name them
// (information, policy.masking, policy.filtering, policy.summarization, policy.handling,
// method.protocols, method.security, method.access, schedule, other.NAME).
func Changed(a, b *SSA) []string {
	ap, bp := orEmpty(a.Policy), orEmpty(b.Policy)
	var out []string
	add := func(name string, same bool) {
		if !same {
			out = append(out, name)
		}
	}
	add("information", slices.Equal(a.Information, b.Information))
	add("policy.masking", reflect.DeepEqual(normRules(ap.Masking), normRules(bp.Masking)))
	add("policy.filtering", slices.Equal(ap.Filtering, bp.Filtering))
	add("policy.summarization", reflect.DeepEqual(ap.Summarization, bp.Summarization))
	add("policy.handling", reflect.DeepEqual(ap.Handling, bp.Handling))
	add("method.protocols", slices.Equal(a.Method.Protocols, b.Method.Protocols))
	add("method.security", slices.Equal(a.Method.Security, b.Method.Security))
	add("method.access", slices.Equal(a.Method.Access, b.Method.Access))
	add("schedule", a.Schedule == b.Schedule)
	names := slices.Sorted(maps.Keys(a.Other))
	for _, k := range slices.Sorted(maps.Keys(b.Other)) {
		if _, ok := a.Other[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		av, aok := a.Other[k]
		bv, bok := b.Other[k]
		add("other."+k, aok == bok && bytes.Equal(av, bv))
	}
	return out
}

// normRules is a rule list with nil for empty, so that an empty list equals a missing one.
func normRules(r []MaskRule) []MaskRule {
	if len(r) == 0 {
		return nil
	}
	return r
}

// RevisionSatisfies lists every way the revision rev fails template t (a requester's own
// request or revision, or a provider's offer terms) in the components rev changes from
// inForce, the version it supersedes: a component the revision leaves as agreed was
// accepted by both sides already and is not judged again. Reasons speak of "the revision".
func RevisionSatisfies(rev, inForce, t *SSA) []Reason {
	changed := Changed(inForce, rev)
	var out []Reason
	for _, r := range satisfies(rev, t, "revision") {
		if slices.Contains(changed, r.Component) {
			out = append(out, r)
		}
	}
	return out
}

// MeetRevision meets a revision with an offer by the rules of a request (see Meet), at time
// now, and returns why the provider cannot agree to it: the conflicts of the meet, else
// every way the revision fails the offer's terms (it must already be what the provider
// would propose, since a revision is confirmed or rejected as it is). None means the offer
// allows it.
func MeetRevision(rev *SSA, offer *Offer, now Time) []Reason {
	if _, conflicts := Meet(rev, offer, now); len(conflicts) > 0 {
		return conflicts
	}
	return satisfies(rev, &offer.Terms, "revision")
}
