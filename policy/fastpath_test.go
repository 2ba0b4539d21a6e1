package policy

import (
	"fmt"
	"strings"
	"testing"
)

// TestFastPathBound pins what the filters' fast path (evalIn with small, no runtime cost
// accounting) rests on: an accepted filter, run on a view whose values are all at
// viewValueHint (the longest a small view has), stays within FilterCostLimit under the
// cost-limited program.
func TestFastPathBound(t *testing.T) {
	ips := make([]string, viewValueHint)
	for i := range ips {
		ips[i] = fmt.Sprintf("2001:db8::%x:%x", i, i) // distinct, as the walker keeps them
	}
	long := strings.Repeat("é", viewValueHint/2) // 128 bytes, 64 runes
	view := map[string]any{"http.url": strings.Repeat("a", viewValueHint), "host": long, fieldRelatedIP: ips}
	act := newViewActivation(view)
	for _, expr := range []string{
		`r["http.url"].matches(r["host"])`,
		`r["http.url"].contains(r["host"]) || r["host"].startsWith(r["http.url"])`,
		`r["related.ip"].exists(a, a == "10.0.0.1")`,
		`r["related.ip"].exists(a, a.startsWith("10."))`,
		`"10.0.0.1" in r["related.ip"] && size(r["related.ip"]) < 100`,
		`r["host"] + r["http.url"] == r["http.url"] + r["host"]`,
	} {
		f, err := compileExpr(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if _, err := f.evalIn(act, false); err != nil {
			t.Errorf("%s: accepted, but not evaluated within the cost limit on a small view: %v", expr, err)
		}
	}
}
