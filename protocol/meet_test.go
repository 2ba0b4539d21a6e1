package protocol

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var now0 = FromTime(t0)

func reqWith(f func(s *SSA)) *SSA {
	s := &SSA{ID: "ssa-meet", Status: StatusProposal, Participants: Participants{Requester: Participant{Name: "requester"}},
		Information: []Information{{Type: TypeBlacklist, Format: FormatIODEF}}}
	if f != nil {
		f(s)
	}
	return s
}

func offerWith(f func(s *SSA)) *Offer {
	o := &Offer{ID: "offer", Terms: SSA{Participants: Participants{Provider: Participant{Name: "provider"}},
		Information: []Information{{Type: TypeBlacklist, Format: FormatIODEF}}}}
	if f != nil {
		f(&o.Terms)
	}
	return o
}

func masking(rules ...MaskRule) func(s *SSA) {
	return func(s *SSA) { s.Policy = &Policy{Masking: rules} }
}

func truncate(bits, maxBits uint8) MaskRule {
	return MaskRule{Scope: ScopePublicIP, Method: MaskTruncate, Bits: bits, MaxBits: maxBits}
}

func method(m string) MaskRule { return MaskRule{Scope: ScopePublicIP, Method: m} }

// requesterKey names a masking key a requester chose, and so may know.
const requesterKey = "requester-key"

// conflict is an expected Reason: its code, component, and what each side's value must say.
type conflict struct {
	code                Code
	component           string
	requester, provider string
}

