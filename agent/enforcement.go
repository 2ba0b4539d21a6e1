//go:build !ssanet_brokenprovider

package agent

// skipEnforcement is false in every real build: see broken_provider.go.
const skipEnforcement = false
