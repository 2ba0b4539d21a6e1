// Package storage owns Badger and the persistent records of an ssanet agent: each
// negotiation's state and whole signed transcript, every version of every agreed SSA, an index
// from SSA ID to negotiation, the provider's offers, and the record queues of the Exchange
// phase (X.1205 Suppl. 20 Appendix I steps ⑦–⑪): per SSA, the provider's outbox of refined
// records waiting for delivery and the requester's inbox of records delivered, with their
// counters and the evidence of violations. It is the only package that imports Badger. It
// never does network I/O. Its two goroutines (the committer and the value log's garbage
// collector, below) and Badger's are stopped by Close.
//
// # Durability
//
// Every write method (Commit, PutOffer, DeleteOffer, PutRoster, Enqueue, Ack, DropOutbox, Receive,
// DeleteRecordsReceivedBefore, PutEvidence) returns only after its data has been fsynced
// (Badger's SyncWrites, and fdatasync of the segment files the records went to first), so
// what a method acknowledged survives a crash or a power cut. Only
// MarkSent is not: Sent is advisory, kept in memory and stored with the SSA's next write.
// Commit is atomic: after a crash either all of a commit (transcript entries, negotiation
// record, agreement, index entries) is there or none of it is. So are Enqueue and Receive,
// records and counters together, however large the batch (see Exchange queues); EnqueueAll
// queues a chunk for several SSAs and moves a followed file's position in one such commit, so
// that a file is queued exactly once across crashes.
//
// Writes are grouped. Badger's SyncWrites syncs its write-ahead log once per transaction,
// even when its writer batches concurrent transactions, so one goroutine owned by the Store
// (the committer, stopped by Close) writes every request waiting for it (Commits, Enqueues,
// Acks, Receives, …, of any SSA) in one transaction: one sync of each segment file written,
// then one of the value log and one of the write-ahead log for the group, while the next
// group gathers. Within a group each
// request is still checked and answered on its own, and a refused one writes nothing. The
// committer is the only writer of what its requests touch, so they never conflict.
//
// The agent persists first and sends second: a message reaches the peer only after the Commit
// that records it has returned.
//
// What is written is never rewritten: transcript entries are append-only, an agreement version
// is never replaced (except that an approval is followed by the annulment of the same SSA ID,
// whose signatures end its life; the approval itself stays in the transcript), and an SSA ID,
// once bound to a negotiation, stays bound to it. A Commit that would break one of these rules
// is refused with ErrConflict or ErrSSAInUse and writes nothing. Only offers are replaced and
// deleted, and exchange records are deleted once acknowledged or expired.
//
// Agreements are verified (protocol.VerifySSA) whenever they are read, so a record altered on
// disk is reported as ErrCorrupt, never returned. They are not verified again when written:
// they come from protocol's Step, which has made or verified every signature on them a moment
// before (checking the two signatures again on each side was 11 % of a negotiation's CPU in
// a profile).
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
// so that keys sort in transcript order. TestDocKeys checks both tables below against the
// key functions.
//
//	m/schema          schema version of the records (one byte: 2); while a migration runs,
//	                  the version it migrates from, the one it migrates to, and the last key
//	                  it visited (migrate.go)
//	n/<nid>           negotiation record (CBOR, integer keys), including its transcript length
//	t/<nid>/<seq>     transcript entry seq of negotiation nid: the envelope's bytes as sent or
//	                  received; seq runs from 0 to the transcript length - 1
//	a/<ssaID>         an agreed SSA version with both signatures ((*protocol.SSA).Encode)
//	i/<ssaID>         nid of the negotiation in which the SSA ID was negotiated
//	o/<offerID>       an offer (CBOR of protocol.Offer)
//	f/<path>          where the agent read the followed file <path> up to (CBOR, integer keys:
//	                  inode, offset, in-long-line flag), committed with the records read
//	                  before it (EnqueueAll); path is at most 4096 bytes
//	c/<version>       a community roster the agent accepted, with its signatures
//	                  ((*protocol.SignedRoster).Encode); version is a uint64, big-endian, so
//	                  that rosters sort in version order; a version is written once
//
// The exchange queues' records are not in Badger: they are in segment files of their own,
// in the records/ directory, in blocks (segment.go), and Badger holds the queues' states,
// runs and an index entry per block. There <ssa> is the SSA ID's length (2 bytes,
// big-endian) followed by the ID, so that no SSA's keys are a prefix of another's ("a" and
// "a/b"), and seq, last and end are uint64, big-endian (8 bytes), so that an SSA's entries
// sort in order and a prefix iterator seeks straight to the block that holds record after+1.
// Version 2 kept each record under a key of its own (q/<ssa><seq>, r/<ssa><seq>), and the
// bulk of a large batch under a mark (w/<queue>); version 1 also keyed the states, runs and
// marks Q/, b/, R/ and p/.
//
//	s/<ssaID>               outbox state (CBOR, integer keys): the OutboxState counters, and
//	                        Head (every record up to Head is deleted) and Drop (DropOutbox
//	                        marked every record up to Drop for deletion). Records
//	                        max(Acked, Drop, Head)+1 .. Refined are pending
//	u/<ssa><end>            a run: the records stored by one Receive, from the end of the
//	                        previous run + 1 to end; the value is when they were received (Unix
//	                        nanoseconds, int64, big-endian, 8 bytes)
//	v/<ssaID>               inbox state (CBOR, integer keys): Last, Head (records up to Head
//	                        were deleted by retention) and Violations. Records Head+1 .. Last
//	                        are stored
//	x/<ssa><last>           outbox index: where the block of records that ends with record
//	                        last is (28 bytes: file ID, offset and length of the block, its
//	                        first record; see segment.go)
//	y/<ssa><last>           inbox index: the same for the inbox's blocks
//	e/<ssa><first><at>      evidence: a batch from record first received at <at> (Unix
//	                        nanoseconds, 8 bytes), with its findings (CBOR, integer keys)
//
// Records use integer CBOR keys that are never renumbered or reused, and the wire's encoder
// and strict decoder (protocol.Marshal, protocol.Unmarshal). A record that does not decode is
// ErrCorrupt.
//
// # Exchange queues
//
// The state record is the commit point of its queue: an Enqueue or Receive appends its
// records to the queue's segment files and writes their index entries and the state that
// counts them in one transaction, which commits only after the files are synced; the
// transaction is not bounded by the records' size, so a batch of any size is atomic. Bytes
// that no committed index entry points at (a crash between the sync and the commit, or a
// failed commit) are cut at the next Open, and files no entry points into are removed.
//
// Sequence numbers are dense: readers (Pending, Records) seek the index to the block that
// holds the first record they want, decode the blocks from there (the block read or written
// last is kept decoded per queue) and report a missing record as ErrCorrupt. Deletions of
// acknowledged and expired records are counted, never searched: an Ack (or DropOutbox) moves
// the outbox's Head in one transaction, which makes the records up to it invisible and takes
// the blocks that end at or before Head out of the index (up to 64 per transaction, in as many
// as it takes); after it commits, the files that hold no live block are removed and the dead
// blocks at the start of the first live file are punched out of it (Linux), so the disk is
// given back at once. Retention reads the runs, not the records: in sequence order from
// Head+1, it stops at the first run received at or after its limit (records arrive in order),
// and deletes the runs before it, moves Head past their records and takes their blocks out
// of the index, a chunk per transaction, giving their disk back after each. A block that
// holds live records stays whole until they are deleted too.
//
// # Memory
//
// Open reads nothing but the schema version (and, for a migration, the keys it rewrites) and
// the records' index (one small entry per block of up to 128 KiB of records, to cut the
// segment files back to what is committed): no record is loaded into memory at Open, and
// Badger is tuned for small machines (4 MiB memtables, 2 MiB with ProfileSensor, small block
// and index caches), so the
// memory an open store uses does not grow with the number of stored SSAs or records; the
// kernel may still keep every page of the mapped tables resident, which ProfileSensor hands
// back whenever they grew past a budget (releaseOver, mapped_linux.go). Only the
// listing methods (Negotiations, Agreements, Offers, and Evidence for one SSA, at most
// MaxEvidence batches and MaxEvidenceBytes) hold all their results at once; Pending and Records hold as many
// records as asked for, but no more than the maxBytes of data asked for (or one record, when
// it alone is larger), besides the one block per queue kept decoded. MarkSent keeps one
// number per SSA it is called for.
// BenchmarkOpenMemory measures it.
//
// The exchange records are in segment files, compressed with S2 in blocks of up to 128 KiB:
// about 0.25 GB per million EVE records on disk (cmd/ssanet-bench). Values under 64 KiB
// (transcript entries, agreements, the records' index) live in the LSM tree's tables,
// compressed with Snappy in 16 KiB blocks. Larger values go to Badger's value log, and the
// tree holds their keys and pointers: a goroutine owned by the Store (stopped by Close) asks
// Badger every 5 seconds to rewrite and delete the value log files that are half garbage,
// which Badger's compactions find out.
//
// # Free space
//
// Every write is checked against the free space of the store's volume before Badger or a
// segment file sees it (space.go): records (Enqueue, Receive) need the reserve
// (Options.Reserve, 32 MiB by default) plus the LSM tree's size, every other write the margin (MinReserve, 16 MiB) plus
// the tree; a write that does not fit is refused with ErrDiskFull and writes nothing. Open
// refuses a volume with less than the margin. Badger writes its logs through memory maps, so
// without these checks a full volume is a SIGBUS, not an error.
//
// # Backup and restore
//
// Store.Backup copies the store while it is in use: Badger's backup stream of every live key
// at one read timestamp, in a file framed by backup.go (header with the format, the schema
// version and a hash of the encryption key; a SHA-256 at the end). Restore loads such a file
// into a directory that holds no store, refusing a newer format or schema, a file cut short
// or altered, and a key other than the backed-up store's. An older schema is left to Open,
// so that a restored old backup and an old store on disk are upgraded by the same code.
//
// # Schema versions and migrations
//
// The record layout above is version 3 (version 2 kept the exchange records in the tree,
// version 1 also keyed the queues' states, runs and marks before their records: see Key
// layout). Open writes the version into a new store (a store
// that holds records without one is refused, ErrCorrupt), refuses a store of a newer version (ErrStoreNewer) and upgrades an older one, one version at a time,
// before it takes any write: each migration visits the keys it rewrites a chunk per
// transaction, and records the last key visited in m/schema with the chunk, so that a kill
// leaves the old version, which the next Open resumes from that key, or the new one (and a
// program of the old version refuses the store half way). The move of the records into
// segment files (version 2 to 3, migrate_records.go) deletes each chunk's keys in the
// transaction that indexes the chunk, so it resumes from the first key left. Each migration logs when it starts,
// resumes and ends. migrate.go has the list; testdata/store-v1 is a store written by version
// 1, which every later version must read (fixture_test.go).
//
// # Limits
//
// SSA and offer IDs are at most 1024 bytes (they are keys); a message at most
// protocol.MaxMessageSize; a transcript at most protocol.MaxTranscript entries; an exchange
// record at most MaxRecordSize (protocol.MaxMessageSize, as it travels in a signed batch), an
// evidence's batch and findings each at most protocol.MaxMessageSize. A group's keys and
// values (pointers for those in the value log) stay below Badger's batch limits (about 614
// KiB and 6,553 entries with these memtables; with ProfileSensor's, half as large, 307 KiB
// and 3,276): a Commit is far smaller, and an Enqueue or Receive writes one index entry per
// block of records.
package storage
