package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// TestExpensiveFilterRefused: a request whose filter could cost the provider's sensor more
// CPU per record than it allows is rejected during the negotiation, with reason filter-cost:
// no SSA is agreed, so no record flows.
func TestExpensiveFilterRefused(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	req := newTestAgent(t, "requester", nil)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	if tmpl.Policy == nil {
		tmpl.Policy = &protocol.Policy{}
	}
	// 10^5 evaluations of the body per record: 8-11 ms of CPU per record under the old limit.
	expensive := "a + b + c + d + e >= 0"
	for _, v := range []string{"a", "b", "c", "d", "e"} {
		expensive = "[0,1,2,3,4,5,6,7,8,9].all(" + v + ", " + expensive + ")"
	}
	tmpl.Policy.Filtering = append(tmpl.Policy.Filtering, protocol.Filter{Expr: expensive})
	rec, err := req.Request(context.Background(), addrInfo(prov), tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != protocol.StateRejected || len(rec.Reasons) == 0 || rec.Reasons[0].Code != protocol.CodeFilterCost {
		t.Fatalf("state %s reasons %v; want rejected for %s", rec.State, rec.Reasons, protocol.CodeFilterCost)
	}
	if !strings.Contains(rec.Reasons[0].Text, "limit") {
		t.Errorf("the reason does not name the limit: %s", rec.Reasons[0].Text)
	}
	for _, a := range []*Agent{prov, req} {
		if _, err := a.store.Agreement(rec.SSAID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("an SSA was agreed with the expensive filter: %v", err)
		}
	}
}
