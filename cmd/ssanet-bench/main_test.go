//go:build linux

package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole bench briefly: the in-process measures on a few records, and two
// real agents (built from ./cmd/ssanet), first with a few thousand records written as fast
// as the provider takes them, then under a slow stream for a few seconds with a retention
// short enough to delete records. Every row is printed, and in each phase the requester
// received the records the provider shared.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ssanet and runs two agents")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"--records", "300", "--rounds", "1", "--saturated", "3000", "--rate", "400", "--duration", "5s",
		"--retention", "2s", "--retention-check", "1s"}, &out, &errb)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, row := range []string{"EVE enforcement", "requester's verify", "end to end CPU per record, saturated",
		"records/s, saturated", "RSS, saturated", "CPU per record under the paced stream", "RSS provider",
		"RSS requester", "disk per million records", "disk of the provider", "requester's disk after retention deletes"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("no row %q", row)
		}
	}
	// Each phase says how loaded the machine was.
	if n := len(regexp.MustCompile(`load average \d`).FindAllString(out.String(), -1)); n != 2 {
		t.Errorf("%d load averages printed, want one a phase", n)
	}
	for _, c := range []struct {
		phase    string
		min, max int
	}{{"saturated", 3000, 3000}, {"paced", 1500, 2100}} {
		m := regexp.MustCompile(`(?m)^` + c.phase + `: .* (\d+) records sent, (\d+) received`).FindStringSubmatch(out.String())
		if m == nil {
			t.Errorf("%s: no count of the records sent and received", c.phase)
			continue
		}
		sent, _ := strconv.Atoi(m[1])
		got, _ := strconv.Atoi(m[2])
		// One sample record in 16 is a stats event, which the SSA's filter leaves out.
		if sent < c.min || sent > c.max || got != sent-(sent+15)/16 && got != sent-sent/16 {
			t.Errorf("%s: %d records sent, %d received: want %d to %d sent, all but the stats ones received", c.phase, sent, got, c.min, c.max)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--profile", "tiny"}, {"--rate", "0"}, {"extra"}, {"--retention", "10ms"}, {"--saturated", "-1"}, {"--no-such-flag"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestLimitScannerMatchesEnforcer: the yardstick gives the enforcer's bytes, record by
// record, on every sample (measureEnforce refuses to measure otherwise).
func TestLimitScannerMatchesEnforcer(t *testing.T) {
	if _, err := measureEnforce(records(320), 1); err != nil {
		t.Fatal(err)
	}
	// An address behind an escape is masked too, the string written back escaped.
	rec := []byte(`{"event_type":"alert","src_ip":"81.2.3.4","payload_printable":"GET \/x from 81.2.3.4\n"}`)
	got := string(limitScanner{}.refine(nil, rec))
	if want := `{"event_type":"alert","src_ip":"81.2.3.0","payload_printable":"GET /x from 81.2.3.0\n"}` + "\n"; got != want {
		t.Errorf("refine:\n%s\nwant\n%s", got, want)
	}
	// A string cut short after an escape is copied as it is, not read past the record's end.
	cut := []byte(`{"a":"x\ny`)
	if got, want := string(limitScanner{}.refine(nil, cut[:len(cut):len(cut)])), `{"a":"x\ny`+"\n"; got != want {
		t.Errorf("refine of a cut record: %q, want %q", got, want)
	}
}
