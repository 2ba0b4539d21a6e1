package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestStatusSnapshot: with an SSA in force and records flowing from a provider to a
// requester that forwards them to a sink, each side's snapshot shows the other as a connected
// peer, the agreement with its role, state and phase (and, on the requester, the verdict),
// the flow of records in and out with a rate, and the sink's position.
func TestStatusSnapshot(t *testing.T) {
	prov := newTestAgent(t, "provider", nil)
	sinkPath := filepath.Join(t.TempDir(), "out.jsonl")
	req := newTestAgent(t, "requester", func(c *Config) {
		c.Sinks = []SinkConfig{{Type: "jsonl", Path: sinkPath}}
	})
	addOffer(t, prov, nil)
	tmpl := requestTemplate(t)
	tmpl.Policy.Filtering = nil
	tmpl.Schedule.Start = protocol.FromTime(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC))
	rec, err := req.Request(context.Background(), addrInfo(prov), tmpl)
	if err != nil || rec.State != protocol.StateApproved {
		t.Fatalf("negotiation: %+v, %v", rec, err)
	}
	id := rec.SSAID
	waitState(t, prov, id, protocol.StateApproved)

	// Both meters count the SSA before any record flows, so that the records make a rate.
	for _, a := range []*Agent{prov, req} {
		waitFor(t, 10*time.Second, func() (bool, string) {
			fs, _ := a.status.flows()
			return slices.ContainsFunc(fs, func(f Flow) bool { return f.SSAID == id }), fmt.Sprintf("flows %+v lack %s", fs, id)
		})
	}
	st, err := prov.Ingest(context.Background(), protocol.FormatEVE, bytes.NewReader(sampleEVE(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(st.Queued[id])
	waitRecords(t, req, id, n)

	for _, tc := range []struct {
		name    string
		a       *Agent
		other   *Agent
		role    string
		in, out uint64
		verdict Verdict
		sinks   int
	}{
		{"provider", prov, req, "provider", uint64(st.Records), n, "", 0},
		{"requester", req, prov, "requester", n, n, VerdictFulfilled, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Status
			waitFor(t, 20*time.Second, func() (bool, string) {
				var err error
				if s, err = tc.a.Status(); err != nil {
					return false, err.Error()
				}
				f := flowOf(s, id)
				ag := statusAgreement(s, id)
				return f.In == tc.in && f.Out == tc.out && f.InRate > 0 && f.OutRate > 0 && ag.Verdict == tc.verdict,
					fmt.Sprintf("status %+v: want flow in %d, out %d, both rates > 0, verdict %q", s, tc.in, tc.out, tc.verdict)
			})
			if s.Peer != tc.a.ID().String() || s.Time.IsZero() || s.WindowSeconds <= 0 {
				t.Errorf("status of %s at %v over %v s", s.Peer, s.Time, s.WindowSeconds)
			}
			ag := statusAgreement(s, id)
			want := AgreementStatus{SSAID: id, Peer: tc.other.ID().String(), Role: tc.role, State: "approved",
				Phase: PhaseExecution, Verdict: tc.verdict, AssessedAt: ag.AssessedAt}
			if ag.Reasons != nil || ag.AssessError != "" || (tc.verdict != "") == ag.AssessedAt.IsZero() ||
				fmt.Sprint(ag) != fmt.Sprint(want) || len(s.Agreements) != 1 || s.Ended != 0 {
				t.Errorf("agreements %+v (%d ended), want %+v", s.Agreements, s.Ended, want)
			}
			if f := flowOf(s, id); f.Role != tc.role || len(s.Flows) != 1 {
				t.Errorf("flows %+v, want one of role %s", s.Flows, tc.role)
			}
			if len(s.Peers) != 1 || s.Peers[0].Peer != tc.other.ID().String() || !s.Peers[0].Connected || len(s.Peers[0].Addrs) == 0 {
				t.Errorf("peers %+v, want %s connected with its addresses", s.Peers, tc.other.ID())
			}
			if len(s.Sinks) != tc.sinks {
				t.Fatalf("sinks %+v, want %d", s.Sinks, tc.sinks)
			}
			if tc.sinks > 0 {
				if p := s.Sinks[0].SSAs[id]; s.Sinks[0].Name != "jsonl" || p.Position != n || p.Lag != 0 {
					t.Errorf("sink %+v, want jsonl at record %d", s.Sinks[0], n)
				}
			}
		})
	}
}

func flowOf(s *Status, id string) Flow {
	for _, f := range s.Flows {
		if f.SSAID == id {
			return f
		}
	}
	return Flow{}
}

func statusAgreement(s *Status, id string) AgreementStatus {
	for _, a := range s.Agreements {
		if a.SSAID == id {
			return a
		}
	}
	return AgreementStatus{}
}

// TestStatusEnded: a negotiation that is over is counted, not listed, and has no flow.
func TestStatusEnded(t *testing.T) {
	prov, req, rec := agreedPair(t, requestTemplate(t))
	if _, err := req.Cancel(context.Background(), rec.SSAID); err != nil {
		t.Fatal(err)
	}
	waitState(t, req, rec.SSAID, protocol.StateAnnulled)
	waitState(t, prov, rec.SSAID, protocol.StateAnnulled)
	for _, a := range []*Agent{prov, req} {
		waitFor(t, 10*time.Second, func() (bool, string) {
			s, err := a.Status()
			return err == nil && len(s.Agreements) == 0 && s.Ended == 1 && len(s.Flows) == 0,
				fmt.Sprintf("status %+v, %v: want no agreement listed, 1 ended, no flow", s, err)
		})
	}
}

// statusClock is a clock a test moves by hand.
type statusClock struct{ t time.Time }

func (c *statusClock) now() time.Time { return c.t }

// TestFlowRates: the rates are the change of the counts over the samples kept (FlowWindow
// and the one before it), per SSA from its first sample; a count that went down is no flow.
func TestFlowRates(t *testing.T) {
	prov := func(in, out uint64) flowCount { return flowCount{role: protocol.RoleProvider, in: in, out: out} }
	req := func(in, out uint64) flowCount { return flowCount{role: protocol.RoleRequester, in: in, out: out} }
	for _, tc := range []struct {
		name    string
		samples []flowStep
		want    []Flow
		window  float64
	}{
		{"none", nil, []Flow{}, 0},
		{"one sample: totals, no rate", []flowStep{{0, map[string]flowCount{"a": prov(5, 3)}}},
			[]Flow{{SSAID: "a", Role: "provider", In: 5, Out: 3}}, 0},
		{"two seconds", []flowStep{{0, map[string]flowCount{"a": prov(5, 3)}}, {time.Second, map[string]flowCount{"a": prov(15, 7)}},
			{time.Second, map[string]flowCount{"a": prov(25, 13)}}},
			[]Flow{{SSAID: "a", Role: "provider", In: 25, Out: 13, InRate: 10, OutRate: 5}}, 2},
		{"window slides", append(flowSteps(12, time.Second, func(i int) map[string]flowCount {
			return map[string]flowCount{"a": req(uint64(i*i), 0)} // 0, 1, 4, …, 121
		}), flowStep{time.Second, map[string]flowCount{"a": req(144, 0)}}),
			// Kept: the samples of seconds 2…12 (counts 4 … 144): 140 records in 10 s.
			[]Flow{{SSAID: "a", Role: "requester", In: 144, InRate: 14}}, 10},
		{"new SSA from its first sample; gone SSA not listed", []flowStep{
			{0, map[string]flowCount{"old": prov(1, 1)}},
			{time.Second, map[string]flowCount{"old": prov(2, 2), "b": req(10, 0)}},
			{4 * time.Second, map[string]flowCount{"b": req(30, 8)}}},
			[]Flow{{SSAID: "b", Role: "requester", In: 30, Out: 8, InRate: 5, OutRate: 2}}, 5},
		{"count down is no flow", []flowStep{{0, map[string]flowCount{"a": req(10, 50)}}, {2 * time.Second, map[string]flowCount{"a": req(20, 4)}}},
			[]Flow{{SSAID: "a", Role: "requester", In: 20, Out: 4, InRate: 5}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &statusClock{t: time.Unix(1_800_000_000, 0)}
			var next map[string]flowCount
			k := &statusKeeper{count: func() (map[string]flowCount, error) { return next, nil }, now: clock.now,
				log: discardLogger(), verdicts: map[string]verdictEntry{}}
			for _, s := range tc.samples {
				clock.t = clock.t.Add(s.after)
				next = s.counts
				k.sampleFlows()
			}
			got, window := k.flows()
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || window != tc.window {
				t.Errorf("flows %+v over %v s, want %+v over %v s", got, window, tc.want, tc.window)
			}
		})
	}
}

// flowStep is one sample of TestFlowRates: its counts, after the previous one.
type flowStep struct {
	after  time.Duration
	counts map[string]flowCount
}

// flowSteps is n samples after apart, the counts of sample i made by counts(i).
func flowSteps(n int, after time.Duration, counts func(i int) map[string]flowCount) []flowStep {
	out := make([]flowStep, n)
	for i := range out {
		out[i] = flowStep{after, counts(i)}
	}
	out[0].after = 0
	return out
}

// TestFlowCountError: a sample that cannot be counted is left out; the samples kept stay.
func TestFlowCountError(t *testing.T) {
	clock := &statusClock{t: time.Unix(1_800_000_000, 0)}
	var err error
	k := &statusKeeper{count: func() (map[string]flowCount, error) {
		return map[string]flowCount{"a": {role: protocol.RoleProvider, in: uint64(clock.t.Unix() % 100)}}, err
	}, now: clock.now, log: discardLogger()}
	k.sampleFlows()
	clock.t = clock.t.Add(2 * time.Second)
	err = errors.New("store closed")
	k.sampleFlows()
	if got, _ := k.flows(); len(got) != 1 || got[0].In != 0 || len(k.samples) != 1 {
		t.Errorf("flows %+v from %d samples, want the first sample's alone", got, len(k.samples))
	}
}

// TestRefreshVerdicts: each requested SSA in force is assessed at once, again only after
// verdictEvery, an assessment's error is kept as such, and an SSA no longer in force is
// forgotten.
func TestRefreshVerdicts(t *testing.T) {
	clock := &statusClock{t: time.Unix(1_800_000_000, 0)}
	ids := []string{"a", "b"}
	calls := map[string]int{}
	k := &statusKeeper{now: clock.now, log: discardLogger(), verdicts: map[string]verdictEntry{},
		requested: func() []string { return ids },
		assess: func(_ context.Context, id string) (*Assessment, error) {
			calls[id]++
			if id == "b" {
				return nil, errors.New("provider unreachable")
			}
			return &Assessment{Verdict: VerdictDegraded, Reasons: []string{fmt.Sprint("call ", calls[id])}}, nil
		}}
	ctx := context.Background()
	check := func(step string, wantCalls map[string]int, want map[string]verdictEntry) {
		t.Helper()
		if fmt.Sprint(calls) != fmt.Sprint(wantCalls) || fmt.Sprint(k.verdicts) != fmt.Sprint(want) {
			t.Errorf("%s: calls %v, verdicts %+v; want %v, %+v", step, calls, k.verdicts, wantCalls, want)
		}
	}
	t0 := clock.t
	k.refreshVerdicts(ctx)
	check("first", map[string]int{"a": 1, "b": 1}, map[string]verdictEntry{
		"a": {Verdict: VerdictDegraded, Reasons: []string{"call 1"}, At: t0}, "b": {At: t0, Err: "provider unreachable"}})
	clock.t = t0.Add(verdictEvery - time.Millisecond)
	k.refreshVerdicts(ctx)
	check("within verdictEvery", map[string]int{"a": 1, "b": 1}, map[string]verdictEntry{
		"a": {Verdict: VerdictDegraded, Reasons: []string{"call 1"}, At: t0}, "b": {At: t0, Err: "provider unreachable"}})
	clock.t = t0.Add(verdictEvery)
	ids = []string{"a", "c"}
	k.refreshVerdicts(ctx)
	check("after verdictEvery, b gone, c new", map[string]int{"a": 2, "b": 1, "c": 1}, map[string]verdictEntry{
		"a": {Verdict: VerdictDegraded, Reasons: []string{"call 2"}, At: clock.t},
		"c": {Verdict: VerdictDegraded, Reasons: []string{"call 1"}, At: clock.t}})
	if v, ok := k.verdict("b"); ok {
		t.Errorf("verdict of b, no longer in force: %+v", v)
	}
}

// TestStatusWatched: the verdicts are refreshed only while the status was read within
// statusWatch; never read, nobody looks.
func TestStatusWatched(t *testing.T) {
	clock := &statusClock{t: time.Unix(1_800_000_000, 0)}
	k := &statusKeeper{now: clock.now}
	if k.watched() {
		t.Fatal("watched before any read")
	}
	k.read()
	clock.t = clock.t.Add(statusWatch - time.Millisecond)
	if !k.watched() {
		t.Fatal("not watched within statusWatch of a read")
	}
	clock.t = clock.t.Add(time.Millisecond)
	if k.watched() {
		t.Fatal("watched statusWatch after the last read")
	}
}
