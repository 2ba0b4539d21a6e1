package protocol

import _ "embed"

// ExampleRequester is an annotated requester template showing every SSA component and the
// spec's policy examples. ExampleProvider is an annotated offer that it fits: a request made
// with one to an agent offering the other is approved.
var (
	//go:embed examples/requester.yaml
	ExampleRequester []byte
	//go:embed examples/provider.yaml
	ExampleProvider []byte
)
