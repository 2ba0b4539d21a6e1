// Package policy owns the translation of an agreed SSA into a Security information Sharing
// Policy (SSP) and the enforcement of that SSP over security records (ITU-T X.1205 Suppl. 20
// clause 8 and clause 9.2 item 5): the SSP enforcement point that turns raw records into
// refined ones on the provider's side, and the check of received records on the requester's
// side. It also owns the parsers and writers of the record formats.
//
// The package is pure: its functions map (SSP, record) to a result. It opens no network
// connection, stores nothing, reads no clock (time comes from the records or the caller) and
// starts no goroutine. It never logs a key or a record.
//
// # From SSA to SSP
//
// Compile(ssa, keys) translates an SSA deterministically; Check(ssa) is the same test without
// keys, for the negotiation point at proposal time. An SSA whose policy the engine cannot
// enforce exactly is refused with a *Refusal carrying a stable Problem (unsupported format,
// field not in a format's view, a filter that does not type-check to bool, rank-by not
// numeric, a method that does not apply to a field, a conflict, an engine limit). The SSP's
// Hash is the SHA-256 of a canonical CBOR encoding of what it enforces; keys are not part of
// it, so the provider and the requester compute the same hash.
//
// # Records and the normalised view
//
// Each format has an adapter that parses a record, hands each of its values to the masking
// rules, captures the normalised view and writes the record back in its own format:
//
//	eve      Suricata EVE JSON, one object per line. Written back in one pass: bytes that
//	         do not change are copied, only strings that may hold an address or belong to
//	         the view are decoded. Output is compact JSON.
//	idmefv2  IDMEFv2 JSON objects, one per line or pretty-printed, one after the other
//	         ("Version" must start with "2."). Output is compact JSON.
//	idmef    IDMEF (RFC 4765) XML, one IDMEF-Message per record holding one Alert or
//	         Heartbeat; namespace http://iana.org/idmef.
//	iodef    IODEF (RFC 7970, also RFC 5070) XML, one IODEF-Document per record holding
//	         one Incident; namespace urn:ietf:params:xml:ns:iodef-2.0 (or -1.0).
//	syslog   one line per record: RFC 5424, or BSD syslog (RFC 3164) when the priority is
//	         not followed by a version; parsed with go-syslog, written back piece by piece.
//
// XML documents are kept as a tree of everything the decoder reports (unknown elements and
// attributes, comments, processing instructions, the DOCTYPE), so an IODEF document stays
// the same IODEF document; only the layout inside tags and text escaping are normalised.
// A document with several alerts or incidents is refused (split it): the view describes one.
//
// The view is a map from ECS-style dotted names to values of CEL type string, int or
// timestamp; a field absent from the record is absent from the map. Fields per format
// (native location -> field):
//
//	all       related.ip (list of every address anywhere in the record, derived)
//	eve       timestamp -> @timestamp, event_type -> event.kind, src_ip -> source.ip,
//	          src_port -> source.port, dest_ip -> destination.ip, dest_port ->
//	          destination.port, proto -> network.transport (lower case), app_proto ->
//	          network.protocol, in_iface -> observer.ingress.interface.name, host ->
//	          observer.name, alert.signature -> rule.name, alert.signature_id -> rule.id,
//	          alert.category -> event.category, alert.severity -> event.severity,
//	          alert.action -> event.action, flow.bytes_toserver -> source.bytes,
//	          flow.bytes_toclient -> destination.bytes, flow.pkts_toserver ->
//	          source.packets, flow.pkts_toclient -> destination.packets, http.hostname ->
//	          url.domain, http.url -> url.original, http.http_user_agent ->
//	          user_agent.original, http.http_method -> http.request.method, http.status ->
//	          http.response.status_code, dns.rrname -> dns.question.name, tls.sni ->
//	          tls.client.server_name
//	idmefv2   CreateTime -> @timestamp, ID -> event.id, Category[] -> event.category,
//	          Description -> message, Priority -> event.severity, Analyzer.Name/IP/Hostname
//	          -> observer.name/ip/hostname, Source[].IP/Hostname/Port[]/User/Email ->
//	          source.ip/domain/port/user.name/user.email, Target[].IP/Hostname/Port[]/User/
//	          Email -> destination.ip/domain/port/user.name/user.email, Target[].Service ->
//	          service.name
//	idmef     Alert@messageid -> event.id, CreateTime -> @timestamp, the Alert or Heartbeat
//	          element -> event.kind, Classification@text/@ident -> rule.name/rule.id,
//	          Assessment/Impact@severity/@type -> event.severity/event.category,
//	          Analyzer@name, Analyzer/Node/name, Analyzer/Node/Address/address ->
//	          observer.name/hostname/ip, Source/Node/Address/address, Source/Node/name,
//	          Source/Service/port, Source/User/UserId/name, Source/Process/name ->
//	          source.ip/domain/port/user.name/process.name, Target/... the same ->
//	          destination.ip/domain/port/user.name, Target/Process/name -> process.name,
//	          Target/File/name -> file.name, Service@iana_protocol_name -> network.transport
//	iodef     Incident/IncidentID -> event.id, Incident@purpose -> event.action,
//	          DetectTime|StartTime|ReportTime|GenerationTime (first present) -> @timestamp,
//	          Description -> message, Assessment/SystemImpact (or Impact) @severity/@type ->
//	          event.severity/event.category, Method/Reference/ReferenceName -> rule.name,
//	          EventData/Flow/System[category=source|target]/Node/Address, Node/DomainData/
//	          Name (or NodeName), Service/Port, Service@ip-protocol -> source.* or
//	          destination.* ip/domain/port and network.transport, Contact/ContactName ->
//	          organization.name, Contact/Email/EmailTo -> organization.email;
//	          the document's Incident element -> event.kind
//	syslog    TIMESTAMP -> @timestamp (RFC 3164 stamps take Config.Year), PRI ->
//	          log.syslog.priority, log.syslog.facility.code, log.syslog.severity.code,
//	          HOSTNAME -> host.name, APP-NAME/TAG -> process.name, PROCID -> process.pid,
//	          MSGID -> event.code, MSG -> message
//
// When a field occurs several times (several Sources), the view holds the first; masking a
// field by name masks every occurrence.
//
// # Masking
//
// Rules apply in a fixed order whatever their order in the SSA: remove, hmac, cryptopan,
// truncate (truncation last, so that zero low bits are what the requester sees and checks);
// within one method, rules on named fields first. Scopes:
//
//   - fields: the named view fields, at every native location. Derived fields (related.ip,
//     event.kind of XML) cannot be named. truncate and cryptopan need address fields and
//     apply to every address literal in the value.
//   - public-ip: every public address anywhere in the record: every JSON string value and
//     member name (after decoding escapes), every XML attribute value, text node, comment and
//     processing instruction, every syslog header field, structured data and message,
//     including addresses inside longer strings. Public means globally reachable unicast
//     (see IsPublic).
//   - all-ip: every address anywhere in the record.
//
// Address literals are found by the scanner documented at findIPs: dotted quads of exactly
// four groups, and IPv6 literals bounded by non-word characters.
//
// Methods: truncate zeroes the low Bits bits (the same count for IPv4 and IPv6: 8 bits on an
// IPv6 address zero its last 8 of 128 bits, not a /64; more bits than the address has zero
// it all). cryptopan is CryptoPAn (Xu et al.) with AES-128. hmac replaces a value (or an
// address) with the first 16 bytes of HMAC-SHA256 in lower-case hex. remove deletes a named
// field (JSON member, XML attribute; XML element text and syslog message become empty, a
// syslog header field "-"); under an address scope it deletes the address from the text.
// none masks nothing; a none rule on a field an address scope would also mask is refused.
//
// Keys come from the KeySource the provider gives to Compile and never from the SSA, which
// the requester reads (with the key, it could invert cryptopan and recompute hmac). A rule
// that names a key ID uses the provider's key of that name as is. Otherwise the key is the
// SSA's own secret, and cryptopan and hmac each use a sub-key HMAC-SHA256(key, "ssanet
// policy <method>"). Only the provider's offer names key IDs (protocol.Meet drops a
// requester's, and protocol.Satisfies refuses, against the offer, one the offer does not
// set). The SSP's hash covers key IDs, never keys or their fingerprints.
//
// # Filtering
//
// A filter is a CEL expression over the view, available as the variable r of type
// map(string, dyn): r["source.ip"] == "1.1.1.1" keeps only the records whose attacker is
// 1.1.1.1; "source.port" in r && r["source.port"] < 1024; "1.1.1.1" in r["related.ip"];
// r["@timestamp"] > timestamp("2024-01-01T00:00:00Z"). It is type-checked at Compile (it
// must be of type bool) and every constant key it reads must be a field of every agreed
// format's view. Several filters are a conjunction. Filters see the record as read, before
// masking, so a filter on an address keeps working under an address mask. A filter whose
// CEL-estimated worst case (each view value taken as 128 long) is over FilterCostLimit is
// refused at Compile (ProblemFilterCost; a negotiation reports protocol.CodeFilterCost), and
// each evaluation is limited to FilterCostLimit; an evaluation error — a missing field read with r["x"], the
// cost limit — excludes the record (fail closed) and is counted in Stats.FilterErrors.
//
// # Summarisation
//
// A summarisation replaces records by one summary per window: windows are aligned on
// multiples of the window length since the Unix epoch and chosen by each record's
// @timestamp; a record of a later window closes the current one, a record of an earlier one
// is counted as late. Values are ranked after masking (truncated addresses are grouped by
// their prefix), by count or by the sum of a numeric field. The sketch is Space-Saving with
// SketchCapacity(N) counters (64 per ranked value, between 1024 and 65536): memory is
// bounded whatever the number of distinct values, and each Score overestimates the true
// value by at most its Error, itself at most Total/capacity (reported as Bound). Summaries
// are written, in every format, as one line of JSON {"ssanet_summary": Summary}.
//
// # Handling
//
// Marking is carried with every delivered batch: the TLP 2.0 label with its STIX 2.1
// marking-definition id, the retention and the redistribution rule. Expired and
// MayRedistribute are the requester's pure checks. Without a handling policy, records never
// expire and may not be redistributed.
//
// # Schedule
//
// With a bounded schedule, records whose @timestamp is outside it, or unknown, are not sent.
//
// # Verification
//
// Verify(ssp, format, record) is the requester's check of a received record; it needs no
// key and returns typed findings.
//
// Run, Refine and Verify never panic on input; a malformed record is an error located by
// line and byte offset, and the records around it are still refined.
package policy
