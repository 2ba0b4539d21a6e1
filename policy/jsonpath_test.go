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
