// Package cti owns the mapping of shared records to the formats cyber threat intelligence
// teams work in: STIX 2.1 objects and bundles, Elastic Common Schema (ECS) documents and MISP
// core-format events. Each mapping reads a record through its format's normalised view
// (policy.View) and carries the agreement's handling with it: the SSA's TLP 2.0 label becomes
// the STIX object_marking_refs, the ECS threat.indicator.marking.tlp and a MISP tlp: tag; the
// SSA ID and the SSP hash ride on every STIX object in the ssanet extension-definition, in the
// ECS labels and in MISP tags; an address a truncate rule masked stays the network it is (a
// CIDR value in STIX and MISP).
//
// STIX Cyber-observable Objects get the deterministic IDs of STIX 2.1 §2.9 (UUIDv5 in the
// namespace 00abedb4-aa42-466c-9c01-fed23315a9b7 over the type's ID contributing properties);
// every other object gets a UUIDv5 in the same namespace over what identifies it (the SSA and
// the record's sequence number for an observed-data), so a record mapped twice yields the same
// objects, and a receiver that keys on IDs sees no duplicates.
//
// The package is pure, as policy is: it opens no file or connection, reads no clock (times
// come from the records and the caller) and starts no goroutine. Writing the results (a
// bundle to a TAXII collection, a MISP feed directory, ECS documents to Elasticsearch) is the
// caller's business.
package cti
