//go:build linux

// Command ssanet-bench prints the figures of issue 19 side by side, each against its
// anchor measured in the same run:
//
//   - EVE enforcement (policy.Enforcer.Refine: every public address truncated, a CEL filter)
//     against the limit scanner, the least work that gives the same bytes (limit.go: the
//     scanner lives here, and only here), in records per CPU-second, with allocations per
//     record;
//   - the requester's verification (policy.Verifier) against the provider's refining, CPU
//     per record;
//   - two real agents, `ssanet run` processes on loopback (a provider with an offer, a
//     requester with an SSA agreed through `ssanet request`), under a paced stream of EVE
//     records written into the provider's Unix socket (Suricata's unix_stream eve-log
//     output) at --rate for --duration: the CPU per record of both sides together, the
//     resident memory of each (VmRSS, and RssAnon, the part that is not mapped files),
//     the disk of each store per million records it holds, and the requester's disk after
//     retention deleted records against the raw size of those it holds.
//
// Usage, from the repository (it builds ./cmd/ssanet unless --ssanet names a binary):
//
//	go run ./cmd/ssanet-bench [--profile sensor|default] [--rate 5000] [--duration 10m]
//	    [--retention 3m] [--retention-check 30s] [--ssanet PATH] [--records 20000]
//	    [--rounds 10] [--stream=false] [--pprof DIR]
//
// Everything it starts listens on loopback only, lives in a temporary directory removed at
// the end, and is stopped when it ends (the agents die with it if it is killed). It needs
// Linux (/proc, and the CPU clocks).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Issue 19's targets.
const (
	targetOfLimit      = 2.0 / 3
	targetAllocs       = 12
	targetVerify       = 1.0
	targetCPU          = 25 * time.Microsecond
	targetProviderRSS  = 150e6 // bytes: the MB
	targetRequesterRSS = 250e6
	targetDiskPerM     = 0.5e9
	targetRetained     = 1.10
)

