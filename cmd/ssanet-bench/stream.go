//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// streamConfig is a stream of records between two real agents: the set-up both phases
// share, and each phase's own length.
type streamConfig struct {
	bin       string        // the ssanet binary
	work      string        // a directory of the bench's own, removed afterwards
	rate      int           // records a second (the paced phase)
	duration  time.Duration // of the stream (the paced phase)
	records   int64         // records to write as fast as the provider takes them (the saturated phase)
	profile   string        // storage-profile of both agents
	retention time.Duration // the SSA's retention at the requester
	check     time.Duration // retention-check of the requester
	progress  io.Writer     // one line every 30 s, nil for none
	pprof     string        // a directory for CPU profiles of both agents, "" for none
	// pprofFrom says when the profiles start, pprofFor how long they last (with pprof).
	pprofFrom func(elapsed time.Duration, sent int64) bool
	pprofFor  time.Duration
}

// usage is what /proc says of one process at one time.
type usage struct {
	rss, anon int64         // VmRSS, RssAnon (bytes)
	cpu       time.Duration // utime+stime
}

// side is what the stream measured of one agent.
type side struct {
	peak, end      usage // peak RSS (and the anonymous part at that time), and at the end
	peakAnon       int64
	cpu            time.Duration // CPU from the stream's start until the requester held every record
	disk, peakDisk int64         // the store's files (allocated blocks) at the end, and at most
}

// streamResult is what the stream measured.
type streamResult struct {
	sent, received, expired int64 // records written to the provider, received and stored, deleted by retention
	recordBytes             float64
	elapsed                 time.Duration
	provider, requester     side
	// liveBytes is the raw size of the records the requester holds at the end.
	liveBytes float64
	// longestWrite is the longest a write of records into the provider's socket waited.
	longestWrite time.Duration
	// bench is the CPU time of this process over the same span (writing the records,
	// reading /proc and the metrics): work beside the agents on the same cores.
	bench time.Duration
	// measured: every figure above was taken (an agent may still fail to stop).
	measured bool
	// load is the machine's load average over the last minute at the end (/proc/loadavg):
	// how many threads wanted the cores, the agents' among them.
	load string
}

// agentProc is one running `ssanet run`.
type agentProc struct {
	name, home, metrics string
	cmd                 *exec.Cmd
	done                chan struct{}
	err                 error
}

// runSSANet runs one ssanet command on home and returns its standard output.
func runSSANet(ctx context.Context, bin, home string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--home", home}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("ssanet %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

// freePort returns a TCP port on loopback that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// newHome makes an agent's home with ssanet init and sets the keys given (replacing a
// line the init wrote for the same key).
func newHome(ctx context.Context, cfg streamConfig, name string, keys map[string]string, extra string) (*agentProc, error) {
	home := filepath.Join(cfg.work, name)
	if _, err := runSSANet(ctx, cfg.bin, home, "init", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--org", "ssanet-bench "+name); err != nil {
		return nil, err
	}
	path := filepath.Join(home, "config.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, l := range strings.SplitAfter(string(data), "\n") {
		k, _, _ := strings.Cut(l, ":")
		if _, ok := keys[k]; !ok {
			b.WriteString(l)
		}
	}
	for k, v := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	b.WriteString(extra)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return nil, err
	}
	return &agentProc{name: name, home: home, metrics: keys["metrics"]}, nil
}

