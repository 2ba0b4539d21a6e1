package agent

import (
	"context"
	"net"
	"time"

	"github.com/ssanet/ssanet/agent/taxii"
	"github.com/ssanet/ssanet/policy/cti"
	"github.com/ssanet/ssanet/storage"
)

// taxiiSource is what the TAXII server reads (taxii.Source): the SSAs this agent requested
// whose records it holds, and their inboxes, each record with its format and whether it is
// quarantined.
type taxiiSource struct {
	store *storage.Store
	runs  func() []*agreementRun
}

func (t taxiiSource) run(ssaID string) *agreementRun {
	for _, run := range t.runs() {
		if run.ssa.ID == ssaID {
			return run
		}
	}
	return nil
}

func (t taxiiSource) Agreement(ssaID string) (*cti.Agreement, bool) {
	return agreementOf(t.runs)(ssaID)
}

func (t taxiiSource) Records(ssaID string, after uint64, max, maxBytes int) ([]taxii.Record, error) {
	run := t.run(ssaID)
	if run == nil {
		return nil, nil
	}
	recs, err := t.store.Records(ssaID, after, max, maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]taxii.Record, len(recs))
	for i, r := range recs {
		format, data := run.untag(r.Data)
		out[i] = taxii.Record{Record: cti.Record{Seq: r.Seq, Received: r.ReceivedAt, Format: format, Data: data},
			Withheld: quarantined(r.Data) || format == ""}
	}
	return out, nil
}

// startTAXII runs the TAXII 2.1 server, if the configuration sets taxii.listen, until ctx
// ends; it returns the address it listens on (nil if off).
func (a *Agent) startTAXII(ctx context.Context, now func() time.Time) (net.Addr, error) {
	if !a.cfg.TAXII.Enabled() {
		return nil, nil
	}
	srv, err := taxii.New(*a.cfg.TAXII, a.home, taxiiSource{store: a.store, runs: a.mgr.requesterRuns}, a.log.With("component", "taxii"), now)
	if err != nil {
		return nil, err
	}
	addr, err := srv.Start()
	if err != nil {
		return nil, err
	}
	a.goRun(func() {
		<-ctx.Done()
		if err := srv.Close(); err != nil {
			a.log.Warn("TAXII server not closed cleanly", "err", err)
		}
	})
	return addr, nil
}