func TestMeetComponents(t *testing.T) {
	day := Time(86400)
	cases := []struct {
		name      string
		req       *SSA
		offer     *Offer
		check     func(p *SSA) error // when the meet succeeds
		conflicts []conflict         // when it does not
	}{
		// Information.
		{name: "information: one format per type, in the requester's order",
			req: reqWith(func(s *SSA) {
				s.Information = []Information{{Type: TypeAttackDetectionLog, Format: FormatIDMEFv2}, {Type: TypeAttackDetectionLog, Format: FormatEVE},
					{Type: TypeIncident, Format: FormatIODEF}, {Type: TypeBlacklist, Format: FormatSyslog}}
			}),
			offer: offerWith(func(s *SSA) {
				s.Information = []Information{{Name: "alerts", Type: TypeAttackDetectionLog, Format: FormatEVE}, {Type: TypeAttackDetectionLog, Format: FormatIDMEFv2},
					{Name: "incidents", Type: TypeIncident, Format: FormatIODEF}}
			}),
			check: func(p *SSA) error {
				want := []Information{{Type: TypeAttackDetectionLog, Format: FormatIDMEFv2}, {Name: "incidents", Type: TypeIncident, Format: FormatIODEF}}
				if !slices.Equal(p.Information, want) {
					return fmt.Errorf("information %v", p.Information)
				}
				return nil
			}},
		{name: "information: nothing in common",
			req: reqWith(func(s *SSA) { s.Information = []Information{{Type: TypeBlacklist, Format: FormatIDMEF}} }),
			offer: offerWith(func(s *SSA) {
				s.Information = []Information{{Type: TypeBlacklist, Format: FormatIODEF}, {Type: TypeIncident, Format: FormatIODEF}}
			}),
			conflicts: []conflict{{CodeInformation, "information", "blacklist/idmef", "blacklist/iodef, incident/iodef"}}},

		// Masking.
		{name: "masking: the provider's rule alone is kept",
			req: reqWith(nil), offer: offerWith(masking(truncate(8, 0))),
			check: wantMasking(truncate(8, 0))},
		{name: "masking: the requester's rule alone is kept, without its tolerance",
			req: reqWith(masking(truncate(8, 16))), offer: offerWith(nil),
			check: wantMasking(truncate(8, 0))},
		{name: "masking: the stronger method wins (requester)",
			req: reqWith(masking(method(MaskHMAC))), offer: offerWith(masking(truncate(8, 0))),
			check: wantMasking(method(MaskHMAC))},
		{name: "masking: the stronger method wins (provider)",
			req: reqWith(masking(method(MaskCryptoPAn))), offer: offerWith(masking(method(MaskRemove))),
			check: wantMasking(method(MaskRemove))},
		{name: "masking: of two truncations, more bits",
			req: reqWith(masking(truncate(16, 24))), offer: offerWith(masking(truncate(8, 0))),
			check: wantMasking(truncate(16, 0))},
		{name: "masking: the provider's key stays with its target",
			req:   reqWith(masking(method(MaskHMAC))),
			offer: offerWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: "offer-key"})),
			check: wantMasking(MaskRule{Scope: ScopePublicIP, Method: MaskHMAC, KeyID: "offer-key"})},
		{name: "masking: the requester's key is dropped from a stronger method",
			req:   reqWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: requesterKey})),
			offer: offerWith(masking(truncate(8, 0))),
			check: wantMasking(method(MaskCryptoPAn))},
		{name: "masking: the requester's key is dropped from a target of its own",
			req:   reqWith(masking(MaskRule{Scope: ScopeAllIP, Method: MaskHMAC, KeyID: requesterKey})),
			offer: offerWith(masking(truncate(8, 0))),
			check: wantMasking(MaskRule{Scope: ScopeAllIP, Method: MaskHMAC}, truncate(8, 0))},
		{name: "masking: the requester's key gives way to the provider's",
			req:   reqWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskHMAC, KeyID: requesterKey})),
			offer: offerWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: "offer-key"})),
			check: wantMasking(MaskRule{Scope: ScopePublicIP, Method: MaskHMAC, KeyID: "offer-key"})},
		{name: "masking: one method on both sides keeps the provider's key",
			req:   reqWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: requesterKey})),
			offer: offerWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: "offer-key"})),
			check: wantMasking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: "offer-key"})},
		{name: "masking: a stronger method without a key drops the provider's key",
			req:   reqWith(masking(method(MaskRemove))),
			offer: offerWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: "offer-key"})),
			check: wantMasking(method(MaskRemove))},
		{name: "masking: fields compared as a set",
			req:       reqWith(masking(MaskRule{Scope: ScopeFields, Fields: []string{"user.name", "host.name"}, Method: MaskNone})),
			offer:     offerWith(masking(MaskRule{Scope: ScopeFields, Fields: []string{"host.name", "user.name"}, Method: MaskRemove})),
			conflicts: []conflict{{CodeMasking, "policy.masking", "fields:host.name,user.name unmasked", "fields:host.name,user.name remove"}}},
		{name: "masking: method none where the provider masks",
			req: reqWith(masking(method(MaskNone))), offer: offerWith(masking(truncate(8, 0))),
			conflicts: []conflict{{CodeMasking, "policy.masking", "public-ip unmasked", "public-ip truncate 8 bits"}}},
		{name: "masking: method none where nobody masks",
			req: reqWith(masking(method(MaskNone), MaskRule{Scope: ScopeAllIP, Method: MaskNone})), offer: offerWith(nil),
			check: func(p *SSA) error {
				if p.Policy != nil {
					return fmt.Errorf("policy %+v", p.Policy)
				}
				return nil
			}},
		{name: "masking: more truncation than max-bits",
			req: reqWith(masking(truncate(8, 12))), offer: offerWith(masking(truncate(16, 0))),
			conflicts: []conflict{{CodeMasking, "policy.masking", "public-ip truncate at most 12 bits", "public-ip truncate 16 bits"}}},
		{name: "masking: max-bits and a stronger method",
			req: reqWith(masking(truncate(8, 16))), offer: offerWith(masking(method(MaskCryptoPAn))),
			conflicts: []conflict{{CodeMasking, "policy.masking", "public-ip truncate at most 16 bits", "public-ip cryptopan"}}},
		{name: "masking: within max-bits",
			req: reqWith(masking(truncate(8, 16))), offer: offerWith(masking(truncate(16, 0))),
			check: wantMasking(truncate(16, 0))},
		{name: "masking: the provider's none is no rule",
			req: reqWith(nil), offer: offerWith(masking(method(MaskNone))),
			check: func(p *SSA) error {
				if p.Policy != nil {
					return fmt.Errorf("policy %+v", p.Policy)
				}
				return nil
			}},
		{name: "masking: the provider's none where the requester masks",
			req: reqWith(masking(method(MaskHMAC))), offer: offerWith(masking(method(MaskNone))),
			conflicts: []conflict{{CodeMasking, "policy.masking", "public-ip hmac", "public-ip unmasked"}}},
		{name: "masking: the provider's max-bits",
			req: reqWith(masking(truncate(24, 0))), offer: offerWith(masking(truncate(8, 16))),
			conflicts: []conflict{{CodeMasking, "policy.masking", "public-ip truncate 24 bits", "public-ip truncate at most 16 bits"}}},

		// Filtering.
		{name: "filtering: the conjunction of both sides",
			req:   reqWith(func(s *SSA) { s.Policy = &Policy{Filtering: []Filter{{"a"}, {"b"}}} }),
			offer: offerWith(func(s *SSA) { s.Policy = &Policy{Filtering: []Filter{{"c"}, {"a"}}} }),
			check: func(p *SSA) error {
				if !slices.Equal(p.Policy.Filtering, []Filter{{"a"}, {"b"}, {"c"}}) {
					return fmt.Errorf("filters %v", p.Policy.Filtering)
				}
				return nil
			}},

		// Summarization.
		{name: "summarization: one side",
			req: reqWith(nil), offer: offerWith(func(s *SSA) { s.Policy = &Policy{Summarization: &Summarization{"source.ip", RankByCount, 10, 3600}} }),
			check: wantSummary(Summarization{"source.ip", RankByCount, 10, 3600})},
		{name: "summarization: both sides, smaller top and longer window",
			req:   reqWith(func(s *SSA) { s.Policy = &Policy{Summarization: &Summarization{"source.ip", "source.bytes", 20, 600}} }),
			offer: offerWith(func(s *SSA) { s.Policy = &Policy{Summarization: &Summarization{"source.ip", "source.bytes", 10, 3600}} }),
			check: wantSummary(Summarization{"source.ip", "source.bytes", 10, 3600})},
		{name: "summarization: ranked differently",
			req: reqWith(func(s *SSA) { s.Policy = &Policy{Summarization: &Summarization{"source.ip", "source.bytes", 10, 3600}} }),
			offer: offerWith(func(s *SSA) {
				s.Policy = &Policy{Summarization: &Summarization{"destination.ip", RankByCount, 10, 3600}}
			}),
			conflicts: []conflict{{CodeSummarization, "policy.summarization", "top by source.ip ranked by source.bytes", "top by destination.ip ranked by count"}}},

		// Handling.
		{name: "handling: stricter TLP, shorter retention, narrower redistribution",
			req: reqWith(func(s *SSA) {
				s.Policy = &Policy{Handling: &Handling{TLP: TLPGreen, Retention: 90 * 86400, Redistribution: "organisation"}}
			}),
			offer: offerWith(func(s *SSA) {
				s.Policy = &Policy{Handling: &Handling{TLP: TLPAmber, Retention: 180 * 86400, Redistribution: "community"}}
			}),
			check: wantHandling(Handling{TLP: TLPAmber, Retention: 90 * 86400, Redistribution: "organisation"})},
		{name: "handling: a side that sets nothing",
			req:   reqWith(func(s *SSA) { s.Policy = &Policy{Handling: &Handling{Retention: 30 * 86400}} }),
			offer: offerWith(func(s *SSA) { s.Policy = &Policy{Handling: &Handling{TLP: TLPRed, Redistribution: "none"}} }),
			check: wantHandling(Handling{TLP: TLPRed, Retention: 30 * 86400, Redistribution: "none"})},
		{name: "handling: one side",
			req: reqWith(func(s *SSA) { s.Policy = &Policy{Handling: &Handling{TLP: TLPAmberStrict}} }), offer: offerWith(nil),
			check: wantHandling(Handling{TLP: TLPAmberStrict})},

		// Method.
		{name: "method: intersection in the requester's order, access the provider's",
			req: reqWith(func(s *SSA) {
				s.Method = Method{Protocols: []string{"p2", "p1", "p3"}, Security: []string{"tls", "noise"}, Access: []string{"a1", "a3"}}
			}),
			offer: offerWith(func(s *SSA) {
				s.Method = Method{Protocols: []string{"p1", "p2"}, Security: []string{"noise", "tls"}, Access: []string{"a2", "a1", "a2"}}
			}),
			check: wantMethod(Method{Protocols: []string{"p2", "p1"}, Security: []string{"tls", "noise"}, Access: []string{"a2", "a1"}})},
		{name: "method: access filled with the provider's addresses whatever the requester lists",
			req: reqWith(func(s *SSA) { s.Method = Method{Access: []string{"/ip4/192.0.2.1/tcp/1"}} }),
			offer: offerWith(func(s *SSA) {
				s.Method = Method{Access: []string{"/ip4/127.0.0.1/tcp/4001/p2p/P", "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P"}}
			}),
			check: wantMethod(Method{Access: []string{"/ip4/127.0.0.1/tcp/4001/p2p/P", "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/P"}})},
		{name: "method: no protocol and no security in common",
			req: reqWith(func(s *SSA) { s.Method = Method{Protocols: []string{"ftp"}, Security: []string{"ipsec"}} }),
			offer: offerWith(func(s *SSA) {
				s.Method = Method{Protocols: []string{"/ssanet/exchange/1.0.0"}, Security: []string{"noise", "tls"}, Access: []string{"a1"}}
			}),
			conflicts: []conflict{{CodeMethodProtocol, "method.protocols", "ftp", "/ssanet/exchange/1.0.0"},
				{CodeMethodSecurity, "method.security", "ipsec", "noise, tls"}}},
		{name: "method: a side that lists none accepts the other's",
			req: reqWith(nil), offer: offerWith(func(s *SSA) { s.Method = Method{Protocols: []string{"p1"}, Security: []string{"noise"}} }),
			check: wantMethod(Method{Protocols: []string{"p1"}, Security: []string{"noise"}})},
		{name: "method: no protocol in common",
			req: reqWith(func(s *SSA) { s.Method.Protocols = []string{"p1", "p2"} }), offer: offerWith(func(s *SSA) { s.Method.Protocols = []string{"p3"} }),
			conflicts: []conflict{{CodeMethodProtocol, "method.protocols", "p1, p2", "p3"}}},
		{name: "method: no security in common",
			req: reqWith(func(s *SSA) { s.Method.Security = []string{"tls"} }), offer: offerWith(func(s *SSA) { s.Method.Security = []string{"noise"} }),
			conflicts: []conflict{{CodeMethodSecurity, "method.security", "tls", "noise"}}},

		// Schedule.
		{name: "schedule: the intersection",
			req:   reqWith(func(s *SSA) { s.Schedule = Schedule{Start: now0, End: now0 + 30*day} }),
			offer: offerWith(func(s *SSA) { s.Schedule = Schedule{Start: now0 + day, End: now0 + 60*day} }),
			check: wantSchedule(Schedule{Start: now0 + day, End: now0 + 30*day})},
		{name: "schedule: open ends",
			req:   reqWith(func(s *SSA) { s.Schedule = Schedule{End: now0 + 30*day} }),
			offer: offerWith(func(s *SSA) { s.Schedule = Schedule{Start: now0 - day} }),
			check: wantSchedule(Schedule{Start: now0 - day, End: now0 + 30*day})},
		{name: "schedule: no overlap",
			req:       reqWith(func(s *SSA) { s.Schedule = Schedule{Start: now0, End: now0 + day} }),
			offer:     offerWith(func(s *SSA) { s.Schedule = Schedule{Start: now0 + 2*day} }),
			conflicts: []conflict{{CodeSchedule, "schedule", "2026-11-23T12:00:00Z to 2026-11-24T12:00:00Z", "2026-11-25T12:00:00Z to open end"}}},
		{name: "schedule: already over",
			req:       reqWith(func(s *SSA) { s.Schedule = Schedule{Start: now0 - 2*day, End: now0 - day} }),
			offer:     offerWith(nil),
			conflicts: []conflict{{CodeSchedule, "schedule", "2026-11-21T12:00:00Z to 2026-11-22T12:00:00Z", "always to open end"}}},
		{name: "schedule: ends right now",
			req: reqWith(nil), offer: offerWith(func(s *SSA) { s.Schedule = Schedule{End: now0} }),
			conflicts: []conflict{{CodeSchedule, "schedule", "always to open end", "always to 2026-11-23T12:00:00Z"}}},

		// Other components.
		{name: "other: the union",
			req:   reqWith(func(s *SSA) { s.Other = Extensions{"a": []byte{0x01}, "b": []byte{0x02}} }),
			offer: offerWith(func(s *SSA) { s.Other = Extensions{"b": []byte{0x02}, "c": []byte{0x03}} }),
			check: func(p *SSA) error {
				if len(p.Other) != 3 || !bytes.Equal(p.Other["c"], []byte{0x03}) {
					return fmt.Errorf("other %v", p.Other)
				}
				return nil
			}},
		{name: "other: one name, two values",
			req:       reqWith(func(s *SSA) { s.Other = Extensions{"ticket": []byte{0x01}} }),
			offer:     offerWith(func(s *SSA) { s.Other = Extensions{"ticket": []byte{0x02}} }),
			conflicts: []conflict{{CodeUnspecified, "other.ticket", "", ""}}},

		// Several at once.
		{name: "every conflict is listed",
			req: reqWith(func(s *SSA) {
				s.Information = []Information{{Type: TypeIncident, Format: FormatIODEF}}
				s.Method.Protocols = []string{"p1"}
				s.Policy = &Policy{Masking: []MaskRule{method(MaskNone)}}
			}),
			offer: offerWith(func(s *SSA) {
				s.Method.Protocols = []string{"p2"}
				s.Policy = &Policy{Masking: []MaskRule{method(MaskRemove)}}
			}),
			conflicts: []conflict{
				{CodeInformation, "information", "incident/iodef", "blacklist/iodef"},
				{CodeMasking, "policy.masking", "public-ip unmasked", "public-ip remove"},
				{CodeMethodProtocol, "method.protocols", "p1", "p2"},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range []*SSA{tc.req, &tc.offer.Terms} {
				if err := s.Validate(); err != nil {
					t.Fatalf("the case itself is invalid: %v", err)
				}
			}
			p, conflicts := Meet(tc.req, tc.offer, now0)
			if tc.conflicts != nil {
				if p != nil {
					t.Fatalf("a proposal, want conflicts %v", tc.conflicts)
				}
				if len(conflicts) != len(tc.conflicts) {
					t.Fatalf("conflicts %v", conflicts)
				}
				for i, want := range tc.conflicts {
					got := conflicts[i]
					if got.Code != want.code || got.Component != want.component || got.Requester != want.requester || got.Provider != want.provider || got.Text == "" {
						t.Errorf("conflict %d: %+v, want %+v", i, got, want)
					}
				}
				return
			}
			if conflicts != nil {
				t.Fatalf("conflicts %v", conflicts)
			}
			if err := tc.check(p); err != nil {
				t.Fatal(err)
			}
			checkProposal(t, p, tc.req, tc.offer, now0)
		})
	}
}

