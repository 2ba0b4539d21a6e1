package policy

import (
	"fmt"
	"slices"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// Limits on a filter expression. A requester writes it and the provider runs it on every
// record, so both its size and its evaluation cost are bounded.
const (
	// MaxFilterLen is the longest expression accepted, in bytes.
	MaxFilterLen = 4096
	// FilterCostLimit bounds, in CEL cost units, what one filter may cost on one record: its
	// estimated worst case (CEL's static estimate, with every value of the view taken as
	// viewValueHint long) is checked when the SSA is compiled, so a negotiation refuses a
	// filter over it (ProblemFilterCost), and it is the runtime limit of every evaluation,
	// past which evaluation stops and the record is excluded (a record whose view values are
	// all within viewValueHint is evaluated without that accounting: the estimate bounds it). Measured by
	// BenchmarkFilterCost on the shared 2-core development machine: the costliest filters
	// (comprehensions with cheap bodies, strings built in them) run at 100 (idle) to 300 ns
	// (loaded) per unit, so 100,000 let one take 8 to 35 ms per record; under 1,000 the worst
	// took 0.15 ms per record loaded (the pipeline's own 0.02 ms included), about 0.1 ms idle,
	// and the usual filters (a comparison, a membership, a regular expression on a field)
	// are estimated at 3 to 800.
	FilterCostLimit    = 1000
	maxFilterRecursion = 64
	// viewValueHint is how long the static estimate takes each value of the view to be: bytes
	// of a string, elements of a list (related.ip). Longer values cost more at run time, up to
	// FilterCostLimit.
	viewValueHint = 128
)

// viewVar is the name of the normalised view in a filter: a map(string, dyn).
const viewVar = "r"

// filter is one compiled CEL expression.
type filter struct {
	expr string
	prg  cel.Program // under the runtime cost limit
	// fast is the same program without cost tracking, for a view whose values are all
	// within viewValueHint: the estimate, at most FilterCostLimit, then bounds the cost.
	fast   cel.Program
	fields []string // constant keys of r the expression reads, sorted
}

// compileFilter parses and type-checks expr, or takes it from c, and checks that it reads
// only fields of every format.
func (c *Compiler) compileFilter(expr string, formats []*formatSpec) (*filter, error) {
	f, err := c.expression(expr)
	if err != nil {
		return nil, err
	}
	for _, k := range f.fields {
		for _, spec := range formats {
			if _, ok := spec.fields[k]; !ok {
				return nil, refuse(ProblemUnknownField, "filtering", "%q reads %q, which is not in the view of %s", expr, k, spec.name)
			}
		}
	}
	return f, nil
}

// compileExpr parses and type-checks expr: a bool expression over the view r.
func compileExpr(expr string) (*filter, error) {
	if len(expr) > MaxFilterLen {
		return nil, refuse(ProblemLimit, "filtering", "expression is %d bytes, limit %d", len(expr), MaxFilterLen)
	}
	env, err := cel.NewEnv(
		cel.Variable(viewVar, cel.MapType(cel.StringType, cel.DynType)),
		cel.ParserRecursionLimit(maxFilterRecursion),
		cel.ParserExpressionSizeLimit(MaxFilterLen),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: CEL environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, refuse(ProblemBadFilter, "filtering", "%q: %v", expr, iss.Err())
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, refuse(ProblemBadFilter, "filtering", "%q is of type %s, want bool", expr, ast.OutputType())
	}
	est, err := env.EstimateCost(ast, viewSizes{max: viewValueHint})
	if err != nil {
		return nil, refuse(ProblemFilterCost, "filtering", "%q: its cost cannot be estimated: %v", expr, err)
	}
	if est.Max > FilterCostLimit {
		return nil, refuse(ProblemFilterCost, "filtering", "%q may cost up to %d per record (CEL cost units, view values up to %d long), limit %d: "+
			"ask for a cheaper filter (fewer or no nested comprehensions, no strings built from fields)", expr, est.Max, viewValueHint, FilterCostLimit)
	}
	prg, err := env.Program(ast, cel.CostLimit(FilterCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, refuse(ProblemBadFilter, "filtering", "%q: %v", expr, err)
	}
	fast, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, refuse(ProblemBadFilter, "filtering", "%q: %v", expr, err)
	}
	return &filter{expr: expr, prg: prg, fast: fast, fields: viewKeys(ast.NativeRep())}, nil
}

// viewKeys lists the constant keys read from r: r["k"], r.k, has(r.k) and "k" in r.
func viewKeys(a *celast.AST) []string {
	var keys []string
	isView := func(e celast.Expr) bool { return e.Kind() == celast.IdentKind && e.AsIdent() == viewVar }
	constString := func(e celast.Expr) (string, bool) {
		if e.Kind() != celast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().Value().(string)
		return s, ok
	}
	celast.PreOrderVisit(a.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.SelectKind:
			if s := e.AsSelect(); isView(s.Operand()) {
				keys = append(keys, s.FieldName())
			}
		case celast.CallKind:
			c := e.AsCall()
			args := c.Args()
			switch {
			case (c.FunctionName() == operators.Index || c.FunctionName() == operators.OptIndex) && len(args) == 2 && isView(args[0]):
				if k, ok := constString(args[1]); ok {
					keys = append(keys, k)
				}
			case c.FunctionName() == operators.In && len(args) == 2 && isView(args[1]):
				if k, ok := constString(args[0]); ok {
					keys = append(keys, k)
				}
			}
		}
	}))
	slices.Sort(keys)
	return slices.Compact(keys)
}

// evalIn runs the filter on a view made an activation, which can serve every record of a
// stream. An evaluation error (a missing key, the cost limit) or a non-bool result excludes
// the record. small says that every value of the view is within viewValueHint (bytes of a
// string, elements of a list): CEL's estimate of the filter's worst case, checked against
// FilterCostLimit when it was compiled, then bounds its cost, and it runs without the
// runtime limit's accounting (a tenth of the cost of a record).
func (f *filter) evalIn(act *viewActivation, small bool) (bool, error) {
	prg := f.prg
	if small {
		prg = f.fast
	}
	out, _, err := prg.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("policy: filter %q gave %v, not a bool", f.expr, out)
	}
	return b, nil
}

// viewActivation binds r to a view for CEL. The view is converted to a CEL value once, when
// the activation is made: a walker clears and refills its view map for each record, never
// replaces it, so one activation serves a whole stream.
type viewActivation struct{ r ref.Val }

func newViewActivation(view map[string]any) *viewActivation {
	return &viewActivation{r: types.DefaultTypeAdapter.NativeToValue(view)}
}

func (a *viewActivation) ResolveName(name string) (any, bool) {
	if name == viewVar {
		return a.r, true
	}
	return nil, false
}

func (*viewActivation) Parent() interpreter.Activation { return nil }

// viewSizes tells CEL's static cost estimate how long the values of the view are (r["k"] is
// the path r.@values); every other size is what CEL derives from the expression.
type viewSizes struct{ max uint64 }

func (v viewSizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if p := n.Path(); len(p) >= 2 && p[0] == viewVar {
		return &cost.SizeEstimate{Min: 0, Max: v.max}
	}
	return nil
}

func (viewSizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}
