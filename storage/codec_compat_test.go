package storage

import (
	"encoding/hex"
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ssanet/ssanet/protocol"
)

// oldEncMode is the encoder this package had before it used protocol.Marshal: core deterministic
// encoding, without protocol's explicit TimeUnix. Stores on disk were written with it.
var oldEncMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// TestStoredRecordsCompatible pins the bytes of every kind of CBOR record the store holds, as
// the old encoder wrote them, and checks that today's codec reads them back to the same value
// and writes exactly those bytes: a store written before the codec moved to protocol reads
// the same, and one written after can be read by the program before.
func TestStoredRecordsCompatible(t *testing.T) {
	offer, err := protocol.ParseOfferYAML(protocol.ExampleProvider, t0)
	if err != nil {
		t.Fatal(err)
	}
	// timed stands for a record with a time.Time field: none is stored today, but a new one
	// must encode as the old encoder did (TimeUnix is its default).
	type timed struct {
		At time.Time `cbor:"1,keyasint"`
		N  int64     `cbor:"2,keyasint"`
	}
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"negotiation", &negotiationRecord{Role: 2, Peer: "12D3KooWExample", State: 5, SSAID: "ssa-test-1", OfferID: "ids-alerts",
			Note: "approved", Reasons: []protocol.Reason{{Code: protocol.CodeInformation, Component: "information", Text: "not offered"}},
			Created: t0.UnixNano(), Updated: t0.Add(time.Second).UnixNano(), Delivered: true, Messages: 4}, "ab0102026f313244334b6f6f574578616d706c650305046a7373612d746573742d31056a6964732d616c657274730668617070726f7665640781a30101026b696e666f726d6174696f6e056b6e6f74206f666665726564081b18eaaacd413b8000091b18eaaacd7cd64a000af50b04"},
		{"offer", offer, "a4016a6964732d616c6572747302646175746f03190e1004a505a201a002a401734578616d706c6520486f7374696e67204c746402735365637572697479206f7065726174696f6e7303767365636f707340686f7374696e672e6578616d706c6504781c32204578616d706c6520526f61642c204578616d706c6520436974790683a3016f537572696361746120616c65727473027461747461636b2d646574656374696f6e2d6c6f670363657665a3017819537572696361746120616c65727473202849444d4546763229027461747461636b2d646574656374696f6e2d6c6f67036769646d65667632a30170496e636964656e74207265706f7274730268696e636964656e740365696f64656607a20181a301697075626c69632d697003687472756e63617465040804a30165414d424552021a00ed4e00036c6f7267616e69736174696f6e08a20181762f7373616e65742f65786368616e67652f312e302e300282656e6f69736563746c7309a0"},
		{"outbox", &outboxRecord{Ingested: 100, Refined: 80, Dropped: 20, Acked: 70, Sent: 75, Head: 60, Drop: 10}, "a7011864021850031404184605184b06183c070a"},
		{"inbox", &inboxRecord{Last: 80, Head: 20, Violations: 3}, "a301185002140303"},
		{"evidence", &evidenceRecord{Batch: []byte{0xd2, 0x84, 0x01}, Findings: []byte(`[{"seq":3}]`)}, "a20143d28401024b5b7b22736571223a337d5d"},
		{"file position", &filePosRecord{Inode: 1234567, Offset: 1 << 33, InLongLine: true}, "a3011a0012d687021b000000020000000003f5"},
		{"time", &timed{At: t0, N: -1}, "a2011a6b042ac00220"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, err := oldEncMode.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(old) != tc.want {
				t.Fatalf("old encoding %x, pinned %s", old, tc.want)
			}
			got := reflect.New(reflect.TypeOf(tc.v).Elem())
			if err := protocol.Unmarshal(old, got.Interface()); err != nil {
				t.Fatalf("today's decoder refuses a record the old encoder wrote: %v", err)
			}
			if tm, ok := got.Interface().(*timed); ok {
				tm.At = tm.At.UTC() // the decoder gives local time; the instant is what counts
			}
			if !reflect.DeepEqual(got.Interface(), tc.v) {
				t.Fatalf("read back %+v, stored %+v", got.Interface(), tc.v)
			}
			now, err := protocol.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(now) != string(old) {
				t.Fatalf("today's encoding %x differs from the old one %x", now, old)
			}
		})
	}
}