func wantMasking(rules ...MaskRule) func(p *SSA) error {
	return func(p *SSA) error {
		if p.Policy == nil || !slices.EqualFunc(p.Policy.Masking, rules, func(a, b MaskRule) bool {
			return a.Target() == b.Target() && a.Method == b.Method && a.Bits == b.Bits && a.MaxBits == b.MaxBits && a.KeyID == b.KeyID
		}) {
			return fmt.Errorf("masking %+v, want %+v", p.Policy, rules)
		}
		return nil
	}
}

func wantSummary(s Summarization) func(p *SSA) error {
	return func(p *SSA) error {
		if p.Policy == nil || p.Policy.Summarization == nil || *p.Policy.Summarization != s {
			return fmt.Errorf("summarization %+v, want %+v", p.Policy, s)
		}
		return nil
	}
}

func wantHandling(h Handling) func(p *SSA) error {
	return func(p *SSA) error {
		if p.Policy == nil || p.Policy.Handling == nil || *p.Policy.Handling != h {
			return fmt.Errorf("handling %+v, want %+v", p.Policy, h)
		}
		return nil
	}
}

func wantMethod(m Method) func(p *SSA) error {
	return func(p *SSA) error {
		if !slices.Equal(p.Method.Protocols, m.Protocols) || !slices.Equal(p.Method.Security, m.Security) || !slices.Equal(p.Method.Access, m.Access) {
			return fmt.Errorf("method %+v, want %+v", p.Method, m)
		}
		return nil
	}
}

