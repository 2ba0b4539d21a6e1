package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// Problem is one thing wrong with an agent's home that would keep it from starting or
// working: in Source (empty: config.yaml; "offer ID": an offer in the store; else a template
// or offer file), at a line (0: no line, the file or the home as a whole).
type Problem struct {
	Source string `json:"source,omitempty"`
	Line   int    `json:"line,omitempty"`
	Msg    string `json:"message"`
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.Msg
	}
	return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
}

// CheckConfig, for `ssanet config check`, reads home's config.yaml and
// key as the agent does when it starts and reports every problem it finds, not only the
// first: unknown keys (with the key meant, where one is close), values of the wrong type,
// what Validate refuses (each sink and followed file on its own), and a followed file whose
// directory does not exist. Empty means the agent would start on this home.
func CheckConfig(home string) []Problem {
	var out []Problem
	add := func(line int, err error) {
		out = append(out, Problem{Line: line, Msg: strings.TrimPrefix(err.Error(), "config: ")})
	}
	if err := CheckHome(home); errors.Is(err, os.ErrNotExist) {
		return []Problem{{Msg: fmt.Sprintf("home %s does not exist: create it with ssanet --home %s init", home, home)}}
	} else if err != nil {
		add(0, err)
	}
	if _, err := LoadKey(home); err != nil {
		add(0, err)
	}
	path := filepath.Join(home, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		add(0, fmt.Errorf("read config: %w (run 'ssanet init' to create the agent's home)", err))
		return out
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
		return append(out, Problem{Line: line, Msg: msg})
	}
	if err := complete(data); err != nil {
		add(0, err)
		return out
	}
	top := doc.Content[0]
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			add(top.Line, err)
			return out
		}
		for _, e := range te.Errors {
			line, msg := splitLine(e)
			out = append(out, Problem{Line: line, Msg: unknownKey(msg)})
		}
	}
	for _, check := range []func() error{c.validateNetwork, c.validateLimits} {
		if err := check(); err != nil {
			add(lineOf(top, err), err)
		}
	}
	sinks := valueOf(top, "sinks")
	named := map[string]bool{}
	for i := range c.Sinks {
		if err := checkSink(&c.Sinks[i], named); err != nil {
			add(itemLine(sinks, i), err)
		}
	}
	follow := c.Ingest.Follow
	c.Ingest.Follow = nil // each followed file on its own, below
	if err := c.validateIngest(); err != nil {
		add(lineOf(top, err), err)
	}
	followed := valueOf(valueOf(top, "ingest"), "follow")
	for i, f := range follow {
		line := itemLine(followed, i)
		if err := f.validate(); err != nil {
			add(line, err)
			continue
		}
		dir := filepath.Dir(f.Path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			add(line, fmt.Errorf("ingest.follow %s: directory %s does not exist: create it, or fix the path", f.Path, dir))
		}
	}
	if t := valueOf(top, "taxii"); t != nil {
		for _, check := range []func() error{c.TAXII.Validate, func() error { return c.TAXII.CheckFiles(home) }} {
			if err := check(); err != nil {
				add(t.Line, err)
				break
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return a.Line - b.Line })
	return out
}

var lineRE = regexp.MustCompile(`^line (\d+): `)

// splitLine splits "line N: msg", as yaml words its errors, into N and msg.
func splitLine(s string) (int, string) {
	m := lineRE.FindStringSubmatch(s)
	if m == nil {
		return 0, s
	}
	n, _ := strconv.Atoi(m[1])
	return n, s[len(m[0]):]
}

var unknownRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// unknownKey rewords yaml's "field K not found in type T" with the key of T nearest to K.
func unknownKey(msg string) string {
	m := unknownRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	out := "unknown key " + m[1]
	best, dist := "", 3 // suggest keys at most two edits away
	for _, k := range yamlKeys(reflect.TypeOf(Config{}), m[2]) {
		if d := editDistance(m[1], k); d < dist || (d == dist && strings.HasPrefix(k, m[1])) {
			best, dist = k, d
		}
	}
	if best != "" {
		out += fmt.Sprintf(" (did you mean %s?)", best)
	}
	return out
}

