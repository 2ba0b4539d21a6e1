package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/discovery"
	"github.com/ssanet/ssanet/protocol"
)

// sampleEVE is the bundled sensor output of the demo: Suricata EVE records (public sample,
// see policy/testdata/SOURCES.md).
//
//go:embed sample-eve.jsonl
var sampleEVE []byte

// demoAttackers are public addresses the demo's sensor reports as attackers, so that the
// agreed masking has something to hide. No traffic is sent to them.
var demoAttackers = []string{"1.1.1.1", "93.184.216.34", "8.8.4.4", "151.101.1.69", "1.1.1.1", "104.16.132.229"}

func (c *cli) demoCommand() *cobra.Command {
	var dir string
	var records int
	cmd := c.command("demo [--dir DIR] [--records N]", "Appendix I end to end on 127.0.0.1 (directory, two domains)", noData, nargs(0, 0), // narration
		func([]string) int { return c.demo(dir, records) })
	cmd.Flags().StringVar(&dir, "dir", "", "`DIR` where the three agents' homes go (default: a new temporary directory)")
	cmd.Flags().IntVar(&records, "records", 600, "how many sensor records to stream (`N`)")
	return cmd
}

func (c *cli) demo(dir string, records int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir == "" {
		d, err := os.MkdirTemp("", "ssanet-demo-")
		if err != nil {
			return c.fail(err)
		}
		defer func() {
			if err := os.RemoveAll(d); err != nil {
				fmt.Fprintf(c.stderr, "ssanet: remove the demo's directory: %v\n", err)
			}
		}()
		dir = d
	}
	err := runDemo(ctx, c, dir, records)
	if errors.Is(err, agent.ErrInitialised) {
		return c.fail(fmt.Errorf("demo: %w: %s holds an earlier demo's agents; remove it, or give another --dir", err, dir))
	}
	if err != nil {
		return c.fail(fmt.Errorf("demo: %w", err))
	}
	return exitOK
}

// demoNode starts one agent of the demo on a loopback port.
func demoNode(dir, name string, contact protocol.Participant, bootstrap []string, edit func(*agent.Config)) (*agent.Agent, error) {
	home := filepath.Join(dir, name)
	cfg := agent.DefaultConfig()
	cfg.Contact = contact
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Bootstrap, cfg.MDNS = bootstrap, false
	cfg.RetryInterval = agent.Duration(time.Second)
	if edit != nil {
		edit(&cfg)
	}
	if _, err := agent.Init(home, cfg); err != nil {
		return nil, err
	}
	return agent.New(home, agent.Options{})
}

// demo is Appendix I end to end: a directory node and two domains on 127.0.0.1. It drives
// the agents through their exported methods, as the control API does.
type demo struct {
	out     io.Writer
	dir     string
	agents  []*agent.Agent // in the order they started
	a, b    *agent.Agent   // domain A, the requester; domain B, the provider
	sink    string         // domain A's security management server: a JSON Lines file
	records int
}

// errDemoTimeout means something the demo waits for did not happen in time.
var errDemoTimeout = errors.New("timed out")