// start starts the daemon, its log in the home, and waits until its control API answers.
func (a *agentProc) start(ctx context.Context, bin string) error {
	logf, err := os.Create(filepath.Join(a.home, "run.log"))
	if err != nil {
		return err
	}
	a.cmd = exec.Command(bin, "--home", a.home, "run")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the bench
	if err := a.cmd.Start(); err != nil {
		return errors.Join(err, logf.Close())
	}
	a.done = make(chan struct{})
	go func() {
		a.err = a.cmd.Wait()
		if err := logf.Close(); err != nil && a.err == nil {
			a.err = err
		}
		close(a.done)
	}()
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := runSSANet(ctx, bin, a.home, "id"); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s did not start within a minute: %w (log: %s)", a.name, err, filepath.Join(a.home, "run.log"))
		}
		select {
		case <-a.done:
			return fmt.Errorf("%s exited: %v (log: %s)", a.name, a.err, filepath.Join(a.home, "run.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop stops the daemon (SIGTERM; after 30 s SIGQUIT, which makes Go write every
// goroutine's stack into run.log; SIGKILL 10 s later) and waits for it.
func (a *agentProc) stop() error {
	if a.cmd == nil || a.done == nil {
		return nil
	}
	select {
	case <-a.done:
		return a.err
	default:
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-a.done:
		return a.err
	case <-time.After(30 * time.Second):
	}
	err := fmt.Errorf("%s did not stop within 30 s of SIGTERM: its goroutines are in %s (SIGQUIT)", a.name, filepath.Join(a.home, "run.log"))
	if err := a.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return err
	}
	select {
	case <-a.done:
		return err
	case <-time.After(10 * time.Second):
	}
	if err := a.cmd.Process.Kill(); err != nil {
		return err
	}
	<-a.done
	return fmt.Errorf("%w; SIGQUIT did not end it either: killed", err)
}

// usage reads /proc/PID/status and /proc/PID/stat of the daemon.
func (a *agentProc) usage() (usage, error) {
	var u usage
	pid := a.cmd.Process.Pid
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	sc := bufio.NewScanner(bytes.NewReader(st))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return u, err
		}
		switch f[0] {
		case "VmRSS:":
			u.rss = kb << 10
		case "RssAnon:":
			u.anon = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// pid (comm) state ...: utime and stime are the 14th and 15th fields, the comm may hold
	// spaces, so count from its closing parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(f) < 13 {
		return u, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	const clockTicks = 100 // USER_HZ: 100 on every Linux that Go runs on
	u.cpu = time.Duration(ut+stt) * time.Second / clockTicks
	return u, nil
}

// metric sums the values of the series of name (with every label set given in labels,
// e.g. `outcome="expired"`) that the daemon's /metrics serves.
func (a *agentProc) metric(ctx context.Context, name string, labels ...string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+a.metrics+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Its body holds no series: read, it would count 0.
		return 0, fmt.Errorf("metrics of %s: %s", a.name, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || len(l) <= len(name) || (l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		all := true
		for _, lb := range labels {
			all = all && strings.Contains(l, lb)
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics of %s: %q: %w", a.name, l, err)
		}
		sum += v
	}
	return int64(sum), sc.Err()
}

// diskUsage is the allocated size of the files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // deleted since listed
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n, err
}

const offerYAML = `id: bench-eve
approval: auto
proposal-validity: 1h
terms:
  participants:
    provider:
      affiliation: ssanet-bench provider
      name: Security operations
  information:
    - name: Suricata alerts
      type: attack-detection-log
      format: eve
  policy:
    masking:
      - scope: public-ip
        method: truncate
        bits: 8
    handling:
      tlp: AMBER
      retention: 180d
      redistribution: organisation
  method:
    protocols: [/ssanet/exchange/1.0.0]
    security: [noise, tls]
`

const requestYAML = `participants:
  requester:
    affiliation: ssanet-bench requester
    name: SOC
information:
  - name: IDS alerts
    type: attack-detection-log
    format: eve
policy:
  masking:
    - scope: public-ip
      method: truncate
      bits: 8
      max-bits: 16
  filtering:
    - expr: 'r["event.kind"] != "stats"'
  handling:
    tlp: GREEN
    retention: %s
    redistribution: community
method:
  protocols: [/ssanet/exchange/1.0.0]
  security: [noise, tls]
schedule:
  start: 2010-01-01T00:00:00Z
  end: now+365d
`

// agentPair is what both phases of the two agents share: a provider and a requester started
// in homes under the config's work directory, an SSA agreed between them, the provider's
// EVE socket dialled, and what to count from: the time and CPU of the first record.
type agentPair struct {
	prov, req *agentProc
	conn      net.Conn
	start     time.Time
	p0, r0    usage         // of each agent at start
	bench0    time.Duration // this process's CPU at start
}

// writeWait bounds one write of records into the provider's socket: a provider that leaves
// it unread for that long fails the run.
const writeWait = 5 * time.Minute

// startPair sets up a provider and a requester in cfg.work, starts them and agrees an SSA
// between them (8-bit truncation, the filter on event.kind, cfg.retention); close stops
// them.
func startPair(ctx context.Context, cfg streamConfig) (p *agentPair, err error) {
	sock := filepath.Join(cfg.work, "eve.sock")
	pm, err := freePort()
	if err != nil {
		return nil, err
	}
	rm, err := freePort()
	if err != nil {
		return nil, err
	}
	on := map[bool]string{true: "true", false: "false"}[cfg.pprof != ""]
	prov, err := newHome(ctx, cfg, "provider", map[string]string{"storage-profile": cfg.profile, "metrics": pm, "pprof": on},
		fmt.Sprintf("ingest:\n  unix:\n    - {path: %q, type: stream, format: eve}\n", sock))
	if err != nil {
		return nil, err
	}
	req, err := newHome(ctx, cfg, "requester", map[string]string{"storage-profile": cfg.profile, "metrics": rm, "pprof": on,
		"retention-check": cfg.check.String()}, "")
	if err != nil {
		return nil, err
	}
	p = &agentPair{prov: prov, req: req}
	defer func() {
		if err != nil {
			err, p = errors.Join(err, p.close()), nil
		}
	}()
	if err := prov.start(ctx, cfg.bin); err != nil {
		return p, err
	}
	if err := req.start(ctx, cfg.bin); err != nil {
		return p, err
	}
	offer := filepath.Join(cfg.work, "offer.yaml")
	tmpl := filepath.Join(cfg.work, "request.yaml")
	if err := os.WriteFile(offer, []byte(offerYAML), 0o600); err != nil {
		return p, err
	}
	if err := os.WriteFile(tmpl, fmt.Appendf(nil, requestYAML, cfg.retention), 0o600); err != nil {
		return p, err
	}
	if _, err := runSSANet(ctx, cfg.bin, prov.home, "offer", "add", offer); err != nil {
		return p, err
	}
	out, err := runSSANet(ctx, cfg.bin, prov.home, "id", "--json")
	if err != nil {
		return p, err
	}
	var id struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}
	if err := json.Unmarshal(out, &id); err != nil || len(id.Addrs) == 0 {
		return p, fmt.Errorf("the provider's id: %q: %v", out, err)
	}
	addr := id.Addrs[0]
	if !strings.Contains(addr, "/p2p/") {
		addr += "/p2p/" + id.PeerID
	}
	if _, err := runSSANet(ctx, cfg.bin, req.home, "request", "--provider", addr, "--template", tmpl, "--wait", "60s"); err != nil {
		return p, err
	}
	if p.conn, err = net.Dial("unix", sock); err != nil {
		return p, fmt.Errorf("the provider's EVE socket: %w", err)
	}
	return p, nil
}

// close closes the socket and stops both agents.
func (p *agentPair) close() error {
	var err error
	if p.conn != nil {
		err = p.conn.Close()
	}
	return errors.Join(err, p.req.stop(), p.prov.stop())
}

// begin marks the first record: CPU and time are counted from here.
func (p *agentPair) begin() (err error) {
	if p.p0, err = p.prov.usage(); err != nil {
		return err
	}
	if p.r0, err = p.req.usage(); err != nil {
		return err
	}
	p.bench0, p.start = cpuClock(clockProcessCPU), time.Now()
	return nil
}

// alive says why the phase cannot go on: an agent exited, or ctx is done.
func (p *agentPair) alive(ctx context.Context) error {
	select {
	case <-p.prov.done:
		return fmt.Errorf("the provider exited: %v", p.prov.err)
	case <-p.req.done:
		return fmt.Errorf("the requester exited: %v", p.req.err)
	default:
		return ctx.Err()
	}
}

// sample reads the memory and disk of both agents into res.
func (p *agentPair) sample(res *streamResult) error {
	for _, s := range []struct {
		a *agentProc
		d *side
	}{{p.prov, &res.provider}, {p.req, &res.requester}} {
		u, err := s.a.usage()
		if err != nil {
			return fmt.Errorf("%s: %w", s.a.name, err)
		}
		if u.rss > s.d.peak.rss {
			s.d.peak = u
		}
		s.d.peakAnon = max(s.d.peakAnon, u.anon)
		s.d.end = u
		d, err := diskUsage(filepath.Join(s.a.home, "data"))
		if err != nil {
			return err
		}
		s.d.disk, s.d.peakDisk = d, max(s.d.peakDisk, d)
	}
	return nil
}

// pacer says how many records are due, given the time since the first record and the
// records sent so far; more is false when the stream is over.
type pacer func(elapsed time.Duration, sent int64) (due int64, more bool)

// paced is cfg.rate records a second for cfg.duration.
func paced(cfg streamConfig) pacer {
	return func(elapsed time.Duration, sent int64) (int64, bool) {
		if elapsed >= cfg.duration {
			return 0, false
		}
		return int64(elapsed.Seconds()*float64(cfg.rate)) - sent, true
	}
}

// saturated is cfg.records records, 1,000 a write, each as soon as the provider took the
// one before.
func saturated(cfg streamConfig) pacer {
	return func(_ time.Duration, sent int64) (int64, bool) {
		return min(1000, cfg.records-sent), sent < cfg.records
	}
}

// runStream sets up a provider and a requester in cfg.work, agrees an SSA, writes EVE
// records into the provider's Unix socket as next says (a pause of every between two turns,
// none if every is 0), waits until the requester holds them all, and measures both
// processes all along.
func runStream(ctx context.Context, cfg streamConfig, every time.Duration, next pacer) (res streamResult, err error) {
	p, err := startPair(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		err = errors.Join(err, p.close())
	}()
	if err := p.begin(); err != nil {
		return res, err
	}
	if err := p.feed(ctx, &res, cfg, every, next); err != nil {
		return res, err
	}
	err = p.drain(ctx, &res)
	return res, err
}

// feed writes records into the provider's socket as next says, pausing every between two
// turns if it is positive, and samples both agents every second.
func (p *agentPair) feed(ctx context.Context, res *streamResult, cfg streamConfig, every time.Duration, next pacer) (err error) {
	progress := cfg.progress
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	// A write that waits for the provider ends when ctx does.
	defer context.AfterFunc(ctx, func() { _ = p.conn.SetWriteDeadline(time.Now()) })()
	gen := newEVEGen(2)
	var buf []byte
	var bytesSent int64
	nextSample, nextProgress := p.start, p.start.Add(30*time.Second)
	var profiled chan error // CPU profiles, when cfg.pprof
	defer func() {
		if profiled != nil {
			err = errors.Join(err, <-profiled)
		}
	}()
	for {
		now := time.Now()
		due, more := next(now.Sub(p.start), res.sent)
		if !more {
			break
		}
		buf = buf[:0]
		for range due {
			buf = append(gen.next(buf), '\n')
		}
		if len(buf) > 0 {
			// The provider reads its socket as fast as it queues the records: a write waits
			// while it does not, as Suricata's would. The longest wait is reported.
			if err := p.conn.SetWriteDeadline(now.Add(writeWait)); err != nil {
				return err
			}
			if _, err := p.conn.Write(buf); err != nil {
				return fmt.Errorf("write records to the provider: %w", errors.Join(ctx.Err(), err))
			}
			res.longestWrite = max(res.longestWrite, time.Since(now))
			res.sent += due
			bytesSent += int64(len(buf))
		}
		if cfg.pprof != "" && profiled == nil && cfg.pprofFrom(now.Sub(p.start), res.sent) {
			profiled = make(chan error, 1)
			prefix := filepath.Join(cfg.pprof, filepath.Base(cfg.work)+"-")
			go func() { profiled <- cpuProfiles(ctx, prefix, cfg.pprofFor, p.prov, p.req) }()
		}
		if now.After(nextSample) {
			if err := p.sample(res); err != nil {
				return err
			}
			nextSample = now.Add(time.Second)
			if progress != nil && now.After(nextProgress) {
				nextProgress = nextProgress.Add(30 * time.Second)
				got, _ := p.req.metric(ctx, "ssanet_records_received_total")
				fmt.Fprintf(progress, "%4.0fs sent %d received %d; RSS provider %d MiB (anon %d), requester %d MiB (anon %d); disk %d MiB, %d MiB\n",
					now.Sub(p.start).Seconds(), res.sent, got, res.provider.end.rss>>20, res.provider.end.anon>>20,
					res.requester.end.rss>>20, res.requester.end.anon>>20, res.provider.disk>>20, res.requester.disk>>20)
			}
		}
		if err := p.alive(ctx); err != nil {
			return err
		}
		if tick != nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick:
			}
		}
	}
	res.recordBytes = float64(bytesSent)/float64(max(res.sent, 1)) - 1
	return nil
}

