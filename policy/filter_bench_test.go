package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// digits is a literal list of ten ints: comprehensions over it run ten times.
const digits = "[0,1,2,3,4,5,6,7,8,9]"

// nest wraps body in n comprehensions over digits: 10^n evaluations of body.
func nest(n int, body string) string {
	for i := range n {
		body = fmt.Sprintf("%s.all(v%d, %s)", digits, i, body)
	}
	return body
}

// adversarialFilters are filters a hostile requester could ask for to burn the provider's
// CPU, each as expensive as its kind gets within MaxFilterLen, and a simple one to compare.
var adversarialFilters = []struct{ name, expr string }{
	{"simple", `r["event.kind"] != "stats"`},
	{"accepted: two nested comprehensions", nest(2, "v0 + v1 + v0 * v1 >= 0")},
	{"accepted: addresses", `r["related.ip"].exists(ip, ip.startsWith("10.") || ip.endsWith(".1"))`},
	{"nested comprehensions", nest(6, "v0 + v1 + v2 + v3 + v4 + v5 >= 0")},
	{"nested list building", nest(3, digits+".map(x, "+digits+".map(y, x * y)).size() > 0")},
	{"string concatenation", nest(4, strings.Repeat(`r["event.kind"] + `, 32)+`"" != "x"`)},
	{"regex on a grown string", nest(3, "("+strings.Repeat(`r["event.kind"] + `, 30)+`"").matches("^(a|b|c|d|e|f)*[0-9]+(x|y)*$")`)},
	{"string search", nest(4, "("+strings.Repeat(`r["event.kind"] + `, 30)+`"").contains("`+strings.Repeat("zq", 20)+`")`)},
	{"addresses", nest(4, `r["related.ip"].exists(ip, ip.startsWith("10.") || ip.endsWith(".1"))`)},
}

// BenchmarkFilterCost measures the CPU time per record of each adversarial filter through the
// enforcer, on the EVE records of testdata, under FilterCostLimit; a filter refused by Check
// is reported as refused and not run.
func BenchmarkFilterCost(b *testing.B) {
	in := benchEVE(b, 200)
	records := bytes.Count(in, []byte("\n"))
	for _, f := range adversarialFilters {
		b.Run(f.name, func(b *testing.B) {
			s := ssaFor(&protocol.Policy{Filtering: []protocol.Filter{{Expr: f.expr}}}, protocol.FormatEVE)
			p, err := Compile(s, nil)
			if err != nil {
				b.Skipf("refused: %v", err)
			}
			for b.Loop() {
				e, err := NewEnforcer(p, protocol.FormatEVE, Config{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.Run(context.Background(), bytes.NewReader(in), io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
		})
	}
}
