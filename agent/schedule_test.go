package agent

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestScheduleIsWhenSharingHappens: the schedule is the period of sharing (clause 9.2).
// Records dated years before an SSA that starts now reach the provider while it is in force:
// every one is shared, and the requester, judging the batch by when it was sent, finds no
// violation. Under an SSA that starts in an hour, none is shared, and each is counted as
// outside the schedule.
func TestScheduleIsWhenSharingHappens(t *testing.T) {
	ctx := context.Background()
	sample := sampleEVE(t) // dated 2016 to 2020
	n := int64(bytes.Count(bytes.TrimSpace(sample), []byte("\n")) + 1)

	t.Run("in force", func(t *testing.T) {
		tmpl := requestTemplate(t) // the schedule starts now
		tmpl.Policy.Filtering = nil
		prov, req, rec := agreedPair(t, tmpl)
		st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sample))
		if err != nil {
			t.Fatal(err)
		}
		if st.Records != n || st.Queued[rec.SSAID] != n || len(st.OutsideSchedule) != 0 || st.SSAs != 1 {
			t.Fatalf("ingest of %d records dated before the SSA: %+v; want all queued", n, st)
		}
		waitRecords(t, req, rec.SSAID, uint64(n))
		waitFor(t, 10*time.Second, func() (bool, string) {
			st, err := prov.store.OutboxState(rec.SSAID)
			return err == nil && st.Acked == uint64(n), fmt.Sprintf("acknowledged: %+v, %v", st, err)
		})
		as, err := req.Monitor(ctx, rec.SSAID)
		if err != nil {
			t.Fatal(err)
		}
		if as.Verdict != VerdictFulfilled || as.Local.Violations != 0 || len(as.Evidence) != 0 ||
			as.Provider == nil || as.Provider.Dropped != 0 || as.Provider.Refined != uint64(n) {
			t.Fatalf("assessment %+v, report %+v: want fulfilled, nothing dropped, no violation", as, as.Provider)
		}
	})

	t.Run("not started", func(t *testing.T) {
		tmpl := requestTemplate(t)
		tmpl.Policy.Filtering = nil
		tmpl.Schedule.Start = protocol.FromTime(time.Now().Add(time.Hour))
		prov, _, rec := agreedPair(t, tmpl)
		st, err := prov.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(sample))
		if err != nil {
			t.Fatal(err)
		}
		if st.Records != n || len(st.Queued) != 0 || st.OutsideSchedule[rec.SSAID] != n || len(st.Filtered) != 0 || st.SSAs != 1 {
			t.Fatalf("ingest before the schedule's start: %+v; want all %d outside the schedule", st, n)
		}
		os, err := prov.store.OutboxState(rec.SSAID)
		if err != nil || os.Ingested != uint64(n) || os.Refined != 0 || os.Dropped != uint64(n) {
			t.Fatalf("provider's counts %+v, %v: want %d ingested and dropped", os, err, n)
		}
	})
}