// yamlKeys are the keys of the struct type named name (as in "agent.Config") among t and the
// types it holds; nil when there is none.
func yamlKeys(t reflect.Type, name string) []string {
	seen := map[reflect.Type]bool{}
	var find func(t reflect.Type) []string
	find = func(t reflect.Type) []string {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return nil
		}
		seen[t] = true
		var keys []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" {
				tag = strings.ToLower(f.Name)
			}
			keys = append(keys, tag)
		}
		if t.String() == name {
			return keys
		}
		for i := range t.NumField() {
			if k := find(t.Field(i).Type); k != nil {
				return k
			}
		}
		return nil
	}
	return find(t)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// valueOf is the value of key in mapping n, or nil.
func valueOf(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// itemLine is the line of item i of sequence n, or 0.
func itemLine(n *yaml.Node, i int) int {
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return 0
	}
	return n.Content[i].Line
}

var quotedRE = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// lineOf is the line a validation error is about: that of the first value it quotes, found
// under the top-level key it names ("config: KEY ..."), else that of the key, else 0.
func lineOf(top *yaml.Node, err error) int {
	msg := strings.TrimPrefix(err.Error(), "config: ")
	var key *yaml.Node
	var val *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k := top.Content[i].Value
		if strings.HasPrefix(msg, k) && (key == nil || len(k) > len(key.Value)) {
			key, val = top.Content[i], top.Content[i+1]
		}
	}
	if key == nil {
		return 0
	}
	if m := quotedRE.FindStringSubmatch(msg); m != nil {
		if q, uerr := strconv.Unquote(m[0]); uerr == nil {
			if n := findScalar(val, q); n != nil {
				return n.Line
			}
		}
	}
	return key.Line
}

// findScalar is the first scalar with value v in the tree n, bounded by the tree's size.
func findScalar(n *yaml.Node, v string) *yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Value == v {
		return n
	}
	for _, c := range n.Content {
		if f := findScalar(c, v); f != nil {
			return f
		}
	}
	return nil
}

// CheckOffers checks the offers in the running agent's store as CheckStoredOffers does, with
// its compiler and its config (control API GET /v1/offers/check).
func (a *Agent) CheckOffers() ([]Problem, error) {
	offers, err := a.store.Offers()
	if err != nil {
		return nil, err
	}
	ms := methods{protocols: deliveryProtocols, security: a.cfg.security()}
	out := []Problem{}
	for _, o := range offers {
		out = append(out, checkOffer(a.home, o, "offer "+o.ID, a.neg.now(), a.compiler, ms)...)
	}
	return out, nil
}

// CheckStoredOffers, for `ssanet config check` while the agent is stopped, opens home's store
// and checks every offer in it for what would make the agent refuse, at negotiation, each
// request the offer matches: an offer that does not validate, a schedule that has ended, an
// unknown format, a policy the enforcement point cannot enforce (a filter that does not
// compile or costs too much, a masking rule it cannot apply), a masking key the home lacks,
// a method this agent cannot honour. A home whose store was never created has no offers.
func CheckStoredOffers(home string) (_ []Problem, err error) {
	cfg, err := LoadConfig(filepath.Join(home, ConfigFile))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(home, DataDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return []Problem{}, nil
	}
	key, err := storageKey(home, cfg)
	if err != nil {
		return nil, err
	}
	st, err := storage.Open(dir, storage.Options{EncryptionKey: key, Reserve: cfg.StorageReserveMiB << 20})
	if err != nil {
		return nil, fmt.Errorf("open store to read the offers: %w", err)
	}
	defer func() { err = errors.Join(err, st.Close()) }()
	offers, err := st.Offers()
	if err != nil {
		return nil, err
	}
	c := policy.NewCompiler(compiledFilters)
	ms := methods{protocols: deliveryProtocols, security: cfg.security()}
	out := []Problem{}
	for _, o := range offers {
		out = append(out, checkOffer(home, o, "offer "+o.ID, time.Now(), c, ms)...)
	}
	return out, nil
}

