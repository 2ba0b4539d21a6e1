package agent

import (
	"runtime"
	"runtime/debug"
)

// Version, Commit and BuildDate are stamped into a release build by its linker flags
// (dist/release.sh):
//
//	-X github.com/ssanet/ssanet/agent.Version=0.2.0
//	-X github.com/ssanet/ssanet/agent.Commit=<git commit>
//	-X github.com/ssanet/ssanet/agent.BuildDate=<RFC 3339, UTC>
//
// Version is announced in the libp2p user agent. Commit and BuildDate are empty unless
// stamped; see Build for what is printed then.
var (
	Version   = "0.1.0"
	Commit    = ""
	BuildDate = ""
)

// Unknown is what Build reports for a commit or build date that neither the linker flags nor
// the Go toolchain's build information carry (a build outside a git checkout).
const Unknown = "unknown"

// BuildInfo says which build of ssanet is running.
type BuildInfo struct {
	Version string `json:"version"`
	// Commit is the git commit; with "-dirty" when go build found uncommitted changes.
	Commit    string `json:"commit"`
	GoVersion string `json:"go"`
	// BuildDate is the release's build date (RFC 3339), or the commit's time for a go build
	// in a git checkout.
	BuildDate string `json:"build_date"`
}

// Build returns the running binary's build: the stamped values first, then what go build
// recorded from the git checkout (vcs.revision, vcs.time, vcs.modified), else Unknown.
func Build() BuildInfo {
	info, _ := debug.ReadBuildInfo()
	return build(Version, Commit, BuildDate, runtime.Version(), info)
}

// build is Build from the stamped values and the build information (nil when there is none).
func build(version, commit, date, goVersion string, info *debug.BuildInfo) BuildInfo {
	b := BuildInfo{Version: version, Commit: commit, GoVersion: goVersion, BuildDate: date}
	var revision, vcsTime string
	var modified bool
	if info != nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if b.Commit == "" {
		b.Commit = revision
		if b.Commit != "" && modified {
			b.Commit += "-dirty"
		}
	}
	if b.BuildDate == "" {
		b.BuildDate = vcsTime
	}
	if b.Commit == "" {
		b.Commit = Unknown
	}
	if b.BuildDate == "" {
		b.BuildDate = Unknown
	}
	return b
}
