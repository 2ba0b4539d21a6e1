// Package protocol owns what two ssanet agents say to each other and what they sign: the
// Security information Sharing Agreement (SSA) of ITU-T X.1205 Supplement 20 clause 9.2, its
// deterministic CBOR wire form and its human YAML/JSON forms, the seven signed negotiation
// messages of clause 10.1 (COSE_Sign1, EdDSA), offline verification of an agreed SSA and of an
// exported transcript (replayed from both parties' viewpoints, transcript.go), the meet
// of a request and an offer (Appendix I step ③), and the negotiation state machine of clause
// 10.2 for both roles, and the k-of-n signed community roster with its rules (roster.go).
//
// The package does no I/O: it opens no network connection, starts no goroutine and reads no
// clock. Time is passed in by the caller. Anyone can read and verify an SSA with this package
// alone.
//
// Wire rules (never broken, see STYLE.md): integer CBOR keys are never renumbered or reused,
// enums are append-only, new fields are optional, there are no floats in signed data, every
// encoding goes through one core-deterministic EncMode and every decoding through one strict
// DecMode (exported as Marshal and Unmarshal, which storage and policy use too), and every
// signed document (messages, offer lists, batches, reports, community rosters) is signed by one hand-written
// COSE_Sign1 path (Identity.sign), which the tests check against go-cose.
package protocol
