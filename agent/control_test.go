package agent

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
)

// TestControlBodyLimit: a body over the control API's limit is refused whole (413, naming the
// limit), never cut: an offer whose masking rules came after a 1 MiB comment was stored
// without them, and its records went out unmasked.
func TestControlBodyLimit(t *testing.T) {
	a := newTestAgent(t, "provider", nil)
	api := a.controlHandler()
	padded := bytes.Replace(protocol.ExampleProvider, []byte("\n  policy:"),
		[]byte("\n"+strings.Repeat("# padding padding padding padding padding padding padding\n", 20_000)+"  policy:"), 1)
	if len(padded) <= protocol.MaxMessageSize || len(padded) == len(protocol.ExampleProvider) {
		t.Fatalf("the padded offer is %d bytes; it must pass the limit with its policy last", len(padded))
	}
	request, err := json.Marshal(RequestBody{Provider: a.ID().String(), Template: string(padded)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		body       []byte
	}{
		{"offer", "/v1/offers", padded},
		{"request", "/v1/requests", request},
		{"request envelope", "/v1/requests", bytes.Repeat([]byte(" "), maxRequestBody+1)},
		{"revision", "/v1/ssa/ssa-0123/revise", padded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			api.ServeHTTP(w, httptest.NewRequest(http.MethodPost, tc.path, bytes.NewReader(tc.body)))
			if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "refused whole") {
				t.Fatalf("status %d %s; want 413 naming the limit", w.Code, w.Body)
			}
		})
	}
	offers, err := a.store.Offers()
	if err != nil || len(offers) != 0 {
		t.Fatalf("offers stored: %d, %v; want none", len(offers), err)
	}
	negs, err := a.store.Negotiations()
	if err != nil || len(negs) != 0 {
		t.Fatalf("negotiations stored: %d, %v; want none", len(negs), err)
	}
	// Within the limit, the same offer is taken.
	w := httptest.NewRecorder()
	api.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/offers", bytes.NewReader(protocol.ExampleProvider)))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d %s; want 200 for the example offer", w.Code, w.Body)
	}
}
