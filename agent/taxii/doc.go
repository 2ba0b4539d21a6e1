// Package taxii is the requester's TAXII 2.1 server (OASIS TAXII Version 2.1, 2021): it offers
// the records received under the SSAs the configuration exposes, mapped to STIX 2.1 by
// policy/cti, to the CTI tools of the requester's organisation or community (MISP, OpenCTI)
// that pull TAXII collections.
//
// The server is read-only and serves one API root (/ssanet/) with one collection per exposed
// SSA; discovery is at /taxii2/. The agreement governs every collection: a collection is
// offered only while its SSA's effective redistribution (the stricter of its redistribution
// rule and its TLP) reaches the audience of the user who asks, never for TLP:RED or
// redistribution "none"; a user reads only the collections that list it as a reader (any
// other collection answers as one that does not exist: 404, TAXII 2.1 §5.2); the
// objects of a record leave the collection when the SSA's retention has passed since the
// record was received. Objects carry the SSA's TLP marking and the SSA (policy/cti).
//
// A collection is read straight from the inbox, in the order of its sequence numbers: the
// `next` cursor is a position in that sequence (record and object within it), so paging is
// stable while records arrive or are deleted. `date_added` is the time the record was
// received; the objects the records share (the provider's identity, the marking and the
// extension definition) come first, dated at the SSA's agreement. An SCO seen in several
// records comes with each of them, with the same deterministic id and content.
//
// Every request is authenticated (HTTP basic or bearer, secrets read from files, compared in
// constant time) over TLS; its work is bounded: a page holds at most Config.MaxPage objects
// and maxPageBytes of them, and reads at most maxScan records, after which it ends with
// `more` and a `next` that carries on; at most maxPaging requests read records at once, and
// one more is answered 429. The package knows nothing of the agent: it reads SSAs
// and records through Source.
package taxii
