package policy

import (
	"errors"
	"fmt"

	"github.com/ssanet/ssanet/protocol"
)

var (
	// ErrUnenforceable means an SSA asks for something the engine cannot enforce. The error
	// is a *Refusal that carries the reason.
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

// Reason says why an SSA cannot be enforced. Append-only: values are never renumbered or
// reused, so a negotiation can report them.
type Reason uint16

// Refusal reasons.
const (
	ReasonInvalid           Reason = 1  // the SSA breaks a structural rule of protocol
	ReasonUnsupportedFormat Reason = 2  // an information format has no adapter
	ReasonUnknownField      Reason = 3  // a field is not in the format's normalised view
	ReasonBadFilter         Reason = 4  // a CEL expression does not parse or type-check to bool
	ReasonRankBy            Reason = 5  // rank-by is neither "count" nor a numeric field
	ReasonMethod            Reason = 6  // a masking method does not apply to its field
	ReasonConflict          Reason = 7  // two parts of the policy contradict each other
	ReasonLimit             Reason = 8  // a value is over an engine limit (top-N, rules, size)
	ReasonNoInformation     Reason = 9  // the SSA names no information to share
	ReasonFilterCost        Reason = 10 // a filter's estimated cost per record is over FilterCostLimit
)

var reasonNames = map[Reason]string{
	ReasonInvalid:           "invalid",
	ReasonUnsupportedFormat: "unsupported-format",
	ReasonUnknownField:      "unknown-field",
	ReasonBadFilter:         "bad-filter",
	ReasonRankBy:            "rank-by",
	ReasonMethod:            "method",
	ReasonConflict:          "conflict",
	ReasonLimit:             "limit",
	ReasonNoInformation:     "no-information",
	ReasonFilterCost:        "filter-cost",
}

func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", uint16(r))
}

// Refusal is the error of an SSA the engine cannot enforce.
type Refusal struct {
	Reason Reason
	// Component is the SSA component at fault, as in protocol.Reason: "information",
	// "masking", "filtering", "summarization" or "handling".
	Component string
	Text      string
}

func (e *Refusal) Error() string {
	return fmt.Sprintf("policy: SSA cannot be enforced: %s: %s: %s", e.Reason, e.Component, e.Text)
}

// Is makes errors.Is(err, ErrUnenforceable) true.
func (e *Refusal) Is(target error) bool { return target == ErrUnenforceable }

// ProtocolReason is the refusal as the negotiation reports it to the peer.
func (e *Refusal) ProtocolReason() protocol.Reason {
	code := protocol.CodePolicyUnenforceable
	if e.Reason == ReasonFilterCost {
		code = protocol.CodeFilterCost
	}
	return protocol.Reason{Code: code, Component: e.Component, Text: e.Reason.String() + ": " + e.Text}
}

func refuse(r Reason, component, format string, a ...any) *Refusal {
	return &Refusal{Reason: r, Component: component, Text: fmt.Sprintf(format, a...)}
}
