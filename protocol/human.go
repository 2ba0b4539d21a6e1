package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrTemplate means a human-written YAML document could not be read; the message names the
// key and line.
var ErrTemplate = errors.New("protocol: bad template")

// timeKeys are the YAML keys whose values are Times and so may be written relative to the
// moment the template is loaded ("now", "now+720h", "now+365d"), so templates never go stale.
var timeKeys = map[string]bool{"start": true, "end": true, "date": true, "expires": true}

var relTime = regexp.MustCompile(`^now\s*(?:([+-])\s*([0-9]+[a-z]*))?$`)

// maxOffset is the largest offset from now a relative time may have: what time.Duration holds.
const maxOffset = Duration(math.MaxInt64 / int64(time.Second))

// ParseSSAYAML reads an SSA template written by a person. Unknown keys are an error that
// names the key and its line. Times may be RFC 3339 or relative to now.
func ParseSSAYAML(data []byte, now time.Time) (*SSA, error) {
	var s SSA
	if err := decodeYAML(data, now, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// decodeYAML decodes one YAML document strictly into v, resolving relative times. The strict
// pass runs over the text as written, so an unknown key is reported at its own line; the
// relative times are then resolved in the node tree, which is decoded into v.
func decodeYAML(data []byte, now time.Time, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the document is empty", ErrTemplate)
		}
		if line := retiredKeyLine(data); line > 0 {
			return fmt.Errorf("%w: line %d: a masking rule carries its key; keys are no longer written in templates or offers, "+
				"since the requester reads the SSA and could undo the masking with the key: write the 64 hex digits to the file keys/NAME "+
				"in the provider's home (mode 0600) and name it in the rule with key-id: NAME", ErrTemplate, line)
		}
		return fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	if err := resolveTimes(&root, now); err != nil {
		return err
	}
	reflect.ValueOf(v).Elem().SetZero()
	if err := root.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrTemplate, err)
	}
	return nil
}

// retiredKeyLine returns the line of the first "key" of a masking rule in the YAML text
// data, or 0 if there is none: the retired MaskRule field that held a key in the clear.
func retiredKeyLine(data []byte) int {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return 0
	}
	var find func(n *yaml.Node) int
	find = func(n *yaml.Node) int {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Value != "masking" || v.Kind != yaml.SequenceNode {
					continue
				}
				for _, r := range v.Content {
					for j := 0; r.Kind == yaml.MappingNode && j+1 < len(r.Content); j += 2 {
						if r.Content[j].Value == "key" {
							return r.Content[j].Line
						}
					}
				}
			}
		}
		for _, c := range n.Content {
			if l := find(c); l > 0 {
				return l
			}
		}
		return 0
	}
	return find(&root)
}

// resolveTimes rewrites relative times under time keys in place. Extension values ("other")
// are kept as written.
func resolveTimes(n *yaml.Node, now time.Time) error {
	if n.Kind != yaml.MappingNode {
		for _, c := range n.Content {
			if err := resolveTimes(c, now); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Value == "other":
		case timeKeys[k.Value] && v.Kind == yaml.ScalarNode && strings.HasPrefix(v.Value, "now"):
			t, err := parseRelTime(v.Value, now)
			if err != nil {
				return fmt.Errorf("%w: line %d: %s: %v", ErrTemplate, v.Line, k.Value, err)
			}
			v.Value, v.Tag, v.Style = t.UTC().Format(time.RFC3339), "!!str", 0
		default:
			if err := resolveTimes(v, now); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseRelTime(s string, now time.Time) (time.Time, error) {
	m := relTime.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("%q is not \"now\" or \"now+DURATION\"", s)
	}
	if m[1] == "" {
		return now, nil
	}
	d, err := ParseDuration(m[2])
	if err != nil {
		return time.Time{}, err
	}
	if d > maxOffset {
		return time.Time{}, fmt.Errorf("%q is too far from now", s)
	}
	if m[1] == "-" {
		d = -d
	}
	return now.Add(time.Duration(d) * time.Second), nil
}

// ParseDuration reads a duration as Go writes it ("90m", "720h") or with a day suffix
// ("30d"), or as whole seconds ("3600").
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return Duration(n), nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n > math.MaxInt64/86400 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return Duration(n * 86400), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (write e.g. 90m, 720h or 30d)", s)
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("bad duration %q: whole seconds only", s)
	}
	return Duration(d / time.Second), nil
}

