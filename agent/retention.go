package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/ssanet/ssanet/storage"
)

// retention deletes the records a requester received once the SSA's retention (its
// handling's retention period) has run out.
type retention struct {
	store *storage.Store
	// runs are the SSAs whose received records are kept (manager.requesterRuns).
	runs func() []*agreementRun
	log  *slog.Logger
	now  func() time.Time
	// ledger counts the records deleted as expired (ledger.go).
	ledger *ledger
}

// run deletes what ran out every period until ctx ends.
func (r *retention) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, run := range r.runs() {
			r.expire(run)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// expire deletes the records of run received before its retention.
func (r *retention) expire(run *agreementRun) {
	h := run.ssa.Policy
	if h == nil || h.Handling == nil || h.Handling.Retention == 0 {
		return
	}
	cut := r.now().Add(-h.Handling.Retention.Std())
	// An error may come after some records were deleted (a later chunk, or dropping them
	// from the disk, which the next check retries): those are counted all the same.
	n, err := r.store.DeleteRecordsReceivedBefore(run.ssa.ID, cut)
	if n > 0 {
		r.ledger.received(run.ssa.ID, outExpired, "", uint64(n))
		r.log.Info("records deleted: retention ran out", "ssa", run.ssa.ID, "records", n)
	}
	if err != nil {
		r.log.Error("retention", "ssa", run.ssa.ID, "err", err)
	}
}
