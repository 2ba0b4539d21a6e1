//go:build ssanet_brokenprovider

package agent

// skipEnforcement makes a test build of a provider that breaks its SSAs: it delivers raw
// records without refining them. Only e2e tests build it (-tags ssanet_brokenprovider), to
// show that the requester catches such a provider.
const skipEnforcement = true