// runDemo runs the demo in dir, narrating on c's standard output.
func runDemo(ctx context.Context, c *cli, dir string, records int) error {
	d := &demo{out: c.stdout, dir: dir, records: records, sink: filepath.Join(dir, "domain-a", "management-server.jsonl")}
	d.say("ssanet demo: X.1205 Supplement 20, Appendix I, on this machine (homes in %s)\n", dir)
	defer d.close()
	if err := d.start(); err != nil {
		return err
	}
	ssaX, err := d.negotiate(ctx)
	if err != nil {
		return err
	}
	ingested, err := d.exchange(ctx, ssaX)
	if err != nil {
		return err
	}
	return d.assess(ctx, ssaX, ingested)
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

// close stops the agents in reverse order of their start.
func (d *demo) close() {
	for i := len(d.agents) - 1; i >= 0; i-- {
		if err := d.agents[i].Close(); err != nil {
			d.say("closing an agent: %v", err)
		}
	}
}

// node starts one agent of the demo (see demoNode).
func (d *demo) node(name string, contact protocol.Participant, bootstrap []string, edit func(*agent.Config)) (*agent.Agent, error) {
	n, err := demoNode(d.dir, name, contact, bootstrap, edit)
	if err == nil {
		d.agents = append(d.agents, n)
	}
	return n, err
}

// start starts the directory node, then domain B and domain A, which bootstrap from it.
func (d *demo) start() error {
	directory, err := d.node("directory", protocol.Participant{Name: "directory node"}, nil, nil)
	if err != nil {
		return err
	}
	boot := directory.Addrs()[:1]
	if d.b, err = d.node("domain-b", protocol.Participant{Affiliation: "Domain B", Name: "TMS security agent"}, boot, nil); err != nil {
		return err
	}
	if d.a, err = d.node("domain-a", protocol.Participant{Affiliation: "Domain A", Name: "security management server"}, boot,
		func(cfg *agent.Config) {
			cfg.Sinks = []agent.SinkConfig{{Name: "management-server", Type: "jsonl", Path: d.sink}}
		}); err != nil {
		return err
	}
	d.say("directory node %s\ndomain A (requester, security management server) %s\ndomain B (provider, TMS security agent) %s\n",
		directory.ID(), d.a.ID(), d.b.ID())
	return nil
}

// negotiate is steps ①–⑥: domain B offers, domain A finds it and requests, both agree on SSA-X.
func (d *demo) negotiate(ctx context.Context) (*protocol.SSA, error) {
	offer, err := d.b.AddOffer(protocol.ExampleProvider)
	if err != nil {
		return nil, err
	}
	ssaA, err := d.a.ParseTemplate(protocol.ExampleRequester)
	if err != nil {
		return nil, err
	}
	ssaA.Policy.Filtering = nil // the whole stream; the example's filter is shown by `ssanet template example`
	d.say("① SSA-A (domain A's requirements): %s, masking %s, TLP %s or stricter, retention %s",
		infoSummary(ssaA.Information), maskSummary(ssaA.Policy), ssaA.Policy.Handling.TLP, ssaA.Policy.Handling.Retention)
	d.say("  SSA-B (domain B's offer %q): %s, masking %s, TLP %s, retention %s",
		offer.ID, infoSummary(offer.Terms.Information), maskSummary(offer.Terms.Policy), offer.Terms.Policy.Handling.TLP, offer.Terms.Policy.Handling.Retention)
	provider, err := d.findProvider(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := d.a.Request(ctx, peer.AddrInfo{ID: provider}, ssaA)
	if err != nil {
		return nil, err
	}
	if rec.State != protocol.StateApproved {
		return nil, fmt.Errorf("negotiation ended %s: %v", rec.State, rec.Reasons)
	}
	agreed, err := d.a.ShowNegotiation(rec.SSAID)
	if err != nil {
		return nil, err
	}
	ssaX := agreed.SSA
	d.say("② domain A sent an SSA request with SSA-A")
	d.say("③ domain B answered with SSA-X, the meet of SSA-A and SSA-B: masking %s, TLP %s, retention %s, schedule %s",
		maskSummary(ssaX.Policy), ssaX.Policy.Handling.TLP, ssaX.Policy.Handling.Retention, scheduleSummary(ssaX.Schedule))
	signers, err := protocol.VerifySSA(ssaX)
	if err != nil {
		return nil, err
	}
	d.say("④ domain A accepted, domain B confirmed: SSA %s approved, signed by %s (%s) and %s (%s)",
		ssaX.ID, signers[0].Role, signers[0].Message, signers[1].Role, signers[1].Message)
	d.say("⑤ both negotiation points handed SSA-X to their management points")
	d.say("⑥ both management points translated SSA-X into SSP-X")
	return ssaX, nil
}

// findProvider waits until domain A finds a provider of EVE records in the directory.
func (d *demo) findProvider(ctx context.Context) (peer.ID, error) {
	var found []discovery.Provider
	var findErr error
	err := poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		found, findErr = d.a.Discover(fctx, protocol.TypeAttackDetectionLog, protocol.FormatEVE)
		return len(found) > 0, nil // else the provider's advertisement is on its way
	})
	if err != nil {
		return "", fmt.Errorf("no provider found in the directory: %v", findErr)
	}
	d.say("   discovery: the directory lists %d provider(s) of attack-detection-log/eve: %s", len(found), found[0].PeerID)
	return found[0].PeerID, nil
}

