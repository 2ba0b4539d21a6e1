package policy

import (
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestJSONPaths checks which member a view field is read from: a path is the member names
// joined by dots, so a name holding a dot, or an empty name at the top, matches as the path
// it makes, and "*" is an array element.
func TestJSONPaths(t *testing.T) {
	const head = `{"timestamp":"2024-07-30T16:53:24.501575+0000","event_type":"flow",`
	tests := []struct {
		name, rec, field string
		want             any // nil: absent
	}{
		{"member", `"src_ip":"81.2.69.192"}`, "source.ip", "81.2.69.192"},
		{"nested", `"alert":{"signature":"x"}}`, "rule.name", "x"},
		{"dotted name", `"alert.signature":"y"}`, "rule.name", "y"},
		{"dotted name in an object", `"alert":{"x":1},"flow":{"a":{"b":2}},"http":{"hostname.x":"h"}}`, "url.domain", nil},
		{"empty name at the top", `"":{"src_ip":"81.2.69.1"}}`, "source.ip", "81.2.69.1"},
		{"empty name below", `"alert":{"":{"signature":"z"}}}`, "rule.name", nil},
		{"array element", `"alert":[{"signature":"w"}]}`, "rule.name", nil},
		{"escaped name", `"src\u005fip":"81.2.69.7"}`, "source.ip", "81.2.69.7"},
		{"deeper than the path", `"src_ip":{"a":"81.2.69.8"}}`, "source.ip", nil},
		{"int", `"flow":{"bytes_toserver":496}}`, "source.bytes", int64(496)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := &protocol.Policy{Filtering: []protocol.Filter{{Expr: `"` + tt.field + `" in r || true`}}}
			e, err := NewEnforcer(mustCompile(t, ssaFor(pol, "eve")), "eve", Config{})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 { // the second time with the tree's caches filled
				if _, err := e.Refine(nil, []byte(head+tt.rec)); err != nil {
					t.Fatal(err)
				}
				if got, ok := e.w.view[tt.field]; got != tt.want && !(tt.want == nil && !ok) {
					t.Errorf("%s = %v (present %v), want %v", tt.field, got, ok, tt.want)
				}
			}
		})
	}
}

// TestViewSmall checks when a filter may run without the runtime cost accounting: only
// when no string of the view is longer than viewValueHint bytes and related.ip has no more
// elements than viewValueHint.
func TestViewSmall(t *testing.T) {
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	ips := func(n int) string {
		s := ""
		for i := range n {
			s += "10.0." + itoa(i/256) + "." + itoa(i%256) + " "
		}
		return s
	}
	const head = `{"timestamp":"2024-07-30T16:53:24.501575+0000","event_type":"flow",`
	tests := []struct {
		name, rec string
		small     bool
	}{
		{"short", `"http":{"url":"/x"}}`, true},
		{"at the hint", `"http":{"url":"` + long(viewValueHint) + `"}}`, true},
		{"over the hint", `"http":{"url":"` + long(viewValueHint+1) + `"}}`, false},
		{"long unread field", `"payload":"` + long(10*viewValueHint) + `"}`, true},
		{"addresses at the hint", `"payload":"` + ips(viewValueHint) + `"}`, true},
		{"addresses over the hint", `"payload":"` + ips(viewValueHint+1) + `"}`, false},
	}
	pol := &protocol.Policy{Filtering: []protocol.Filter{{Expr: `r["url.original"] != "" || r["related.ip"].size() > 0`}}}
	e, err := NewEnforcer(mustCompile(t, ssaFor(pol, "eve")), "eve", Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		if _, err := e.Refine(nil, []byte(head+tt.rec)); err != nil {
			t.Fatal(err)
		}
		if got := e.w.small(); got != tt.small {
			t.Errorf("%s: small = %v, want %v", tt.name, got, tt.small)
		}
	}
}
