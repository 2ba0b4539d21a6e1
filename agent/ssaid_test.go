package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// traversalID is the ID a hostile provider gave its revision to make the requester write a
// file outside its home (issue 11, item 4).
const traversalID = "../../pwned-by-provider"

// TestHostileRevisionID: a provider's revision whose ID is a path out of the requester's
// home is refused when it arrives; the SSA in force stays, and its assessment is written
// inside the home and nowhere else.
func TestHostileRevisionID(t *testing.T) {
	ctx := context.Background()
	prov := newTestAgent(t, "provider", nil)
	// The home sits in a directory of its own, so that a file the ID would put outside the
	// home is still inside the test's temporary directory, where the test looks for it.
	req := newTestAgent(t, filepath.Join("box", "requester"), func(c *Config) { c.RetentionCheck = Duration(100 * time.Millisecond) })
	box := filepath.Dir(req.home)
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Schedule.End = protocol.FromTime(time.Now().Add(3 * time.Second))
	rec, err := req.Request(ctx, addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	waitState(t, prov, rec.SSAID, protocol.StateApproved)

	// The provider's revision, sealed by hand as a hostile agent would: its own agent, like
	// protocol's state machine, refuses to make one with such an ID.
	agreed, err := prov.store.Agreement(rec.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := prov.store.Transcript(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	last, err := protocol.Open(tr[len(tr)-1])
	if err != nil {
		t.Fatal(err)
	}
	v := agreed.Clone()
	v.Signatures = nil
	v.ID, v.Version, v.Supersedes, v.Date = traversalID, agreed.Version+1, agreed.ID, protocol.FromTime(time.Now())
	mid := make([]byte, 16)
	rand.Read(mid)
	env, err := protocol.Seal(prov.self, protocol.Header{Type: protocol.MsgRevision, Negotiation: rec.ID, ID: mid,
		Time: time.Now().UnixMilli(), Prev: last.Hash()}, v)
	if err != nil {
		t.Fatal(err)
	}
	st, err := prov.host.NewStream(ctx, req.ID(), ProtocolNegotiate)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if err := writeFrame(st, env.Bytes()); err != nil {
		t.Fatal(err)
	}
	if ans, err := readFrame(bufio.NewReader(st), protocol.MaxMessageSize); err == nil {
		t.Fatalf("the requester answered the revision (%d bytes) instead of refusing it", len(ans))
	}
	got, err := req.Negotiation(rec.SSAID)
	if err != nil || got.SSAID != rec.SSAID || got.State != protocol.StateApproved {
		t.Fatalf("after the hostile revision the requester holds %+v, %v; want %s approved", got, err, rec.SSAID)
	}
	if _, err := req.store.Agreement(traversalID); !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, protocol.ErrBadSSAID) {
		t.Fatalf("agreement %q: %v", traversalID, err)
	}

	// At the end of the schedule the assessment of the SSA in force is written in the home;
	// nothing else appears beside the home.
	path := assessmentPath(filepath.Join(req.home, AssessmentDir), rec.SSAID)
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, err := os.Stat(path)
		return err == nil, "no assessment report at the end of the schedule: " + path
	})
	entries, err := os.ReadDir(box)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != filepath.Base(req.home) {
			t.Errorf("%s written outside the requester's home", filepath.Join(box, e.Name()))
		}
	}
}

// TestTraversalIDRequestRefused: a request whose SSA ID is a path is refused: the provider
// resets the stream and keeps no negotiation.
func TestTraversalIDRequestRefused(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	addOffer(t, prov, nil)
	mallory := newRawPeer(t)
	good := sealedRequest(t, mallory.id, prov, 1)
	s := good.SSA.Clone()
	s.ID = traversalID
	env, err := protocol.Seal(mallory.id, good.Header, s)
	if err != nil {
		t.Fatal(err)
	}
	if ans, err := mallory.exchange(t, prov, frame(env.Bytes())); err == nil {
		t.Fatalf("the provider answered a request for SSA %q (%d bytes) instead of refusing it", traversalID, len(ans))
	}
	if tr, err := prov.store.Transcript(good.Header.Negotiation); err == nil && len(tr) > 0 {
		t.Fatalf("the provider kept %d messages of the refused request", len(tr))
	}
}

// FuzzAssessmentPath: whatever the SSA ID, its assessment report is a file right inside the
// assessments directory.
func FuzzAssessmentPath(f *testing.F) {
	for _, id := range []string{"ssa-0123456789abcdef01234567", traversalID, "..", ".", "", "/etc/passwd", `..\..\x`, "a/../../b", "x\x00y", strings.Repeat("../", 100)} {
		f.Add(id)
	}
	dir := filepath.Join("home", AssessmentDir)
	f.Fuzz(func(t *testing.T, id string) {
		p := assessmentPath(dir, id)
		rel, err := filepath.Rel(dir, p)
		if err != nil || filepath.Dir(p) != dir || rel != filepath.Base(p) || strings.ContainsAny(rel, `/\`+"\x00") || !strings.HasSuffix(rel, ".json") || strings.HasPrefix(rel, ".") {
			t.Fatalf("ID %q gives %q, not a file right inside %q", id, p, dir)
		}
	})
}