// CheckFiles checks template and offer files (an offer is a document with terms:) as the
// agent reads them at `ssanet request` and `ssanet offer add`, and an offer as
// CheckStoredOffers does; each problem names its file and, where the parser says, its line.
func CheckFiles(home string, paths []string) []Problem {
	security := defaultSecurity
	if cfg, err := LoadConfig(filepath.Join(home, ConfigFile)); err == nil {
		security = cfg.security()
	}
	ms := methods{protocols: deliveryProtocols, security: security}
	c := policy.NewCompiler(compiledFilters)
	now := time.Now()
	var out []Problem
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			out = append(out, Problem{Source: path, Msg: err.Error()})
			continue
		}
		var doc struct {
			Terms yaml.Node `yaml:"terms"`
		}
		if yaml.Unmarshal(data, &doc) == nil && !doc.Terms.IsZero() {
			o, err := protocol.ParseOfferYAML(data, now)
			if err != nil {
				out = append(out, fileProblem(path, err))
				continue
			}
			out = append(out, checkOffer(home, o, path, now, c, ms)...)
			continue
		}
		tmpl, err := protocol.ParseSSAYAML(data, now)
		if err != nil {
			out = append(out, fileProblem(path, err))
			continue
		}
		if r := ms.unsupported(tmpl.Method, protocol.RoleRequester); r != nil {
			out = append(out, Problem{Source: path, Msg: reasonsText(r)})
		}
		if err := c.Check(tmpl); err != nil {
			out = append(out, Problem{Source: path, Msg: err.Error()})
		}
	}
	return out
}

var anyLineRE = regexp.MustCompile(`line (\d+): `)

// fileProblem is err of reading file path, at the line it names, if any, on one line.
func fileProblem(path string, err error) Problem {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if m := anyLineRE.FindStringSubmatchIndex(msg); m != nil {
		n, _ := strconv.Atoi(msg[m[2]:m[3]])
		return Problem{Source: path, Line: n, Msg: msg[:m[0]] + msg[m[1]:]}
	}
	return Problem{Source: path, Msg: msg}
}

// checkOffer is what would make the agent refuse, at negotiation, every request offer o
// matches; source names it in each problem.
func checkOffer(home string, o *protocol.Offer, source string, now time.Time, c *policy.Compiler, ms methods) []Problem {
	var out []Problem
	add := func(format string, a ...any) {
		out = append(out, Problem{Source: source, Msg: fmt.Sprintf(format, a...)})
	}
	if err := o.Validate(); err != nil {
		add("%v", err)
		return out
	}
	if end := o.Terms.Schedule.End; end != 0 && end.Std().Before(now) {
		add("its schedule ended at %s: every request for it is refused; remove it and add one with a later schedule", end)
	}
	known := true
	for i, in := range o.Terms.Information {
		if !slices.Contains(policy.Formats(), in.Format) {
			add("information[%d]: format %q is not one this agent can parse (%s): no request for it can be enforced", i, in.Format, strings.Join(policy.Formats(), ", "))
			known = false
		}
	}
	if known {
		if err := c.Check(&o.Terms); err != nil {
			add("%v: every proposal made from it is refused (policy-unenforceable)", err)
		}
	}
	if r := ms.unsupported(o.Terms.Method, protocol.RoleProvider); r != nil {
		add("%s: every proposal made from it is refused (method-unsupported)", reasonsText(r))
	}
	if p := o.Terms.Policy; p != nil {
		for i, r := range p.Masking {
			if r.KeyID == "" {
				continue
			}
			if _, err := readMaskKey(home, r.KeyID); err != nil {
				add("masking[%d] names key %q: %v", i, r.KeyID, err)
			}
		}
	}
	return out
}

// reasonsText joins the texts of reasons.
func reasonsText(rs []protocol.Reason) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.Component+": "+r.Text)
	}
	return strings.Join(parts, "; ")
}