func wantSchedule(s Schedule) func(p *SSA) error {
	return func(p *SSA) error {
		if p.Schedule != s {
			return fmt.Errorf("schedule %s, want %s", describeSchedule(p.Schedule), describeSchedule(s))
		}
		return nil
	}
}

// checkProposal checks what every proposal of the meet must be.
func checkProposal(t *testing.T, p, req *SSA, offer *Offer, now Time) {
	t.Helper()
	if err := proposalErr(p, req, offer, now); err != nil {
		t.Fatal(err)
	}
}

func proposalErr(p, req *SSA, offer *Offer, now Time) error {
	if rs := Satisfies(p, req); len(rs) > 0 {
		return fmt.Errorf("the proposal fails the request: %v", rs)
	}
	if rs := Satisfies(p, &offer.Terms); len(rs) > 0 {
		return fmt.Errorf("the proposal fails the offer: %v", rs)
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("the proposal is invalid: %v", err)
	}
	if p.Status != StatusProposal || p.ID != req.ID || p.Participants.Requester != req.Participants.Requester ||
		p.Participants.Provider != offer.Terms.Participants.Provider || p.Expires != now+Time(offer.Validity()) {
		return fmt.Errorf("proposal header: %s %s %+v expires %s", p.ID, p.Status, p.Participants, p.Expires)
	}
	for _, r := range policyOf(p).Masking {
		if r.MaxBits != 0 || r.Method == MaskNone {
			return fmt.Errorf("the proposal carries a tolerance: %+v", r)
		}
		if r.KeyID != "" && !slices.ContainsFunc(policyOf(&offer.Terms).Masking, func(o MaskRule) bool { return o.Target() == r.Target() && o.KeyID == r.KeyID }) {
			return fmt.Errorf("the proposal carries a key the offer does not set for its target: %+v", r)
		}
	}
	return nil
}

