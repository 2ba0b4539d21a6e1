// Package storage owns Badger and the persistent records of an ssanet agent: each
// negotiation's state and whole signed transcript, every version of every agreed SSA, an index
// from SSA ID to negotiation, and the provider's offers. It is the only package that imports
// Badger. It never does network I/O. Its one goroutine (the committer, below) and Badger's are
// stopped by Close.
//
// # Durability
//
// Every write method (Commit, PutOffer, DeleteOffer) returns only after its data has been
// fsynced (Badger's SyncWrites), so what a method acknowledged survives a crash or a power
// cut. Commit is atomic: after a crash either all of a commit (transcript entries, negotiation
// record, agreement, index entries) is there or none of it is.
//
// Commits are grouped. Badger's SyncWrites syncs its write-ahead log once per transaction,
// even when its writer batches concurrent transactions, so one goroutine owned by the Store
// (the committer, stopped by Close) writes every Commit waiting for it in one transaction:
// one fsync for the group, while the next group gathers. Within a group each Commit is still
// checked and answered on its own, and a refused one writes nothing.
//
// The agent persists first and sends second: a message reaches the peer only after the Commit
// that records it has returned.
//
// What is written is never rewritten: transcript entries are append-only, an agreement version
// is never replaced (except that an approval is followed by the annulment of the same SSA ID,
// whose signatures end its life; the approval itself stays in the transcript), and an SSA ID,
// once bound to a negotiation, stays bound to it. A Commit that would break one of these rules
// is refused with ErrConflict or ErrSSAInUse and writes nothing. Only offers are replaced and
// deleted.
//
// Agreements are verified (protocol.VerifySSA) before they are written and again whenever they
// are read, so a record altered on disk is reported as ErrCorrupt, never returned.
//
// # Encryption at rest
//
// With Options.EncryptionKey set, Badger encrypts every table, value log and write-ahead log
// with AES data keys that are themselves encrypted with that key (in the KEYREGISTRY file). A
// store written with a key cannot be opened without it; a lost key is lost data. The key is
// never logged.
//
// # Key layout
//
// Keys start with a one-letter prefix and a slash. nid is the 16-byte negotiation ID, raw;
// since it has a fixed length, the slash after it is unambiguous. seq is a uint32, big-endian,
// so that keys sort in transcript order.
//
//	m/schema          schema version of the records (one byte: 1)
//	n/<nid>           negotiation record (CBOR, integer keys), including its transcript length
//	t/<nid>/<seq>     transcript entry seq of negotiation nid: the envelope's bytes as sent or
//	                  received; seq runs from 0 to the transcript length - 1
//	a/<ssaID>         an agreed SSA version with both signatures ((*protocol.SSA).Encode)
//	i/<ssaID>         nid of the negotiation in which the SSA ID was negotiated
//	o/<offerID>       an offer (CBOR of protocol.Offer)
//
// Records use integer CBOR keys that are never renumbered or reused, one core-deterministic
// encoder and one strict decoder, as on the wire. A record that does not decode is ErrCorrupt.
//
// # Memory
//
// Open reads nothing but the schema version: no record is loaded into memory at Open, and
// Badger is tuned for small machines (8 MiB memtables, small block and index caches), so the
// memory an open store uses does not grow with the number of stored SSAs. Only the listing
// methods (Negotiations, Agreements, Offers) hold all their results at once.
// BenchmarkOpenMemory measures it.
//
// There is no value-log garbage collection: values of 64 KiB or more go to Badger's value
// log, and since records there are never deleted or overwritten (but for a rare annulment or
// offer), there is next to no garbage to collect.
//
// # Limits
//
// SSA and offer IDs are at most 1024 bytes (they are keys); a message at most
// protocol.MaxMessageSize; a transcript at most protocol.MaxMessages entries. The entries of
// one Commit below 64 KiB must fit one Badger batch (about 1.2 MiB with these memtables), far
// more than a protocol step records.
package storage
