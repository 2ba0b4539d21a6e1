package agent

import (
	"errors"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// TestVerdict walks the verdict over the requester's side: quarantined records violate the
// SSA; a sink that is stopped, set records of the SSA aside, refuses records while some wait, or lags past sinkLagRecords
// for longer than sinkLagFor degrades it, named; a sink the SSA forbids is no part of it.
func TestVerdict(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	const id = "ssa-1"
	sink := func(lag uint64, caughtUp time.Duration, failing bool) SinkState {
		s := SinkState{Name: "siem", Type: "syslog", SSAs: map[string]SinkSSA{id: {Position: 7, Lag: lag, CaughtUp: now.Add(-caughtUp)}}}
		if failing {
			s.FailingSince, s.Errors, s.LastError = now.Add(-time.Minute), 60, "connection refused"
		}
		return s
	}
	forbidden := SinkState{Name: "public", Type: "jsonl", SSAs: map[string]SinkSSA{}, Forbidden: []string{id},
		FailingSince: now, Errors: 3, LastError: "disk full"}
	stopped := SinkState{Name: "broken", Type: "jsonl", SSAs: map[string]SinkSSA{id: {}}, Stopped: "its progress file is unreadable"}
	ok := &protocol.Report{SSAID: id}
	aside := SinkState{Name: "hook", Type: "webhook", SSAs: map[string]SinkSSA{id: {Position: 7, CaughtUp: now,
		Records: SinkRecords{Forwarded: 10, Confirmed: 6, SetAside: 4}}}}
	asideElsewhere := SinkState{Name: "hook", Type: "webhook", SSAs: map[string]SinkSSA{id: {Position: 7, CaughtUp: now}},
		Records: SinkRecords{Forwarded: 10, Confirmed: 6, SetAside: 4}} // another SSA's records
	for _, tc := range []struct {
		name       string
		violations uint64
		provider   *protocol.Report
		sinks      []SinkState
		want       Verdict
		reasons    []string // each a substring of one reason, in order
	}{
		{"all well", 0, ok, []SinkState{sink(0, time.Hour, false)}, VerdictFulfilled, nil},
		{"no sinks", 0, ok, nil, VerdictFulfilled, nil},
		{"quarantined records", 3, ok, nil, VerdictViolated, []string{"3 delivered records break the SSP and are quarantined"}},
		{"sink failing, records wait", 0, ok, []SinkState{sink(10, time.Hour, true)}, VerdictDegraded,
			[]string{"sink siem is failing since 2026-12-06T11:59:00Z, 10 records wait for it (60 errors); last error: connection refused"}},
		{"sink failing, nothing waits", 0, ok, []SinkState{sink(0, 0, true)}, VerdictFulfilled, nil},
		{"sink stopped", 0, ok, []SinkState{stopped}, VerdictDegraded, []string{"sink broken forwards nothing: its progress file is unreadable"}},
		{"sink lags too long", 0, ok, []SinkState{sink(sinkLagRecords+1, sinkLagFor+time.Second, false)}, VerdictDegraded,
			[]string{"sink siem lags: " + strconv.Itoa(sinkLagRecords+1) + " records wait"}},
		{"sink lags briefly", 0, ok, []SinkState{sink(sinkLagRecords+1, sinkLagFor-time.Second, false)}, VerdictFulfilled, nil},
		{"sink a little behind for long", 0, ok, []SinkState{sink(sinkLagRecords, time.Hour, false)}, VerdictFulfilled, nil},
		{"sink the SSA forbids, failing", 0, ok, []SinkState{forbidden}, VerdictFulfilled, nil},
		{"quarantined and a sink failing", 2, ok, []SinkState{sink(5, 0, true), forbidden}, VerdictViolated,
			[]string{"2 delivered records break", "sink siem is failing"}},
		{"webhook set records aside", 0, ok, []SinkState{aside}, VerdictDegraded,
			[]string{"sink hook set aside 4 records its receiver refused since the agent started: kept in HOME/sinks/hook.poison, not delivered"}},
		{"webhook set another SSA's records aside", 0, ok, []SinkState{asideElsewhere}, VerdictFulfilled, nil},
		{"sink failing, no report", 0, nil, []SinkState{sink(5, 0, true)}, VerdictDegraded,
			[]string{"sink siem is failing", "no fulfilment report"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			as := &Assessment{SSAID: id, Phase: PhaseExecution, Time: now, Provider: tc.provider, Sinks: tc.sinks,
				Local: InboxView{Last: 100, Stored: 100, Violations: tc.violations}}
			v, reasons := verdict(nil, as, nil)
			if v != tc.want || len(reasons) != len(tc.reasons) {
				t.Fatalf("verdict %s, reasons %q; want %s with %d reasons", v, reasons, tc.want, len(tc.reasons))
			}
			for i, want := range tc.reasons {
				if !strings.Contains(reasons[i], want) {
					t.Errorf("reason %d: %q, want it to say %q", i, reasons[i], want)
				}
			}
		})
	}
}

// TestSinkFailuresLogged: a sink retried every second for 15 minutes (937 warnings once) logs
// one line when it starts failing, at most one a minute after that with the count since the
// last line, and one when it recovers; a second outage is logged afresh.
func TestSinkFailuresLogged(t *testing.T) {
	var logged syncBuffer
	clock := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f := &forwarder{log: slog.New(slog.NewTextHandler(&logged, nil)), cfg: SinkConfig{Name: "siem"},
		now: func() time.Time { return clock }}
	const retries = 900 // 15 minutes, one a second
	for range retries {
		f.failed(errors.New("dial tcp 127.0.0.1:6514: connect: connection refused"))
		clock = clock.Add(time.Second)
	}
	if st := f.state(nil); st.Errors != retries || st.FailingSince.IsZero() || !strings.Contains(st.LastError, "refused") {
		t.Fatalf("state after %d failures: %+v", retries, st)
	}
	f.succeeded()
	if st := f.state(nil); !st.FailingSince.IsZero() || !st.LastSuccess.Equal(clock) || st.Errors != retries {
		t.Fatalf("state after recovery: %+v", st)
	}
	first, again, back := logged.count("sink failing"), logged.count("sink still failing"), logged.count("sink recovered")
	if first != 1 || again < 14 || again > 15 || back != 1 {
		t.Fatalf("logged %d 'failing', %d 'still failing', %d 'recovered' for %d retries in 15 minutes; want 1, at most 15, 1:\n%s",
			first, again, back, retries, logged.b.String())
	}
	total := 1 // the first line
	for _, m := range regexp.MustCompile(`still failing.* failures=(\d+)`).FindAllStringSubmatch(logged.b.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	if total > retries || total < retries-60 {
		t.Errorf("the lines count %d failures of %d (all but those of the last minute)", total, retries)
	}
	if !strings.Contains(logged.b.String(), "failures="+strconv.Itoa(retries)+" down=15m0s") {
		t.Errorf("the recovery line does not say how many failures and how long:\n%s", logged.b.String())
	}
	f.failed(errors.New("connection reset"))
	if logged.count("sink failing") != 2 {
		t.Errorf("a second outage is not logged")
	}
}