// drain waits until the provider has taken every record sent and the requester has
// received as many as the provider shared (every record sent passes the filter but stats
// ones), sampling both; then it sets the CPU of each side since begin, the elapsed time and
// the records received and expired. It fails after two minutes in which neither agent
// moved.
func (p *agentPair) drain(ctx context.Context, res *streamResult) error {
	last := int64(-1)
	var deadline time.Time
	for {
		if err := p.sample(res); err != nil {
			return err
		}
		ingested, err := p.prov.metric(ctx, "ssanet_provider_records_total")
		if err != nil {
			return err
		}
		shared, err := p.prov.metric(ctx, "ssanet_provider_records_total", `outcome="shared"`)
		if err != nil {
			return err
		}
		if res.received, err = p.req.metric(ctx, "ssanet_records_received_total"); err != nil {
			return err
		}
		if ingested >= res.sent && res.received >= shared {
			break
		}
		if now := time.Now(); ingested+res.received > last {
			last, deadline = ingested+res.received, now.Add(2*time.Minute)
		} else if now.After(deadline) {
			return fmt.Errorf("two minutes without progress after the stream: the provider took %d of %d records, shared %d; the requester received %d", ingested, res.sent, shared, res.received)
		}
		if err := p.alive(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.elapsed = time.Since(p.start)
	res.bench = cpuClock(clockProcessCPU) - p.bench0
	p1, err := p.prov.usage()
	if err != nil {
		return err
	}
	r1, err := p.req.usage()
	if err != nil {
		return err
	}
	res.provider.cpu, res.requester.cpu = p1.cpu-p.p0.cpu, r1.cpu-p.r0.cpu
	if res.expired, err = p.req.metric(ctx, "ssanet_requester_records_total", `outcome="expired"`); err != nil {
		return err
	}
	res.liveBytes = float64(res.received-res.expired) * res.recordBytes
	// The load average is said beside the figures; a machine that does not tell it does not
	// spoil them.
	res.load = "unknown"
	la, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(la)); err == nil && len(f) > 0 {
		res.load = f[0]
	}
	res.measured = true
	return nil
}

// cpuProfiles writes a CPU profile of each agent, taken over d at the same time, to
// PREFIXNAME.cpu.pprof (read it with go tool pprof).
func cpuProfiles(ctx context.Context, prefix string, d time.Duration, agents ...*agentProc) error {
	errs := make(chan error, len(agents))
	for _, a := range agents {
		go func() {
			errs <- func() error {
				url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a.metrics, max(int(d.Seconds()), 1))
				req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
				if err != nil {
					return err
				}
				resp, err := (&http.Client{Timeout: d + time.Minute}).Do(req)
				if err != nil {
					return fmt.Errorf("CPU profile of %s: %w", a.name, err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("CPU profile of %s: %s", a.name, resp.Status)
				}
				f, err := os.Create(prefix + a.name + ".cpu.pprof")
				if err != nil {
					return err
				}
				_, err = io.Copy(f, resp.Body)
				return errors.Join(err, f.Close())
			}()
		}()
	}
	var err error
	for range agents {
		err = errors.Join(err, <-errs)
	}
	return err
}
