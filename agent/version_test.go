package agent

import (
	"runtime/debug"
	"testing"
)

func TestBuild(t *testing.T) {
	vcs := func(kv ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{}
		for i := 0; i+1 < len(kv); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return info
	}
	checkout := vcs("vcs", "git", "vcs.revision", "abc123", "vcs.time", "2026-12-01T10:00:00Z", "vcs.modified", "false")
	for _, tc := range []struct {
		name         string
		commit, date string
		info         *debug.BuildInfo
		want         BuildInfo
	}{
		{name: "stamped wins over the checkout", commit: "f00d", date: "2026-12-06T00:00:00Z", info: checkout,
			want: BuildInfo{Version: "1.2.3", Commit: "f00d", GoVersion: "go1.x", BuildDate: "2026-12-06T00:00:00Z"}},
		{name: "go build in a checkout", info: checkout,
			want: BuildInfo{Version: "1.2.3", Commit: "abc123", GoVersion: "go1.x", BuildDate: "2026-12-01T10:00:00Z"}},
		{name: "uncommitted changes", info: vcs("vcs.revision", "abc123", "vcs.time", "2026-12-01T10:00:00Z", "vcs.modified", "true"),
			want: BuildInfo{Version: "1.2.3", Commit: "abc123-dirty", GoVersion: "go1.x", BuildDate: "2026-12-01T10:00:00Z"}},
		{name: "stamped commit only", commit: "f00d", info: checkout,
			want: BuildInfo{Version: "1.2.3", Commit: "f00d", GoVersion: "go1.x", BuildDate: "2026-12-01T10:00:00Z"}},
		{name: "outside a checkout", info: vcs("-trimpath", "true"),
			want: BuildInfo{Version: "1.2.3", Commit: Unknown, GoVersion: "go1.x", BuildDate: Unknown}},
		{name: "no build information", info: nil,
			want: BuildInfo{Version: "1.2.3", Commit: Unknown, GoVersion: "go1.x", BuildDate: Unknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := build("1.2.3", tc.commit, tc.date, "go1.x", tc.info); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
