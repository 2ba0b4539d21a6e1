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
//	         Heartbeat; namespace http://iana.org/idmef, or none (prelude-manager's XML
//	         plugin writes <IDMEF-Message> without one). The output keeps the namespace,
//	         or its absence, as it came in.
//	iodef    IODEF (RFC 7970, also RFC 5070) XML, one IODEF-Document per record holding
//	         one Incident; namespace urn:ietf:params:xml:ns:iodef-2.0 (or -1.0).
//	syslog   one line per record: RFC 5424, or BSD syslog (RFC 3164) when the priority is
//	         not followed by a version; parsed with go-syslog, written back piece by piece.
//
// XML documents are kept as a tree of everything the decoder reports (unknown elements and
// attributes, comments, processing instructions, the DOCTYPE), so an IODEF document stays
// the same IODEF document; only the layout inside tags and text escaping are normalised.
// A document with several alerts or incidents is refused (split it): the view describes one.
// A root with a prefix it does not declare is refused. IODEF keeps its namespace mandatory:
// the RFC 7970 schema requires it, and no IODEF writer is known to leave it out.
//
// View(format, year, record) returns a record's view, for the mappings of policy/cti; an
// SSP's AddrPrefix says which network a masked address stands for.
//
// The view is a map from ECS-style dotted names to values of CEL type string, int or
// timestamp (related.ip is a list of strings); a field absent from the record is absent from
// the map. The table lists every field of each format's view: its type (ip is a string
// holding an address), the masking methods a rule of scope fields may apply to it by name
// (any: remove, hmac, cryptopan and truncate; -: none, a rule cannot name the field) and
// where the record holds it. A location is a path of JSON members (* is
// every element of an array), a path of XML elements from the root's children down
// (A/B[attr=value]/C, @attr for an attribute; <source> and <target> stand for
// Incident/EventData/Flow/System[category=source] and [category=target]), or a part of a
// syslog line. TestDocFields checks the table against the code.
//
//	all formats
//	  related.ip                       list(ip)   -            derived: every address in the record
//	eve
//	  @timestamp                       timestamp  remove hmac  timestamp
//	  event.kind                       string     remove hmac  event_type
//	  source.ip                        ip         any          src_ip
//	  source.port                      int        remove hmac  src_port
//	  destination.ip                   ip         any          dest_ip
//	  destination.port                 int        remove hmac  dest_port
//	  network.transport                string     remove hmac  proto
//	  network.protocol                 string     remove hmac  app_proto
//	  observer.ingress.interface.name  string     remove hmac  in_iface
//	  observer.name                    string     remove hmac  host
//	  rule.name                        string     remove hmac  alert.signature
//	  rule.id                          int        remove hmac  alert.signature_id
//	  event.category                   string     remove hmac  alert.category
//	  event.severity                   int        remove hmac  alert.severity
//	  event.action                     string     remove hmac  alert.action
//	  source.bytes                     int        remove hmac  flow.bytes_toserver
//	  destination.bytes                int        remove hmac  flow.bytes_toclient
//	  source.packets                   int        remove hmac  flow.pkts_toserver
//	  destination.packets              int        remove hmac  flow.pkts_toclient
//	  url.domain                       string     remove hmac  http.hostname
//	  url.original                     string     remove hmac  http.url
//	  user_agent.original              string     remove hmac  http.http_user_agent
//	  http.request.method              string     remove hmac  http.http_method
//	  http.response.status_code        int        remove hmac  http.status
//	  dns.question.name                string     remove hmac  dns.rrname
//	  tls.client.server_name           string     remove hmac  tls.sni
//	idmefv2
//	  @timestamp                       timestamp  remove hmac  CreateTime
//	  event.id                         string     remove hmac  ID
//	  event.category                   string     remove hmac  Category.*
//	  message                          string     remove hmac  Description
//	  event.severity                   string     remove hmac  Priority
//	  observer.name                    string     remove hmac  Analyzer.Name
//	  observer.ip                      ip         any          Analyzer.IP
//	  observer.hostname                string     remove hmac  Analyzer.Hostname
//	  source.ip                        ip         any          Source.*.IP
//	  source.domain                    string     remove hmac  Source.*.Hostname
//	  source.port                      int        remove hmac  Source.*.Port.*
//	  source.user.name                 string     remove hmac  Source.*.User
//	  source.user.email                string     remove hmac  Source.*.Email
//	  destination.ip                   ip         any          Target.*.IP
//	  destination.domain               string     remove hmac  Target.*.Hostname
//	  destination.port                 int        remove hmac  Target.*.Port.*
//	  destination.user.name            string     remove hmac  Target.*.User
//	  destination.user.email           string     remove hmac  Target.*.Email
//	  service.name                     string     remove hmac  Target.*.Service
//	idmef
//	  event.kind                       string     -            derived: the root's child, lower case
//	  event.id                         string     remove hmac  Alert@messageid
//	  @timestamp                       timestamp  remove hmac  Alert/CreateTime
//	                                                           Heartbeat/CreateTime
//	  rule.name                        string     remove hmac  Alert/Classification@text
//	  rule.id                          string     remove hmac  Alert/Classification@ident
//	  event.severity                   string     remove hmac  Alert/Assessment/Impact@severity
//	  event.category                   string     remove hmac  Alert/Assessment/Impact@type
//	  observer.name                    string     remove hmac  Alert/Analyzer@name
//	  observer.hostname                string     remove hmac  Alert/Analyzer/Node/name
//	  observer.ip                      ip         any          Alert/Analyzer/Node/Address/address
//	  source.ip                        ip         any          Alert/Source/Node/Address/address
//	  source.domain                    string     remove hmac  Alert/Source/Node/name
//	  source.port                      int        remove hmac  Alert/Source/Service/port
//	  source.user.name                 string     remove hmac  Alert/Source/User/UserId/name
//	  source.process.name              string     remove hmac  Alert/Source/Process/name
//	  destination.ip                   ip         any          Alert/Target/Node/Address/address
//	  destination.domain               string     remove hmac  Alert/Target/Node/name
//	  destination.port                 int        remove hmac  Alert/Target/Service/port
//	  destination.user.name            string     remove hmac  Alert/Target/User/UserId/name
//	  process.name                     string     remove hmac  Alert/Target/Process/name
//	  file.name                        string     remove hmac  Alert/Target/File/name
//	  network.transport                string     remove hmac  Alert/Source/Service@iana_protocol_name
//	                                                           Alert/Target/Service@iana_protocol_name
//	iodef
//	  event.kind                       string     -            derived: the root's child, lower case
//	  event.id                         string     remove hmac  Incident/IncidentID
//	  event.action                     string     remove hmac  Incident@purpose
//	  @timestamp                       timestamp  remove hmac  Incident/DetectTime
//	                                                           Incident/StartTime
//	                                                           Incident/ReportTime
//	                                                           Incident/GenerationTime
//	  message                          string     remove hmac  Incident/Description
//	  event.severity                   string     remove hmac  Incident/Assessment/SystemImpact@severity
//	                                                           Incident/Assessment/Impact@severity
//	  event.category                   string     remove hmac  Incident/Assessment/SystemImpact@type
//	                                                           Incident/Assessment/Impact@type
//	  rule.name                        string     remove hmac  Incident/Method/Reference/ReferenceName
//	  source.ip                        ip         any          <source>/Node/Address
//	  source.domain                    string     remove hmac  <source>/Node/DomainData/Name
//	                                                           <source>/Node/NodeName
//	  source.port                      int        remove hmac  <source>/Service/Port
//	  destination.ip                   ip         any          <target>/Node/Address
//	  destination.domain               string     remove hmac  <target>/Node/DomainData/Name
//	                                                           <target>/Node/NodeName
//	  destination.port                 int        remove hmac  <target>/Service/Port
//	  network.transport                string     remove hmac  <source>/Service@ip-protocol
//	                                                           <source>/Service@ip_protocol
//	                                                           <target>/Service@ip-protocol
//	                                                           <target>/Service@ip_protocol
//	  organization.name                string     remove hmac  Incident/Contact/ContactName
//	  organization.email               string     remove hmac  Incident/Contact/Email/EmailTo
//	syslog
//	  @timestamp                       timestamp  -            TIMESTAMP
//	  log.syslog.priority              int        -            PRI
//	  log.syslog.facility.code         int        -            PRI / 8
//	  log.syslog.severity.code         int        -            PRI % 8
//	  host.name                        string     remove hmac  HOSTNAME
//	  process.name                     string     remove hmac  APP-NAME, or the TAG of RFC 3164
//	  process.pid                      string     remove hmac  PROCID, or the PID after the TAG of RFC 3164
//	  event.code                       string     remove hmac  MSGID
//	  message                          string     remove hmac  MSG
//
// network.transport is lower case, and an IANA protocol number becomes its name (6 is
// tcp). An RFC 3164 time stamp carries no year: it takes Config.Year, and without one the
// record has no @timestamp. A field with several locations, or whose location occurs
// several times (several Sources), holds the first value in the record; masking a field by
// name masks every occurrence.
//
// # Masking
//
// Rules apply in a fixed order whatever their order in the SSA: remove, hmac, cryptopan,
// truncate (truncation last, so that zero low bits are what the requester sees and checks);
// within one method, rules on named fields first. Scopes:
//
//   - fields: the named view fields, at every native location. Derived fields (related.ip,
//     event.kind of XML) and the others marked - in the table cannot be named. truncate and
//     cryptopan need address fields and apply to every address literal in the value.
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
// syslog header field "-"); under an address scope, a value that is only an address is
// removed as a named field is, and an address inside longer text is replaced with
// "(removed)", so that "SSH brute force from (removed) against (removed)" still reads.
// none masks nothing; a none rule on a field an address scope would also mask is refused.
//
// # Masking and schemas
//
// Where a format's schema gives a member a type, every method leaves a value of that type or
// removes the member where the schema allows. This holds for IDMEFv2, whose draft JSON
// schemas (V04 to V06) the tests validate every sample against under every method; IDMEF has
// only a draft DTD and IODEF no schema in the repository, so there the record keeps its
// structure but is not checked against one. In IDMEFv2:
//
//	Source/Target IP      remove deletes the member; hmac writes an address of
//	                      2001:db8::/32, whose low 96 bits are the first 12 bytes of the
//	                      address's HMAC, the same bytes the 32-hex-digit token of that
//	                      address starts with in free text
//	Analyzer/Sensor IP    required by V04 and V05: remove leaves 0.0.0.0 (:: for IPv6)
//	ID                    required: remove leaves the nil UUID; hmac writes its token as a
//	                      UUID (8-4-4-4-12 of the same 32 hex digits)
//	CreateTime            required: remove and hmac leave 1970-01-01T00:00:00Z, which the
//	                      view (and so Verify's schedule check) takes as no time
//	Email                 hmac writes TOKEN@hmac.invalid (.invalid is reserved, RFC 2606)
//	Port                  hmac writes a port derived from the HMAC (1 to 65535): like a
//	                      cryptopan address, Verify cannot tell it from a real one
//	Category, Priority    enumerations: no token is a value of the list, so hmac removes
//	Analyzer/Sensor Name  required: remove leaves ""
//
// hmac maps an address into the documentation prefix rather than moving the token to a
// free-text member because an address field is what a SIEM indexes and correlates on: the
// pseudonym stays in the field, stays stable for a key, and reads as what it is (RFC 3849
// reserves 2001:db8::/32 for documentation, so no real host has such an address). 96 bits
// keep collisions as unlikely as with the 128-bit text token for any realistic number of
// hosts. For the same reason the address scopes leave addresses of 2001:db8::/32 alone (they
// are what hmac wrote), and Verify accepts them, the unspecified addresses and the nil
// UUID where a rule says hmac or remove.
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
// The schedule is the period of sharing (clause 9.2): a record that reaches the enforcement
// point while it is open is shared whatever its own time (historical records, an incident
// detected before the SSA); before its start or from its end on, none is, and each is
// counted as outside the schedule (Stats.OutsideSchedule; the clock is Config.Now). A limit
// on the record's own time is a filter on the view's @timestamp, a CEL timestamp:
//
//	r["@timestamp"] >= timestamp("2025-01-01T00:00:00Z")
//
// # Verification
//
// Verify(ssp, format, record) is the requester's check of a received record; it needs no
// key and returns typed findings. A Verifier (NewVerifier) makes the same check of many
// records, readied once: it costs about what refining them cost the provider.
//
// Run, Refine and Verify never panic on input; a malformed record is an error located by
// line and byte offset, and the records around it are still refined.
package policy
