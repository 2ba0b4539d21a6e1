package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestFilterCostEstimated: a filter whose estimated worst case is over FilterCostLimit is
// refused when the SSA is compiled, with a reason the negotiation reports as filter-cost;
// the usual filters pass.
func TestFilterCostEstimated(t *testing.T) {
	tests := []struct {
		name, expr string
		refused    bool
	}{
		{"comparison", `r["event.kind"] != "stats"`, false},
		{"guarded comparison", `"source.port" in r && r["source.port"] < 1024`, false},
		{"membership", `"1.1.1.1" in r["related.ip"]`, false},
		{"time", `r["@timestamp"] > timestamp("2024-01-01T00:00:00Z")`, false},
		{"regular expression", `"url.original" in r && r["url.original"].matches("^/admin/.*[.]php$")`, false},
		{"addresses", `r["related.ip"].exists(ip, ip.startsWith("10."))`, false},
		{"two nested comprehensions", nest(2, "v0 + v1 >= 0"), false},
	}
	for _, f := range adversarialFilters {
		if f.name == "simple" || strings.HasPrefix(f.name, "accepted") {
			continue
		}
		tests = append(tests, struct {
			name, expr string
			refused    bool
		}{f.name, f.expr, true})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: tc.expr}}}, protocol.FormatEVE), nil)
			if !tc.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var r *Refusal
			if !errors.As(err, &r) || r.Problem != ProblemFilterCost || r.ProtocolReason().Code != protocol.CodeFilterCost {
				t.Fatalf("Compile: %v, want a %s refusal", err, ProblemFilterCost)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(FilterCostLimit)) {
				t.Errorf("the refusal does not name the limit: %v", err)
			}
		})
	}
}

// TestFilterCostLimitAtRunTime: the runtime limit stays as a backstop for values longer than
// the estimate assumes: a filter that passed the estimate is stopped on a record whose field
// makes it too costly, and the record is excluded.
func TestFilterCostLimitAtRunTime(t *testing.T) {
	p := mustCompile(t, ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: `"url.original" in r && !r["url.original"].contains("zz")`}}}, protocol.FormatEVE))
	rec := func(url string) string {
		return `{"timestamp":"2024-07-05T15:51:23.009510-0400","event_type":"http","src_ip":"10.0.0.1","dest_ip":"10.0.0.2","http":{"url":"` + url + `"}}` + "\n"
	}
	in := rec("/index.html") + rec("/"+strings.Repeat("a", 100*FilterCostLimit))
	_, st := runAll(t, p, protocol.FormatEVE, []byte(in))
	if st.Refined != 1 || st.FilterErrors != 1 {
		t.Fatalf("kept %d, filter errors %d; want the short record kept and the long one excluded by the cost limit", st.Refined, st.FilterErrors)
	}
}
