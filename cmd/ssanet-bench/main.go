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
//     requester with an SSA agreed through `ssanet request`), with EVE records written into
//     the provider's Unix socket (Suricata's unix_stream eve-log output), in the two phases
//     below, each with agents of its own;
//   - saturated: --saturated records written as fast as the provider's socket takes them,
//     both agents as busy as they go (the SSA's retention 1 h, so nothing expires): the CPU per record of both sides together (utime +
//     stime from /proc, from the first record until the requester holds every record
//     shared), against the 25 µs and against the in-process refine + verify of a
//     record (what the agents add to it), records a second and the wall time;
//   - paced: --rate records a second for --duration: the CPU per record under that stream
//     (idle work, timers and the sensor profile's memory limit included, so no target), the
//     resident memory of each agent (VmRSS, and RssAnon, the part that is not mapped
//     files), the disk of each store per million records it holds, and the requester's
//     disk after retention deleted records against the raw size of those it holds.
//
// Usage, from the repository (it builds ./cmd/ssanet unless --ssanet names a binary):
//
//	go run ./cmd/ssanet-bench [--profile sensor|default] [--saturated 300000] [--paced=false]
//	    [--rate 5000] [--duration 10m] [--retention 3m] [--retention-check 30s]
//	    [--ssanet PATH] [--records 20000] [--rounds 10] [--stream=false] [--pprof DIR]
//
// --saturated 0 leaves out the saturated phase, --paced=false the paced one, --stream=false
// both (the in-process measures only). Each phase prints the machine's load average at its
// end: on a loaded machine the agents get less of the cores, and the records a second show
// it more than the CPU per record does.
//
// --pprof DIR (with agents that serve pprof: true) writes CPU profiles of both agents to
// DIR: saturated-*.cpu.pprof over 5 s from the fifth of the saturated phase's records (give
// it enough records to last longer, such as --saturated 1500000), and paced-*.cpu.pprof over
// the paced phase's middle third. The profiles cost CPU, which the figures then include.
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
	satRecords := fs.Int64("saturated", 300000, "records of the saturated phase, written as fast as the provider takes them (0: no saturated phase)")
	pacedPhase := fs.Bool("paced", true, "run the paced phase (false: not)")
	pprofDir := fs.String("pprof", "", "a directory to write CPU profiles of both agents to, over 5 s of the saturated phase and the middle third of the paced one (the agents serve pprof: true)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *rate < 1 || *duration <= 0 || *retention < time.Second || *check <= 0 || *nrec < 100 || *rounds < 1 || *satRecords < 0 ||
		(*profile != "sensor" && *profile != "default") {
		fmt.Fprintln(stderr, "ssanet-bench: want --profile sensor|default, a positive --rate, --duration and --retention-check, --retention of 1s or more, --records of 100 or more, --rounds of 1 or more, --saturated of 0 or more, and no arguments")
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
	if !*stream || (!*pacedPhase && *satRecords == 0) {
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
	cfg := streamConfig{bin: *bin, rate: *rate, duration: *duration, records: *satRecords, profile: *profile,
		retention: *retention, check: *check, progress: stderr, pprof: *pprofDir}
	// phase runs the two agents in a directory of their own under work.
	phase := func(name string, cfg streamConfig, every time.Duration, next pacer) (streamResult, error) {
		cfg.work = filepath.Join(work, name)
		if err := os.Mkdir(cfg.work, 0o700); err != nil {
			return streamResult{}, err
		}
		res, err := runStream(ctx, cfg, every, next)
		keep = keep || err != nil && ctx.Err() == nil
		return res, err
	}
	if *satRecords > 0 {
		// Nothing expires while it runs: the paced phase measures retention.
		cfg := cfg
		cfg.retention = time.Hour
		cfg.pprofFrom = func(_ time.Duration, sent int64) bool { return sent >= cfg.records/5 }
		cfg.pprofFor = 5 * time.Second
		fmt.Fprintf(stderr, "ssanet-bench: saturated phase: two agents, profile %s, %d records as fast as the provider takes them, in %s\n",
			*profile, cfg.records, work)
		res, err := phase("saturated", cfg, 0, saturated(cfg))
		if res.measured {
			row("", "", "", "")
			printSaturated(row, *profile, res, ve)
		}
		if err != nil {
			return fail(err)
		}
	}
	if *pacedPhase {
		fmt.Fprintf(stderr, "ssanet-bench: paced phase: two agents, profile %s, %d records/s for %s, retention %s (checked every %s), in %s\n",
			*profile, *rate, *duration, *retention, *check, work)
		cfg.pprofFrom = func(elapsed time.Duration, _ int64) bool { return elapsed >= cfg.duration/3 }
		cfg.pprofFor = cfg.duration / 3
		res, err := phase("paced", cfg, 10*time.Millisecond, paced(cfg))
		if res.measured {
			row("", "", "", "")
			printPaced(row, cfg, res)
		}
		if err != nil {
			return fail(err)
		}
	}
	return 0
}

// rowFunc prints one row of the table.
type rowFunc func(what, figure, anchor, verdict string)

// printSaturated prints the saturated phase: CPU per record of both agents against the
// target and the in-process refine + verify of the same records (what the agents add to
// it), records a second and the wall time.
func printSaturated(row rowFunc, profile string, res streamResult, ve verifyResult) {
	row(fmt.Sprintf("saturated: profile %s, %d records", profile, res.sent),
		fmt.Sprintf("%d records sent, %d received", res.sent, res.received),
		fmt.Sprintf("%.0f B each, written as fast as taken", res.recordBytes), "load average "+res.load)
	perRec := func(d time.Duration) float64 { return us(d) / float64(max(res.received, 1)) }
	e2e := perRec(res.provider.cpu + res.requester.cpu)
	row("end to end CPU per record, saturated", fmt.Sprintf("%.1f µs (provider %.1f + requester %.1f)", e2e, perRec(res.provider.cpu), perRec(res.requester.cpu)),
		fmt.Sprintf("in-process refine+verify %.2f µs", us(ve.Refine+ve.Verify)),
		fmt.Sprintf("<= %.0f µs %s", us(targetCPU), mark(e2e <= us(targetCPU))))
	row("records/s, saturated", fmt.Sprintf("%.0f received/s, %.1f s wall", float64(res.received)/res.elapsed.Seconds(), res.elapsed.Seconds()),
		fmt.Sprintf("%.2f cores busy; the bench %.1f µs/record", (res.provider.cpu+res.requester.cpu).Seconds()/res.elapsed.Seconds(), perRec(res.bench)),
		fmt.Sprintf("(%.0f µs: %.0f/s on %d cores)", us(targetCPU), float64(runtime.NumCPU())/targetCPU.Seconds(), runtime.NumCPU()))
	row("RSS, saturated", fmt.Sprintf("peak provider %d MiB, requester %d MiB", res.provider.peak.rss>>20, res.requester.peak.rss>>20),
		fmt.Sprintf("anon at most %d and %d MiB", res.provider.peakAnon>>20, res.requester.peakAnon>>20), "")
}

// printPaced prints the paced phase: CPU per record under the stream (idle work, timers
// and the sensor profile's memory limit included), memory, disk and retention.
func printPaced(row rowFunc, cfg streamConfig, res streamResult) {
	row(fmt.Sprintf("paced: profile %s, %d/s for %s", cfg.profile, cfg.rate, cfg.duration),
		fmt.Sprintf("%d records sent, %d received", res.sent, res.received),
		fmt.Sprintf("%.0f B each, %d expired by retention", res.recordBytes, res.expired), "load average "+res.load)
	row("the provider's socket", fmt.Sprintf("longest write %.1f s", res.longestWrite.Seconds()),
		fmt.Sprintf("%.0f records/s sent on average", float64(res.sent)/cfg.duration.Seconds()), "")
	perRec := func(d time.Duration) float64 { return us(d) / float64(max(res.received, 1)) }
	row("CPU per record under the paced stream", fmt.Sprintf("%.1f µs, idle work included", perRec(res.provider.cpu+res.requester.cpu)),
		fmt.Sprintf("provider %.1f µs + requester %.1f µs", perRec(res.provider.cpu), perRec(res.requester.cpu)),
		"(the target is the saturated row's)")
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
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
