package agent

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ssanet/ssanet/storage"
)

// TestDiskWatchSaysOnce: the watch logs a pause once when it begins and once when it ends,
// however many checks see it, and its gauges follow the free space.
func TestDiskWatchSaysOnce(t *testing.T) {
	var logs bytes.Buffer
	states := []storage.Space{
		{Free: 100, Reserve: 50}, {Free: 40, Reserve: 50, Paused: true}, {Free: 30, Reserve: 50, Paused: true},
		{Free: 45, Reserve: 50, Paused: true}, {Free: 80, Reserve: 50}, {Free: 90, Reserve: 50},
	}
	i := 0
	w := newDiskWatch(func() (storage.Space, error) { return states[min(i, len(states)-1)], nil },
		slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	paused := []bool{false}
	for i = 1; i < len(states); i++ {
		w.check()
		paused = append(paused, w.isPaused())
		if got, want := testutil.ToFloat64(w.paused) == 1, states[i].Paused; got != want {
			t.Errorf("check %d: gauge paused %v, want %v", i, got, want)
		}
		if got := testutil.ToFloat64(w.free); got != float64(states[i].Free) {
			t.Errorf("check %d: gauge free %v, want %d", i, got, states[i].Free)
		}
	}
	if want := []bool{false, true, true, true, false, false}; !slices.Equal(paused, want) {
		t.Errorf("paused %v, want %v", paused, want)
	}
	if n := strings.Count(logs.String(), "disk below its reserve"); n != 1 {
		t.Errorf("pause logged %d times, want once:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "disk space back above the reserve"); n != 1 {
		t.Errorf("end of the pause logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestConfigStorageReserve(t *testing.T) {
	tests := []struct {
		mib  uint64
		want string // "" when valid
	}{{0, ""}, {16, ""}, {24, ""}, {1024, ""}, {15, "at least 16"}, {1, "at least 16"}}
	for _, tc := range tests {
		c := DefaultConfig()
		c.StorageReserveMiB = tc.mib
		err := c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("storage-reserve-mib %d: %v, want %q", tc.mib, err, tc.want)
		}
	}
}

func TestConfigStorageProfile(t *testing.T) {
	tests := []struct {
		profile string
		want    string // "" when valid
	}{{"", ""}, {"default", ""}, {"sensor", ""}, {"small", `storage-profile: storage: unknown profile "small"`}}
	for _, tc := range tests {
		c := DefaultConfig()
		c.StorageProfile = tc.profile
		err := c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("storage-profile %q: %v, want %q", tc.profile, err, tc.want)
		}
	}
}

// TestSensorMemoryLimit: storage-profile sensor sets the Go runtime's soft memory limit,
// unless GOMEMLIMIT sets one; the default profile leaves it alone.
func TestSensorMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	for _, tc := range []struct {
		profile, env string
		want         int64
	}{{"", "", prev}, {"default", "", prev}, {"sensor", "", SensorMemoryLimit}, {"sensor", "200MiB", prev}} {
		debug.SetMemoryLimit(prev)
		t.Setenv("GOMEMLIMIT", tc.env)
		c := DefaultConfig()
		c.StorageProfile = tc.profile
		c.applyMemoryLimit()
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("profile %q, GOMEMLIMIT %q: limit %d, want %d", tc.profile, tc.env, got, tc.want)
		}
	}
}