// run runs the bench with args and returns the exit code: 0 done, 1 failed, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ssanet-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "sensor", "storage-profile of both agents: sensor or default")
	rate := fs.Int("rate", 5000, "EVE records a second written to the provider")
	duration := fs.Duration("duration", 10*time.Minute, "how long the stream runs")
	retention := fs.Duration("retention", 3*time.Minute, "the SSA's retention at the requester")
	check := fs.Duration("retention-check", 30*time.Second, "the requester's retention-check")
	bin := fs.String("ssanet", "", "the ssanet binary (default: go build ./cmd/ssanet)")
	nrec := fs.Int("records", 20000, "records of the in-process measures")
	rounds := fs.Int("rounds", 10, "rounds over them")
	stream := fs.Bool("stream", true, "run the two agents (false: the in-process measures only)")
	pprofDir := fs.String("pprof", "", "a directory to write CPU profiles of both agents to, taken over the stream's middle third (the agents serve pprof: true)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *rate < 1 || *duration <= 0 || *retention < time.Second || *check <= 0 || *nrec < 100 || *rounds < 1 ||
		(*profile != "sensor" && *profile != "default") {
		fmt.Fprintln(stderr, "ssanet-bench: want --profile sensor|default, a positive --rate, --duration and --retention-check, --retention of 1s or more, --records of 100 or more, --rounds of 1 or more, and no arguments")
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "ssanet-bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "ssanet-bench: %s/%s, %d CPUs, %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	recs := records(*nrec)
	en, err := measureEnforce(recs, *rounds)
	if err != nil {
		return fail(err)
	}
	ve, err := measureVerify(recs, *rounds)
	if err != nil {
		return fail(err)
	}
	row := func(what, figure, anchor, verdict string) {
		fmt.Fprintf(stdout, "%-44s %-44s %-40s %s\n", what, figure, anchor, verdict)
	}
	row("what", "figure", "anchor (same run)", "target")
	row(fmt.Sprintf("EVE enforcement (%.0f B records)", en.RecordBytes),
		fmt.Sprintf("%.0f records/cpu-s, %.1f allocs/record", en.PerCPUSecond, en.Allocs),
		fmt.Sprintf("limit scanner %.0f/cpu-s, %.1f allocs", en.LimitPerCPU, en.LimitAllocs),
		fmt.Sprintf("%.2f of the limit (>= %.2f) %s; allocs <= %d %s", en.OfLimit, targetOfLimit, mark(en.OfLimit >= targetOfLimit), targetAllocs, mark(en.Allocs <= targetAllocs)))
	row("requester's verify per record", fmt.Sprintf("%.2f µs of CPU", us(ve.Verify)),
		fmt.Sprintf("provider's refine %.2f µs", us(ve.Refine)),
		fmt.Sprintf("%.2fx (<= %.1fx) %s", ve.Ratio, targetVerify, mark(ve.Ratio <= targetVerify)))
	if !*stream {
		return 0
	}
	work, err := os.MkdirTemp("", "ssanet-bench-")
	if err != nil {
		return fail(err)
	}
	keep := false // the agents' homes and logs, after a failure
	defer func() {
		if keep {
			fmt.Fprintf(stderr, "ssanet-bench: the agents' homes and logs (run.log) are kept in %s: remove it when done\n", work)
			return
		}
		if err := os.RemoveAll(work); err != nil {
			fmt.Fprintln(stderr, "ssanet-bench: remove the work directory:", err)
		}
	}()
	if *bin == "" {
		*bin = filepath.Join(work, "ssanet")
		build := exec.CommandContext(ctx, "go", "build", "-o", *bin, "github.com/ssanet/ssanet/cmd/ssanet")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			return fail(fmt.Errorf("build ssanet (or give --ssanet PATH): %w", err))
		}
	}
	fmt.Fprintf(stderr, "ssanet-bench: two agents, profile %s, %d records/s for %s, retention %s (checked every %s), in %s\n",
		*profile, *rate, *duration, *retention, *check, work)
	res, err := runStream(ctx, streamConfig{bin: *bin, work: work, rate: *rate, duration: *duration, profile: *profile,
		retention: *retention, check: *check, progress: stderr, pprof: *pprofDir})
	if err != nil {
		keep = ctx.Err() == nil
		return fail(err)
	}
	row("", "", "", "")
	row(fmt.Sprintf("stream: profile %s, %d/s for %s", *profile, *rate, *duration),
		fmt.Sprintf("%d records sent, %d received", res.sent, res.received),
		fmt.Sprintf("%.0f B each, %d expired by retention", res.recordBytes, res.expired), "")
	row("the provider's socket", fmt.Sprintf("longest write %.1f s", res.longestWrite.Seconds()),
		fmt.Sprintf("%.0f records/s sent on average", float64(res.sent)/duration.Seconds()), "")
	perRec := func(d time.Duration) float64 { return us(d) / float64(max(res.received, 1)) }
	e2e := res.provider.cpu + res.requester.cpu
	row("end to end CPU per record (both sides)", fmt.Sprintf("%.1f µs", perRec(e2e)),
		fmt.Sprintf("provider %.1f µs + requester %.1f µs", perRec(res.provider.cpu), perRec(res.requester.cpu)),
		fmt.Sprintf("<= %.0f µs %s", us(targetCPU), mark(perRec(e2e) <= us(targetCPU))))
	for _, s := range []struct {
		name   string
		d      side
		target int64
	}{{"provider", res.provider, targetProviderRSS}, {"requester", res.requester, targetRequesterRSS}} {
		row("RSS "+s.name, fmt.Sprintf("peak %d MiB (anon at most %d MiB)", s.d.peak.rss>>20, s.d.peakAnon>>20),
			fmt.Sprintf("at the end %d MiB (anon %d MiB)", s.d.end.rss>>20, s.d.end.anon>>20),
			fmt.Sprintf("<= %d MB (%d MiB) %s", s.target/1e6, s.target>>20, mark(s.d.peak.rss <= s.target)))
	}
	held := res.received - res.expired
	perM := float64(res.requester.disk) / float64(max(held, 1)) * 1e6
	row("disk per million records (requester)", fmt.Sprintf("%.2f GB", perM/1e9),
		fmt.Sprintf("%d MiB held for %d records (peak %d MiB)", res.requester.disk>>20, held, res.requester.peakDisk>>20),
		fmt.Sprintf("<= %.1f GB %s", targetDiskPerM/1e9, mark(perM <= targetDiskPerM)))
	row("disk of the provider", fmt.Sprintf("%d MiB at the end", res.provider.disk>>20),
		fmt.Sprintf("peak %d MiB; its records are acknowledged", res.provider.peakDisk>>20), "")
	ratio := float64(res.requester.disk) / max(res.liveBytes, 1)
	row("requester's disk after retention deletes", fmt.Sprintf("%.2fx the live data", ratio),
		fmt.Sprintf("live: %d records, %.0f MiB raw", held, res.liveBytes/(1<<20)),
		fmt.Sprintf("<= %.2fx %s", targetRetained, mark(res.expired > 0 && ratio <= targetRetained)))
	return 0
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
