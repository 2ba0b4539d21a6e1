package storage

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// The store in testdata/store-v1 was written by the code of schema version 1, and
// testdata/store-v1.json says what it holds. Every later version must open a copy of it and
// read back every object (TestStoreV1Fixture); a new schema version upgrades it on the way
// (its migration, tested on this store). Rebuild it only while the schema is still version 1:
//
//	go test ./storage -run '^TestWriteStoreV1Fixture$' -write-fixture
var writeFixture = flag.Bool("write-fixture", false, "rewrite testdata/store-v1 and store-v1.json (schema version 1 only)")

const (
	fixtureDir      = "testdata/store-v1"
	fixtureContents = "testdata/store-v1.json"
	fixtureOutSSA   = "ssa-provided"
)

// fixtureNegotiation is a Negotiation in the fixture's contents (protocol.State has no
// UnmarshalText).
type fixtureNegotiation struct {
	ID        []byte
	Role      uint8
	State     uint8
	Peer      string
	SSAID     string
	Created   time.Time
	Updated   time.Time
	Delivered bool
}

// v1Contents is what the fixture store holds: one of each kind of record. Sink positions are
// not in the store (they are files in HOME/sinks); a followed file's position is.
type v1Contents struct {
	Offer       []byte // protocol.Marshal of the offer
	Negotiation fixtureNegotiation
	Transcript  [][]byte
	Agreement   []byte // (*protocol.SSA).Encode
	OutboxState OutboxState
	Pending     []QueuedRecord // of fixtureOutSSA, after an Ack of its first record
	InboxState  InboxState
	Inbox       []StoredRecord // of the agreement's SSA
	FilePos     FilePos
	Evidence    []Evidence
}