func (d Duration) String() string {
	switch {
	case d%86400 == 0 && d != 0:
		return strconv.FormatInt(int64(d/86400), 10) + "d"
	case d > maxOffset || d < -maxOffset: // beyond time.Duration: whole seconds
		return strconv.FormatInt(int64(d), 10)
	}
	return (time.Duration(d) * time.Second).String()
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) * time.Second }

// UnmarshalYAML reads a duration such as 720h, 30d or 3600.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes a duration in its human form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON writes a duration in its human form.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration in its human form.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseDuration(s)
	*d = v
	return err
}

// FromTime converts a time.Time to a Time.
func FromTime(t time.Time) Time { return Time(t.Unix()) }

// Std returns t as a time.Time in UTC.
func (t Time) Std() time.Time { return time.Unix(int64(t), 0).UTC() }

func (t Time) String() string { return t.Std().Format(time.RFC3339) }

// UnmarshalYAML reads an RFC 3339 time. A relative time ("now+720h") is accepted as zero
// here: decodeYAML resolves it before the value is used.
func (t *Time) UnmarshalYAML(n *yaml.Node) error {
	if relTime.MatchString(n.Value) {
		*t = 0
		return nil
	}
	v, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an RFC 3339 time nor now+DURATION", n.Line, n.Value)
	}
	*t = FromTime(v)
	return nil
}

// MarshalYAML writes an RFC 3339 time.
func (t Time) MarshalYAML() (any, error) { return t.String(), nil }

// MarshalJSON writes an RFC 3339 time.
func (t Time) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// UnmarshalJSON reads an RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339, s)
	*t = FromTime(v)
	return err
}

// UnmarshalYAML reads a status name.
func (s *Status) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseStatus(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*s = v
	return nil
}

// MarshalYAML writes a status name.
func (s Status) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON writes a status name.
func (s Status) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads a status name.
func (s *Status) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	st, err := ParseStatus(v)
	*s = st
	return err
}

// UnmarshalYAML turns each extension value into canonical CBOR. Floats are refused: signed
// data carries none.
func (e *Extensions) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return err
	}
	out := make(Extensions, len(m))
	for k, v := range m {
		if err := noFloats(v); err != nil {
			return fmt.Errorf("line %d: other.%s: %v", n.Line, k, err)
		}
		b, err := Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: other.%s: %v", n.Line, k, err)
		}
		out[k] = b
	}
	*e = out
	return nil
}

func noFloats(v any) error {
	switch x := v.(type) {
	case float32, float64:
		return errors.New("floating-point values are not allowed in signed data; write a string or an integer")
	case map[string]any:
		for _, e := range x {
			if err := noFloats(e); err != nil {
				return err
			}
		}
	case map[any]any: // a map with keys that are not all strings
		for k, e := range x {
			if err := noFloats(k); err != nil {
				return err
			}
			if err := noFloats(e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range x {
			if err := noFloats(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// plain decodes each extension value for display.
func (e Extensions) plain() (map[string]any, error) {
	out := make(map[string]any, len(e))
	for k, raw := range e {
		var v any
		if err := decMode.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: other.%s: %v", ErrMalformed, k, err)
		}
		out[k] = stringKeys(v)
	}
	return out, nil
}

func stringKeys(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = stringKeys(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = stringKeys(e)
		}
	}
	return v
}

// MarshalYAML writes extension values in their plain form.
func (e Extensions) MarshalYAML() (any, error) { return e.plain() }

// MarshalJSON writes extension values in their plain form.
func (e Extensions) MarshalJSON() ([]byte, error) {
	m, err := e.plain()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// YAML returns the human form of s, as a template would write it.
func (s *SSA) YAML() ([]byte, error) { return yaml.Marshal(s) }

// UnmarshalJSON turns each extension value back into canonical CBOR. Numbers must be
// integers: signed data carries no floats.
func (e *Extensions) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	out := make(Extensions, len(m))
	for k, v := range m {
		v, err := jsonIntegers(v)
		if err != nil {
			return fmt.Errorf("other.%s: %w", k, err)
		}
		if out[k], err = Marshal(v); err != nil {
			return fmt.Errorf("other.%s: %w", k, err)
		}
	}
	*e = out
	return nil
}

func jsonIntegers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return nil, errors.New("floating-point values are not allowed in signed data")
		}
		return n, nil
	case map[string]any:
		for k, e := range x {
			var err error
			if x[k], err = jsonIntegers(e); err != nil {
				return nil, err
			}
		}
	case []any:
		for i, e := range x {
			var err error
			if x[i], err = jsonIntegers(e); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}
