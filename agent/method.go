package agent

import (
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"

	"github.com/ssanet/ssanet/protocol"
)

// The agreed method (clause 9.2 item 6) as this agent reads and enforces it:
//
//   - method.protocols are the libp2p stream protocols records are delivered over. This agent
//     delivers over ProtocolExchange (/ssanet/exchange/1.0.0) only.
//   - method.security are the libp2p connection security protocols a delivery may run over,
//     by name: "noise" (/noise) and "tls" (/tls/1.0.0; a QUIC connection's handshake is
//     libp2p's TLS 1.3, so a QUIC connection counts as tls). The identifiers themselves are
//     understood too. An agent uses the transports of its config key security.
//   - method.access are the provider's multiaddrs: the provider's meet puts its listen
//     addresses there.
//
// Fail closed at both ends: during negotiation an agent refuses (method-unsupported) a method
// that lists no protocol or no security it supports, and a provider's proposal lists what it
// supports where both sides left a list empty; at delivery the provider sends no batch over a
// stream whose protocol or connection security the SSA does not list, and the requester
// refuses such a batch and keeps it as evidence of a violation. An SSA that lists no
// protocol (or no security) at all, made before this rule, constrains none.

// securityIDs are the connection security transports an agent may be configured with, by the
// name an SSA's method.security uses, with the protocol ID a connection secured by them reports.
var securityIDs = map[string]libp2pprotocol.ID{"noise": noise.ID, "tls": libp2ptls.ID}

// defaultSecurity is the security transports of an agent whose config sets none, in order of
// preference: a connection uses the first of its dialler's that the other side supports.
var defaultSecurity = []string{"noise", "tls"}

// deliveryProtocols are the stream protocols this agent delivers over.
var deliveryProtocols = []string{ProtocolExchange}

// methods is what this agent can honour of an SSA's method: the protocols it delivers over
// and the names of its connection security transports.
type methods struct {
	protocols []string
	security  []string
}

// unsupported are the reasons (method-unsupported, one per component) why this agent, in
// role, cannot honour m; nil when it can. A list left empty constrains nothing.
func (ms methods) unsupported(m protocol.Method, role protocol.Role) []protocol.Reason {
	var out []protocol.Reason
	verb := "deliver"
	if role == protocol.RoleRequester {
		verb = "receive"
	}
	add := func(component string, listed, supported []string, what string) {
		r := protocol.Reason{Code: protocol.CodeMethodUnsupported, Component: component,
			Requester: strings.Join(listed, ", "), Provider: strings.Join(supported, ", "),
			Text: fmt.Sprintf("the %s cannot %s over any %s the method lists: it supports %s", role, verb, what, strings.Join(supported, ", "))}
		if role == protocol.RoleRequester {
			r.Requester, r.Provider = r.Provider, r.Requester
		}
		out = append(out, r)
	}
	if len(m.Protocols) > 0 && !slices.ContainsFunc(m.Protocols, func(p string) bool { return slices.Contains(ms.protocols, p) }) {
		add("method.protocols", m.Protocols, ms.protocols, "protocol")
	}
	if len(m.Security) > 0 && !slices.ContainsFunc(ms.security, func(s string) bool { return listsSecurity(m.Security, s) }) {
		add("method.security", m.Security, ms.security, "connection security (config key security)")
	}
	return out
}

// complete fills the lists of m that are empty (neither side constrained them) with what
// this agent supports, so that an SSA it proposes says how delivery runs.
func (ms methods) complete(m *protocol.Method) {
	if len(m.Protocols) == 0 {
		m.Protocols = slices.Clone(ms.protocols)
	}
	if len(m.Security) == 0 {
		m.Security = slices.Clone(ms.security)
	}
}

// listsSecurity reports whether a method's security list names the transport name (one of
// securityIDs), by its name or its protocol ID.
func listsSecurity(listed []string, name string) bool {
	id, ok := securityIDs[name]
	return slices.Contains(listed, name) || (ok && slices.Contains(listed, string(id)))
}

// connSecurity is the name of a connection's security ("noise", "tls"), or its protocol ID
// when it is another, or "none".
func connSecurity(c network.ConnectionState) string {
	if c.Security == "" {
		switch c.Transport {
		case relayedTransport:
			return relayedSecurity
		case "quic", "quic-v1", "webtransport":
			return "tls" // QUIC's handshake is libp2p's TLS 1.3
		}
		return "none"
	}
	for name, id := range securityIDs {
		if c.Security == id {
			return name
		}
	}
	return string(c.Security)
}

// methodBreach says how a delivery over stream protocol proto on a connection with state c
// breaks m, or "" when m lists both; security says the connection's security is at fault.
func methodBreach(m protocol.Method, proto libp2pprotocol.ID, c network.ConnectionState) (why string, security bool) {
	if len(m.Protocols) > 0 && !slices.Contains(m.Protocols, string(proto)) {
		return fmt.Sprintf("delivery over %s, which the SSA's method.protocols (%s) does not list", proto, strings.Join(m.Protocols, ", ")), false
	}
	if sec := connSecurity(c); len(m.Security) > 0 && !listsSecurity(m.Security, sec) && !(sec == relayedSecurity && listsEverySecurity(m.Security)) {
		return fmt.Sprintf("delivery over a connection secured by %s (%s), which the SSA's method.security (%s) does not list",
			sec, c.Transport, strings.Join(m.Security, ", ")), true
	}
	return "", false
}