func policyOf(s *SSA) *Policy {
	if s.Policy == nil {
		return &Policy{}
	}
	return s.Policy
}

// gen makes random templates that pass Validate, from small pools so that the two sides
// often agree and often do not.
type gen struct{ r *rand.Rand }

func (g gen) pick(pool ...string) string { return pool[g.r.IntN(len(pool))] }

func (g gen) subset(pool ...string) []string {
	var out []string
	for _, x := range pool {
		if g.r.IntN(2) == 0 {
			out = append(out, x)
		}
	}
	g.r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (g gen) maybe() bool { return g.r.IntN(2) == 0 }

func (g gen) ssa(now Time) *SSA {
	s := &SSA{ID: "ssa-random"}
	for range 1 + g.r.IntN(3) {
		s.Information = append(s.Information, Information{Type: g.pick(TypeBlacklist, TypeIncident, TypeAttackDetectionLog), Format: g.pick(FormatIODEF, FormatEVE, FormatIDMEFv2)})
	}
	if g.maybe() {
		p := &Policy{}
		for range g.r.IntN(4) {
			m := MaskRule{Scope: g.pick(ScopePublicIP, ScopeAllIP, ScopeFields), Method: g.pick(MaskNone, MaskTruncate, MaskCryptoPAn, MaskHMAC, MaskRemove)}
			if m.Scope == ScopeFields {
				m.Fields = g.subset("user.name", "host.name", "url.full")
				if len(m.Fields) == 0 {
					m.Fields = []string{"user.name"}
				}
			}
			if m.Method == MaskTruncate {
				m.Bits = uint8(1 + g.r.IntN(32))
			}
			if g.r.IntN(3) == 0 {
				m.MaxBits = uint8(1 + g.r.IntN(32))
			}
			if (m.Method == MaskHMAC || m.Method == MaskCryptoPAn) && g.maybe() {
				m.KeyID = g.pick("key-0", "key-a")
			}
			p.Masking = append(p.Masking, m)
		}
		for _, e := range g.subset(`r["source.ip"] == "1.1.1.1"`, `r["event.severity"] > 2`, `true`) {
			p.Filtering = append(p.Filtering, Filter{e})
		}
		if g.maybe() {
			p.Summarization = &Summarization{GroupBy: g.pick("source.ip", "destination.ip"), RankBy: g.pick(RankByCount, "source.bytes"),
				TopN: uint32(1 + g.r.IntN(20)), Window: Duration(60 * (1 + g.r.IntN(120)))}
		}
		if g.maybe() {
			p.Handling = &Handling{TLP: g.pick(append([]string{""}, TLPLevels...)...), Redistribution: g.pick(append([]string{""}, RedistributionLevels...)...)}
			if g.maybe() {
				p.Handling.Retention = Duration(86400 * (1 + g.r.IntN(365)))
			}
		}
		s.Policy = p
	}
	s.Method = Method{Protocols: g.subset("/ssanet/exchange/1.0.0", "syslog-tls", "taxii"), Security: g.subset("noise", "tls"), Access: g.subset("a1", "a2")}
	day := Time(86400)
	if g.maybe() {
		s.Schedule.Start = now + day*Time(g.r.IntN(60)-30)
	}
	if g.maybe() {
		s.Schedule.End = now + day*Time(g.r.IntN(400)-20)
		if s.Schedule.Start != 0 && s.Schedule.End <= s.Schedule.Start {
			s.Schedule.End = s.Schedule.Start + day
		}
	}
	for _, k := range g.subset("ticket", "contract", "region") {
		if s.Other == nil {
			s.Other = Extensions{}
		}
		s.Other[k] = []byte{byte(g.r.IntN(2))} // the CBOR integers 0 and 1
	}
	return s
}

// TestMeetProperty meets many random requests and offers: a proposal always satisfies both
// sides, and every conflict names its code or its component.
func TestMeetProperty(t *testing.T) {
	const runs = 20000
	g := gen{rand.New(rand.NewPCG(20261123, 1))}
	proposals := 0
	codes := map[Code]int{}
	for i := range runs {
		req := g.ssa(now0)
		req.Status = StatusProposal // as every request is: Satisfies reads it
		offer := &Offer{ID: "random", ProposalValidity: Duration(60 * g.r.IntN(120)), Terms: *g.ssa(now0)}
		for _, err := range []error{req.Validate(), offer.Validate()} {
			if err != nil {
				t.Fatalf("run %d: the generator made an invalid template: %v", i, err)
			}
		}
		p, conflicts := Meet(req, offer, now0)
		if (p == nil) == (conflicts == nil) {
			t.Fatalf("run %d: proposal %v and conflicts %v", i, p != nil, conflicts)
		}
		if p != nil {
			proposals++
			if err := proposalErr(p, req, offer, now0); err != nil {
				y1, _ := req.YAML()
				y2, _ := offer.Terms.YAML()
				t.Fatalf("run %d: %v\nrequest:\n%s\noffer:\n%s", i, err, y1, y2)
			}
			again, _ := Meet(req, offer, now0)
			a, _ := p.Encode()
			b, _ := again.Encode()
			if !bytes.Equal(a, b) {
				t.Fatalf("run %d: the meet is not deterministic", i)
			}
			continue
		}
		for _, c := range conflicts {
			if c.Code == CodeUnspecified && c.Component == "" {
				t.Fatalf("run %d: a conflict with neither code nor component: %+v", i, c)
			}
			codes[c.Code]++
		}
	}
	t.Logf("%d runs: %d proposals, conflicts by code %v", runs, proposals, codes)
	if proposals < runs/20 || len(codes) < 7 {
		t.Fatalf("the generator is too one-sided: %d proposals, conflict codes %v", proposals, codes)
	}
}

// TestExamplesMeet: the example templates fit each other today and in five years: they are
// written with relative times and never go stale.
func TestExamplesMeet(t *testing.T) {
	for _, now := range []time.Time{t0, t0.AddDate(5, 0, 0)} {
		t.Run(now.Format(time.DateOnly), func(t *testing.T) {
			req, offer := exampleRequest(t, now), exampleOffer(t, now)
			p, conflicts := Meet(req, offer, FromTime(now))
			if conflicts != nil {
				t.Fatalf("conflicts: %v", conflicts)
			}
			checkProposal(t, p, req, offer, FromTime(now))
			if !p.Schedule.Contains(FromTime(now)) || p.Policy.Handling.TLP != TLPAmber || p.Policy.Masking[0].Bits != 8 {
				t.Fatalf("proposal %s, TLP %s", describeSchedule(p.Schedule), p.Policy.Handling.TLP)
			}
		})
	}
}

// TestSatisfiesMaskingKeys: checked against an offer's terms, a cryptopan or hmac rule may
// carry only a key that the offer sets for the same target; checked against a request, keys
// are the provider's business.
func TestSatisfiesMaskingKeys(t *testing.T) {
	offerKey := "offer-key"
	offerTruncates := offerWith(masking(truncate(8, 0))).Terms
	offerKeys := offerWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: offerKey})).Terms
	cases := []struct {
		name     string
		template *SSA
		rules    []MaskRule // the proposal's masking
		conflict bool
	}{
		{"offer: cryptopan under the requester's key instead of truncation", &offerTruncates,
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: requesterKey}}, true},
		{"offer: hmac under the requester's key on a target the offer leaves alone", &offerTruncates,
			[]MaskRule{{Scope: ScopeAllIP, Method: MaskHMAC, KeyID: requesterKey}, truncate(8, 0)}, true},
		{"offer: the offer's key on another target", &offerKeys,
			[]MaskRule{{Scope: ScopeAllIP, Method: MaskHMAC, KeyID: offerKey}, {Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: offerKey}}, true},
		{"offer: another key on the offer's target", &offerKeys,
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: requesterKey}}, true},
		{"offer: the offer's key on its target, with a stronger method", &offerKeys,
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskHMAC, KeyID: offerKey}}, false},
		{"offer: no key, the provider's secret applies", &offerTruncates,
			[]MaskRule{{Scope: ScopeAllIP, Method: MaskHMAC}, {Scope: ScopePublicIP, Method: MaskCryptoPAn}}, false},
		{"request: a key the provider chose", reqWith(masking(truncate(8, 0))),
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: offerKey}}, false},
		{"request: its own key left out", reqWith(masking(MaskRule{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: requesterKey})),
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskCryptoPAn}}, false},
		{"a template without status is held to the provider's rule", reqWith(func(s *SSA) { s.Status = 0 }),
			[]MaskRule{{Scope: ScopePublicIP, Method: MaskCryptoPAn, KeyID: offerKey}}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := reqWith(masking(tc.rules...))
			if err := p.Validate(); err != nil {
				t.Fatalf("the case itself is invalid: %v", err)
			}
			rs := Satisfies(p, tc.template)
			if !tc.conflict {
				if len(rs) > 0 {
					t.Fatalf("conflicts %v", rs)
				}
				return
			}
			if len(rs) != 1 || rs[0].Code != CodeMasking || rs[0].Component != "policy.masking" || !strings.Contains(rs[0].Text, "only the provider chooses masking keys") {
				t.Fatalf("conflicts %v, want one masking conflict about the key", rs)
			}
		})
	}
}