// exchange is steps ⑦–⑪: domain B refines the sensor's records and delivers them; domain A
// verifies them and forwards them to its sink.
func (d *demo) exchange(ctx context.Context, ssaX *protocol.SSA) (agent.IngestStats, error) {
	stream := demoRecords(d.records, time.Now())
	d.say("⑦ the sensor hands %d raw EVE records to domain B's enforcement point", d.records)
	st, err := d.b.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(stream))
	if err != nil {
		return st, err
	}
	queued := st.Queued[ssaX.ID]
	d.say("⑧ domain B refined them under SSP-X: %d records to share (%d malformed)", queued, st.Malformed)
	d.say("   raw:     %s", excerpt(firstLine(stream)))
	if err := d.awaitDelivery(ctx, ssaX.ID, uint64(queued)); err != nil {
		return st, err
	}
	got, err := d.a.Records(ssaX.ID, 0, 1)
	if err != nil || len(got) == 0 {
		return st, fmt.Errorf("read the delivered records: %v", err)
	}
	d.say("⑨ domain B delivered them in signed, numbered batches over %s", agent.ProtocolExchange)
	d.say("   refined: %s", excerpt(got[0].Record))
	d.say("⑩ domain A's enforcement point verified every record against SSP-X and stored it once")
	// The sink's forwarder runs in the agent: if it is slow, the line count shows how far it got.
	if err := poll(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, error) { return countLines(d.sink) >= queued, nil }); err != nil && ctx.Err() != nil {
		return st, err
	}
	d.say("⑪ and forwarded them to the security management server: %s (%d lines)", d.sink, countLines(d.sink))
	return st, nil
}

// awaitDelivery waits until domain A holds the first n records of an SSA.
func (d *demo) awaitDelivery(ctx context.Context, ssaID string, n uint64) error {
	var held uint64
	err := poll(ctx, 60*time.Second, 50*time.Millisecond, func() (bool, error) {
		in, err := d.a.Inbox(ssaID)
		held = in.Last
		return held >= n, err
	})
	if errors.Is(err, errDemoTimeout) || err != nil && ctx.Err() != nil {
		return fmt.Errorf("only %d of %d records delivered", held, n)
	}
	return err
}

// assess is steps ⑫–⑭: domain A's management point assesses SSA-X with domain B's report.
func (d *demo) assess(ctx context.Context, ssaX *protocol.SSA, st agent.IngestStats) error {
	as, err := d.a.Monitor(ctx, ssaX.ID)
	if err != nil {
		return err
	}
	d.say("⑫ domain A's management point asked domain B's for the fulfilment state of SSA-X")
	if p := as.Provider; p != nil {
		d.say("⑬ domain B replied with a signed report: ingested %d, refined %d, acknowledged %d, latency p99 %d ms",
			p.Ingested, p.Refined, p.Acked, p.LatencyP99)
	}
	d.say("⑭ verdict for the security management server: %s (phase %s)", strings.ToUpper(string(as.Verdict)), as.Phase)
	for _, r := range as.Reasons {
		d.say("   - %s", r)
	}
	d.say("\nsummary: %d raw records, %d shared, %d received and verified, %d violations, verdict %s",
		st.Records, st.Queued[ssaX.ID], as.Local.Last, as.Local.Violations, as.Verdict)
	if as.Verdict != agent.VerdictFulfilled {
		return fmt.Errorf("the SSA was not fulfilled")
	}
	return nil
}

// poll calls done every interval until it reports true or an error, for at most limit:
// errDemoTimeout if it never does, ctx's error if ctx ends first.
func poll(ctx context.Context, limit, interval time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		if ok, err := done(); ok || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errDemoTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

var (
	tsField  = regexp.MustCompile(`"timestamp":"[^"]*"`)
	srcField = regexp.MustCompile(`"src_ip":"[^"]*"`)
)

// demoRecords makes n sensor records from the bundled sample, dated now and with public
// attacker addresses.
func demoRecords(n int, now time.Time) []byte {
	lines := bytes.Split(bytes.TrimSpace(sampleEVE), []byte("\n"))
	var out bytes.Buffer
	for i := 0; i < n; i++ {
		l := tsField.ReplaceAll(lines[i%len(lines)], []byte(`"timestamp":"`+now.Add(time.Duration(i)*time.Millisecond).UTC().Format("2006-01-02T15:04:05.000000-0700")+`"`))
		l = srcField.ReplaceAll(l, []byte(`"src_ip":"`+demoAttackers[i%len(demoAttackers)]+`"`))
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

func excerpt(b []byte) string {
	if len(b) > 150 {
		return string(b[:150]) + "…"
	}
	return string(b)
}

func countLines(path string) int64 {
	b, _ := os.ReadFile(path)
	return int64(bytes.Count(b, []byte("\n")))
}

func maskSummary(p *protocol.Policy) string {
	if p == nil || len(p.Masking) == 0 {
		return "none"
	}
	var s []string
	for _, m := range p.Masking {
		d := m.Target() + " " + m.Method
		if m.Method == protocol.MaskTruncate {
			d += fmt.Sprintf(" %d bits", m.Bits)
		}
		s = append(s, d)
	}
	return strings.Join(s, ", ")
}

func scheduleSummary(s protocol.Schedule) string {
	str := func(t protocol.Time) string {
		if t == 0 {
			return "open"
		}
		return t.String()
	}
	return str(s.Start) + " to " + str(s.End)
}
