package agent

import (
	"bytes"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestSharedBuffers: the records that refine-and-queue and receive-and-verify put into shared
// buffers are those they made one at a time, each capped at its own length, so that an
// append to one never writes over the next.
func TestSharedBuffers(t *testing.T) {
	prov, req, s := exchangePair(t)
	lines := bytes.Split(bytes.TrimSpace(sampleEVE(t)), []byte("\n"))
	var raws [][]byte
	for i, l := range lines { // malformed records between them: refine drops what they wrote
		raws = append(raws, l)
		if i%3 == 0 {
			raws = append(raws, []byte(`{"timestamp":`))
		}
	}
	run := prov.mgr.run(s.ID)
	now := time.Now()
	refined, n, err := run.refine(protocol.FormatEVE, raws, now.Year(), time.Now)
	if err != nil || n.malformed == 0 {
		t.Fatalf("refine: %v, %d malformed", err, n.malformed)
	}
	var alone [][]byte
	for _, raw := range raws {
		out, _, err := run.refine(protocol.FormatEVE, [][]byte{raw}, now.Year(), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		alone = append(alone, out...)
	}
	checkShared(t, "refined", refined, alone)

	rrun := req.mgr.run(s.ID)
	recs := [][]byte{[]byte(`{"a":1}`), {}, []byte(`{"b":2}`)}
	c := &checkedBatch{b: &protocol.Batch{Format: protocol.FormatEVE, Records: recs}, run: rrun, bad: []bool{false, true, false}}
	tag := rrun.formatTag(protocol.FormatEVE)
	want := [][]byte{append([]byte{tag}, recs[0]...), {tag | quarantineBit}, append([]byte{tag}, recs[2]...)}
	checkShared(t, "kept", c.kept(), want)
}

// checkShared checks that got holds the records of want, and that appending to each leaves
// the others as they were.
func checkShared(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: record %d is %.60q, want %.60q", what, i, got[i], want[i])
		}
		_ = append(got[i], 0xff)
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: record %d changed to %.60q by an append to the one before", what, i, got[i])
		}
	}
}
