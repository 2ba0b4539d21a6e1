package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestRestartWithQueuedRecordsForUnknownPeer: a provider restarted with records queued for a
// requester whose address it does not remember looks the requester up in its directory as
// soon as its delivery starts; every restart must find the directory built (it crashed on a
// nil directory in 5 of 5 restarts when the management point started first).
func TestRestartWithQueuedRecordsForUnknownPeer(t *testing.T) {
	prov, req, s := exchangePair(t)
	req.Close() // away: the records stay queued
	st, err := prov.Ingest(context.Background(), protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil || st.Queued[s.ID] == 0 {
		t.Fatalf("ingest: %+v, %v; want records queued for %s", st, err, s.ID)
	}
	home := prov.home
	prov.Close()
	for i := range 20 {
		if err := os.Remove(filepath.Join(home, addrBookFile)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		a, err := New(home, Options{})
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		waitFor(t, 5*time.Second, func() (bool, string) {
			return a.mgr.run(s.ID) != nil, "the SSA is not in force after the restart"
		})
		if err := a.Close(); err != nil {
			t.Fatalf("restart %d: close: %v", i, err)
		}
	}
}
