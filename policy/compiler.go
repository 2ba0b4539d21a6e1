package policy

import (
	"container/list"
	"sync"
)

// Compiler compiles SSAs into SSPs as Compile does, and keeps the filter expressions it has
// compiled, the most recently used first, up to a bound. An agent compiles the same
// expressions again and again (the provider checks every proposal it makes, then both sides
// compile the SSA they agreed to), and parsing and type-checking CEL is most of the cost of
// a compilation. A compiled expression is immutable and safe to evaluate concurrently, so
// SSPs share it. A nil *Compiler keeps nothing. A Compiler is safe for concurrent use.
type Compiler struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of *compiled
	lru   list.List                // front: most recently used
}

// compiled is the outcome of compiling one expression: a filter or a refusal.
type compiled struct {
	expr string
	f    *filter
	err  error
}

// NewCompiler returns a Compiler that keeps up to max compiled expressions.
func NewCompiler(max int) *Compiler {
	return &Compiler{max: max, byKey: map[string]*list.Element{}}
}

// expression returns expr compiled, from c when it is there. An expression is compiled
// outside the lock, so one slow compilation holds up no other; two goroutines may compile
// the same one at once, and both then return the one kept.
func (c *Compiler) expression(expr string) (*filter, error) {
	if c == nil || c.max <= 0 || len(expr) > MaxFilterLen { // refused at once: not worth keeping
		return compileExpr(expr)
	}
	c.mu.Lock()
	if e, ok := c.byKey[expr]; ok {
		c.lru.MoveToFront(e)
		v := e.Value.(*compiled)
		c.mu.Unlock()
		return v.f, v.err
	}
	c.mu.Unlock()
	f, err := compileExpr(expr)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[expr]; ok { // compiled meanwhile by another goroutine: share that one
		v := e.Value.(*compiled)
		return v.f, v.err
	}
	c.byKey[expr] = c.lru.PushFront(&compiled{expr: expr, f: f, err: err})
	for c.lru.Len() > c.max {
		last := c.lru.Back()
		delete(c.byKey, last.Value.(*compiled).expr)
		c.lru.Remove(last)
	}
	return f, err
}