// TestWriteStoreV1Fixture rebuilds the fixture store with today's code, when asked with
// -write-fixture.
func TestWriteStoreV1Fixture(t *testing.T) {
	if !*writeFixture {
		t.Skip("rewrites testdata/store-v1 with -write-fixture only")
	}
	if schemaVersion != 1 {
		t.Fatalf("this program writes schema version %d: the fixture is of version 1, keep it", schemaVersion)
	}
	if err := os.RemoveAll(fixtureDir); err != nil {
		t.Fatal(err)
	}
	s, err := Open(fixtureDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	var c v1Contents

	offer, err := protocol.ParseOfferYAML(protocol.ExampleProvider, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutOffer(offer); err != nil {
		t.Fatal(err)
	}
	if c.Offer, err = protocol.Marshal(offer); err != nil {
		t.Fatal(err)
	}

	sm := newSim(t, testNID(0))
	msgs := sm.request("ssa-fixture")
	more, agreement := sm.approve()
	msgs = append(msgs, more...)
	n := sm.record()
	n.Delivered = true
	if err := s.Commit(n, msgs, agreement); err != nil {
		t.Fatal(err)
	}
	c.Negotiation = fixtureNegotiation{ID: n.ID, Role: uint8(n.Role), State: uint8(n.State), Peer: n.Peer, SSAID: n.SSAID,
		Created: n.Created, Updated: n.Updated, Delivered: n.Delivered}
	c.Transcript = msgs
	if c.Agreement, err = agreement.Encode(); err != nil {
		t.Fatal(err)
	}

	out := [][]byte{[]byte(`{"event_type":"alert","n":1}`), []byte(`{"event_type":"alert","n":2}`), []byte(`{"event_type":"alert","n":3}`)}
	c.FilePos = FilePos{Path: "/var/log/suricata/eve.json", Inode: 4242, Offset: 3 * 29}
	if _, err := s.EnqueueAll([]Batch{{SSAID: fixtureOutSSA, Records: out, Ingested: 5, Dropped: 2}}, &c.FilePos); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkSent(fixtureOutSSA, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(fixtureOutSSA, 1); err != nil {
		t.Fatal(err)
	}
	c.OutboxState = OutboxState{Ingested: 5, Refined: 3, Dropped: 2, Acked: 1, Sent: 2}
	c.Pending = []QueuedRecord{{2, out[1]}, {3, out[2]}}

	in := [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`)}
	at := t0.Add(time.Minute)
	if _, _, err := s.Receive(agreement.ID, 1, in, at, 1); err != nil {
		t.Fatal(err)
	}
	c.InboxState = InboxState{Last: 2, Stored: 2, Violations: 1}
	c.Inbox = []StoredRecord{{1, in[0], at}, {2, in[1], at}}
	e := Evidence{SSAID: agreement.ID, First: 1, Batch: []byte("signed batch"), Findings: []byte(`[{"seq":2}]`), ReceivedAt: at}
	if err := s.PutEvidence(e); err != nil {
		t.Fatal(err)
	}
	c.Evidence = []Evidence{e}

	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixtureContents, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	// Read back now, with the code that wrote it: the fixture is right before it is kept.
	checkV1Contents(t, s, &c)
}

// TestStoreV1Fixture opens a copy of the store written by schema version 1 and reads back
// every object it holds.
func TestStoreV1Fixture(t *testing.T) {
	c := readV1Contents(t)
	s, err := Open(copyFixture(t), Options{})
	if err != nil {
		t.Fatalf("open the store of schema version 1: %v", err)
	}
	defer closeStore(t, s)
	checkV1Contents(t, s, c)
}

func readV1Contents(t *testing.T) *v1Contents {
	t.Helper()
	b, err := os.ReadFile(fixtureContents)
	if err != nil {
		t.Fatal(err)
	}
	var c v1Contents
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// copyFixture copies the fixture store into a new directory: opening a store writes to it.
func copyFixture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(dir, os.DirFS(fixtureDir)); err != nil {
		t.Fatal(err)
	}
	// CopyFS makes the files read-only, as in the checkout; Badger writes to some.
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o700)
		}
		return os.Chmod(path, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func closeStore(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// checkV1Contents reads every object of c from s.
func checkV1Contents(t *testing.T, s *Store, c *v1Contents) {
	t.Helper()
	same := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: read %+v, stored %+v", what, got, want)
		}
	}
	offers, err := s.Offers()
	if err != nil || len(offers) != 1 {
		t.Fatalf("offers: %d, %v", len(offers), err)
	}
	b, err := protocol.Marshal(offers[0])
	if err != nil {
		t.Fatal(err)
	}
	same("offer", b, c.Offer)

	n, err := s.Negotiation(c.Negotiation.ID)
	if err != nil {
		t.Fatalf("negotiation: %v", err)
	}
	same("negotiation", fixtureNegotiation{ID: n.ID, Role: uint8(n.Role), State: uint8(n.State), Peer: n.Peer, SSAID: n.SSAID,
		Created: n.Created.UTC(), Updated: n.Updated.UTC(), Delivered: n.Delivered}, c.Negotiation)
	if byID, err := s.NegotiationBySSA(c.Negotiation.SSAID); err != nil || !bytes.Equal(byID.ID, n.ID) {
		t.Errorf("negotiation by SSA %s: %v", c.Negotiation.SSAID, err)
	}
	tr, err := s.Transcript(n.ID)
	if err != nil {
		t.Fatal(err)
	}
	same("transcript", tr, c.Transcript)
	a, err := s.Agreement(c.Negotiation.SSAID) // verified as it is read
	if err != nil {
		t.Fatalf("agreement: %v", err)
	}
	if b, err = a.Encode(); err != nil {
		t.Fatal(err)
	}
	same("agreement", b, c.Agreement)
	if all, err := s.Agreements(); err != nil || len(all) != 1 {
		t.Errorf("agreements: %d, %v", len(all), err)
	}

	ost, err := s.OutboxState(fixtureOutSSA)
	if err != nil {
		t.Fatal(err)
	}
	same("outbox state", ost, c.OutboxState)
	pending, err := s.Pending(fixtureOutSSA, 0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	same("pending records", pending, c.Pending)
	pos, err := s.FilePos(c.FilePos.Path)
	if err != nil {
		t.Fatal(err)
	}
	same("followed file's position", pos, c.FilePos)

	ist, err := s.InboxState(c.Negotiation.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	same("inbox state", ist, c.InboxState)
	recs, err := s.Records(c.Negotiation.SSAID, 0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		recs[i].ReceivedAt = recs[i].ReceivedAt.UTC()
	}
	same("inbox records", recs, c.Inbox)
	ev, err := s.Evidence(c.Negotiation.SSAID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ev {
		ev[i].ReceivedAt = ev[i].ReceivedAt.UTC()
	}
	same("evidence", ev, c.Evidence)
}
