package policy

import (
	"testing"
	"time"
)

// TestParseTimeFast checks that the timestamps read without time.Parse are read as
// time.Parse reads them with the first of timeLayouts that fits, that the others are
// declined, and that the usual forms cost no allocation.
func TestParseTimeFast(t *testing.T) {
	slow := func(s string) (time.Time, bool) {
		for _, l := range timeLayouts {
			if t, err := time.Parse(l, s); err == nil {
				return t.UTC(), true
			}
		}
		return time.Time{}, false
	}
	cases := []struct {
		in   string
		fast bool // read without time.Parse
	}{
		{"2021-01-27T01:28:11.488362+0100", true},
		{"2024-07-30T16:53:24.501575+0000", true},
		{"2021-11-22T14:42:51.881033Z", true},
		{"1985-04-12T23:59:59.52Z", true},
		{"1985-04-12T23:59:59Z", true},
		{"2025-01-01T00:00:00.123456789-05:30", true},
		{"2025-01-01 00:00:00.1+02:00", true},
		{"2024-02-29T12:00:00Z", true},
		{"2021-01-27T01:28:11-0100", true},
		{"2025-01-01 00:00:00+0200", false},
		{"2023-02-29T12:00:00Z", false},
		{"2026-01-14T15:58:47", false},
		{"2025-13-01T00:00:00Z", false},
		{"2025-01-01T24:00:00Z", false},
		{"2025-01-01T00:00:60Z", false},
		{"2025-01-01T00:00:00.Z", false},
		{"2025-01-01T00:00:00.1234567891Z", false},
		{"2025-01-01T00:00:00+25:00", false},
		{"2025-01-01T00:00:00+01:60", false},
		{"2025-01-01T00:00:00+01", false},
		{"2025-01-01t00:00:00Z", false},
		{"2025-1-01T00:00:00Z", false},
		{"2025-01-01T00:00:00z", false},
		{"1970-01-01T00:00:00Z", true},
		{"+025-01-01T00:00:00Z", false},
	}
	for _, c := range cases {
		ft, fok := parseTimeFast(c.in)
		if fok != c.fast {
			t.Errorf("parseTimeFast(%q) ok = %v, want %v", c.in, fok, c.fast)
		}
		want, wok := slow(c.in)
		if fok && (!wok || !ft.Equal(want) || ft != want) {
			t.Errorf("parseTimeFast(%q) = %v; time.Parse: %v, %v", c.in, ft, want, wok)
		}
		if got, ok := parseTime(c.in); ok != wok || got != want {
			t.Errorf("parseTime(%q) = %v, %v; want %v, %v", c.in, got, ok, want, wok)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		parseTime("2021-01-27T01:28:11.488362+0100")
		parseTime("2021-11-22T14:42:51.881033Z")
	}); n != 0 {
		t.Errorf("parseTime allocates %v times", n)
	}
}

// FuzzParseTimeFast: whatever parseTimeFast reads, time.Parse reads the same with the first
// of timeLayouts that fits.
func FuzzParseTimeFast(f *testing.F) {
	for _, s := range []string{"2021-01-27T01:28:11.488362+0100", "2021-11-22T14:42:51.881033Z", "2025-01-01 00:00:00.1+02:00", "2024-02-29T12:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseTimeFast(s)
		if !ok {
			return
		}
		for _, l := range timeLayouts {
			if want, err := time.Parse(l, s); err == nil {
				if want = want.UTC(); got != want {
					t.Fatalf("parseTimeFast(%q) = %v; time.Parse with %q: %v", s, got, l, want)
				}
				return
			}
		}
		t.Fatalf("parseTimeFast(%q) = %v; time.Parse reads it with no layout", s, got)
	})
}
