package policy

import (
	"errors"
	"fmt"

	"github.com/ssanet/ssanet/protocol"
)

var (
	// ErrUnenforceable means an SSA asks for something the engine cannot enforce. The error
	// is a *Refusal that carries the Problem.
	ErrUnenforceable = errors.New("policy: SSA cannot be enforced")
	// ErrKey means a masking key is missing or has the wrong length.
	ErrKey = errors.New("policy: bad masking key")
	// ErrFormat means a record is not in the expected format.
	ErrFormat = errors.New("policy: malformed record")
	// ErrTooLarge means a record is over MaxRecordSize.
	ErrTooLarge = errors.New("policy: record too large")
	// ErrRedistribution means the handling policy forbids passing records to a recipient.
	ErrRedistribution = errors.New("policy: redistribution not allowed")
)

// Problem classifies why an SSA cannot be enforced: what a Refusal is about. It is not
// protocol.Reason, the refusal a peer sees (code, component, text), which ProtocolReason
// builds from it. Append-only: values are never renumbered or reused, so a negotiation can
// report them.
type Problem uint16

// The problems that make an SSA unenforceable.
const (
	ProblemInvalid           Problem = 1  // the SSA breaks a structural rule of protocol
	ProblemUnsupportedFormat Problem = 2  // an information format has no adapter
	ProblemUnknownField      Problem = 3  // a field is not in the format's normalised view
	ProblemBadFilter         Problem = 4  // a CEL expression does not parse or type-check to bool
	ProblemRankBy            Problem = 5  // rank-by is neither "count" nor a numeric field
	ProblemMethod            Problem = 6  // a masking method does not apply to its field
	ProblemConflict          Problem = 7  // two parts of the policy contradict each other
	ProblemLimit             Problem = 8  // a value is over an engine limit (top-N, rules, size)
	ProblemNoInformation     Problem = 9  // the SSA names no information to share
	ProblemFilterCost        Problem = 10 // a filter's estimated cost per record is over FilterCostLimit
)

var problemNames = map[Problem]string{
	ProblemInvalid:           "invalid",
	ProblemUnsupportedFormat: "unsupported-format",
	ProblemUnknownField:      "unknown-field",
	ProblemBadFilter:         "bad-filter",
	ProblemRankBy:            "rank-by",
	ProblemMethod:            "method",
	ProblemConflict:          "conflict",
	ProblemLimit:             "limit",
	ProblemNoInformation:     "no-information",
	ProblemFilterCost:        "filter-cost",
}

func (p Problem) String() string {
	if n, ok := problemNames[p]; ok {
		return n
	}
	return fmt.Sprintf("problem(%d)", uint16(p))
}

// Refusal is the error of an SSA the engine cannot enforce.
type Refusal struct {
	Problem Problem
	// Component is the SSA component at fault, as in protocol.Reason: "information",
	// "masking", "filtering", "summarization" or "handling".
	Component string
	Text      string
}

func (e *Refusal) Error() string {
	return fmt.Sprintf("policy: SSA cannot be enforced: %s: %s: %s", e.Problem, e.Component, e.Text)
}

// Is makes errors.Is(err, ErrUnenforceable) true.
func (e *Refusal) Is(target error) bool { return target == ErrUnenforceable }

// ProtocolReason is the refusal as the negotiation reports it to the peer.
func (e *Refusal) ProtocolReason() protocol.Reason {
	code := protocol.CodePolicyUnenforceable
	if e.Problem == ProblemFilterCost {
		code = protocol.CodeFilterCost
	}
	return protocol.Reason{Code: code, Component: e.Component, Text: e.Problem.String() + ": " + e.Text}
}

func refuse(p Problem, component, format string, a ...any) *Refusal {
	return &Refusal{Problem: p, Component: component, Text: fmt.Sprintf(format, a...)}
}
