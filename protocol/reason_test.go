package protocol

import (
	"strings"
	"testing"
)

// TestCodeNames: every allocated reason code has a stable name that reads back as the code.
func TestCodeNames(t *testing.T) {
	for _, tc := range []struct {
		code Code
		name string
	}{
		{CodeUnspecified, "unspecified"},
		{CodeMethodProtocol, "method-protocol"},
		{CodeMethodSecurity, "method-security"},
		{CodeAgreementLimit, "agreement-limit"},
		{CodeMethodUnsupported, "method-unsupported"},
	} {
		if got := tc.code.String(); got != tc.name {
			t.Errorf("code %d is named %q, want %q", uint16(tc.code), got, tc.name)
		}
	}
	for c := CodeUnspecified; c <= CodeMethodUnsupported; c++ {
		name, _ := c.MarshalText()
		var back Code
		if strings.HasPrefix(string(name), "code(") || back.UnmarshalText(name) != nil || back != c {
			t.Errorf("code %d: name %q reads back as %d", uint16(c), name, uint16(back))
		}
	}
	if uint16(CodeMethodUnsupported) != 19 {
		t.Fatalf("method-unsupported is code %d; it was allocated 19", uint16(CodeMethodUnsupported))
	}
}
