package protocol

import (
	"errors"
	"strings"
	"testing"
)

// traversal is the ID a hostile provider gave its revision to make the requester write a
// file outside its home (issue 11, item 4).
const traversal = "../../pwned-by-provider"

func TestCheckSSAID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"ssa-0123456789abcdef01234567", true}, // what newSSAID makes
		{"ids-alerts", true},
		{"a", true},
		{"7", true},
		{strings.Repeat("a", MaxSSAIDLen), true},
		{"", false},
		{traversal, false},
		{"..", false},
		{"a/b", false},
		{`a\b`, false},
		{"ssa.json", false},
		{"SSA-1", false},
		{"ssa_1", false},
		{"ssa 1", false},
		{"ssa\x00", false},
		{"ssa\n1", false},
		{"-ssa", false},
		{"ssa-é", false},
		{strings.Repeat("a", MaxSSAIDLen+1), false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			err := CheckSSAID(tc.id)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadSSAID)) {
				t.Fatalf("CheckSSAID(%q) = %v, want ok %v", tc.id, err, tc.ok)
			}
		})
	}
}

// TestTraversalIDRefusedAtDecode: every decoder of something that carries an SSA ID refuses
// one that breaks the grammar, whether it names the SSA or the one it supersedes.
func TestTraversalIDRefusedAtDecode(t *testing.T) {
	pr := newPair(t)
	rout, _ := pr.approve()
	agreed := rout.Agreement
	revision := func(edit func(*SSA)) []byte {
		t.Helper()
		s := agreed.Clone()
		s.Signatures = nil
		s.ID, s.Version, s.Supersedes = "ssa-test-2", agreed.Version+1, agreed.ID
		edit(s)
		// Seal, like a hostile provider's agent, checks nothing of what it signs.
		env, err := Seal(pr.pid, Header{Type: MsgRevision, Negotiation: testNID(7), ID: testNID(40), Time: t0.UnixMilli()}, s)
		if err != nil {
			t.Fatal(err)
		}
		return env.Bytes()
	}
	encode := func(v interface{ Encode() ([]byte, error) }) []byte {
		t.Helper()
		b, err := v.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sealed := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bad := agreed.Clone()
	bad.ID = traversal
	badSupersedes := agreed.Clone()
	badSupersedes.Supersedes = traversal
	rejection, err := Seal(pr.pid, Header{Type: MsgRejection, Negotiation: testNID(7), ID: testNID(41), Time: t0.UnixMilli()}, &Rejection{SSAID: traversal})
	if err != nil {
		t.Fatal(err)
	}
	pid := pr.pid.PeerID()
	tests := []struct {
		name   string
		decode func() error
	}{
		{"stored SSA, ID", func() error { _, err := DecodeSSA(encode(bad)); return err }},
		{"stored SSA, supersedes", func() error { _, err := DecodeSSA(encode(badSupersedes)); return err }},
		{"revision, ID", func() error { _, err := Open(revision(func(s *SSA) { s.ID = traversal })); return err }},
		{"revision, supersedes", func() error { _, err := Open(revision(func(s *SSA) { s.Supersedes = traversal })); return err }},
		{"rejection", func() error { _, err := Open(rejection.Bytes()); return err }},
		{"batch", func() error {
			_, err := OpenBatch(sealed(SealBatch(pr.pid, &Batch{SSAID: traversal, First: 1, Format: FormatEVE, Records: [][]byte{[]byte("{}")}})), pid)
			return err
		}},
		{"batch ack", func() error { _, err := DecodeBatchAck(encode(&BatchAck{SSAID: traversal, Last: 1})); return err }},
		{"report request", func() error { _, err := DecodeReportRequest(encode(&ReportRequest{SSAID: traversal})); return err }},
		{"report", func() error {
			_, err := OpenReport(sealed(SealReport(pr.pid, &Report{SSAID: traversal})), pid)
			return err
		}},
		{"template", func() error {
			_, err := ParseSSAYAML([]byte(strings.Replace(string(ExampleRequester), "\ninformation:", "\nid: \""+traversal+"\"\ninformation:", 1)), t0)
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.decode(); !errors.Is(err, ErrBadSSAID) {
				t.Fatalf("decoded with ID %q: %v, want %v", traversal, err, ErrBadSSAID)
			}
		})
	}
	// The same revision with a good ID opens: the refusal is the ID's.
	if _, err := Open(revision(func(*SSA) {})); err != nil {
		t.Fatalf("a well-formed revision: %v", err)
	}
}
