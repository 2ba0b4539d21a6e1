package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ssanet/ssanet/agent"
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

func cmdDemo(c *cli, args []string) int {
	fs := c.plainFlags("demo", "demo [--dir DIR] [--records N]") // narration
	dir := fs.String("dir", "", "where the three agents' homes go (default: a new temporary directory)")
	records := fs.Int("records", 600, "how many sensor records to stream")
	if code := c.parseFlags(fs, args); code >= 0 {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir == "" {
		d, err := os.MkdirTemp("", "ssanet-demo-")
		if err != nil {
			return c.fail(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	err := runDemo(ctx, c, *dir, *records)
	if errors.Is(err, agent.ErrInitialised) {
		return c.fail(fmt.Errorf("demo: %w: %s holds an earlier demo's agents; remove it, or give another --dir", err, *dir))
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

// runDemo is Appendix I end to end: a directory node and two domains on 127.0.0.1.
func runDemo(ctx context.Context, c *cli, dir string, records int) error {
	say := func(format string, a ...any) { fmt.Fprintf(c.stdout, format+"\n", a...) }
	say("ssanet demo: X.1205 Supplement 20, Appendix I, on this machine (homes in %s)\n", dir)

	directory, err := demoNode(dir, "directory", protocol.Participant{Name: "directory node"}, nil, nil)
	if err != nil {
		return err
	}
	defer directory.Close()
	boot := directory.Addrs()[:1]
	b, err := demoNode(dir, "domain-b", protocol.Participant{Affiliation: "Domain B", Name: "TMS security agent"}, boot, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	sink := filepath.Join(dir, "domain-a", "management-server.jsonl")
	a, err := demoNode(dir, "domain-a", protocol.Participant{Affiliation: "Domain A", Name: "security management server"}, boot,
		func(cfg *agent.Config) {
			cfg.Sinks = []agent.SinkConfig{{Name: "management-server", Type: "jsonl", Path: sink}}
		})
	if err != nil {
		return err
	}
	defer a.Close()
	say("directory node %s\ndomain A (requester, security management server) %s\ndomain B (provider, TMS security agent) %s\n",
		directory.ID(), a.ID(), b.ID())

	now := time.Now()
	offer, err := protocol.ParseOfferYAML(protocol.ExampleProvider, now)
	if err != nil {
		return err
	}
	offer.Terms.Participants.Provider.PeerID = b.ID().String()
	if err := b.Store().PutOffer(offer); err != nil {
		return err
	}
	b.Directory().Readvertise()
	ssaA, err := protocol.ParseSSAYAML(protocol.ExampleRequester, now)
	if err != nil {
		return err
	}
	ssaA.Policy.Filtering = nil // the whole stream; the example's filter is shown by `ssanet template example`
	say("① SSA-A (domain A's requirements): %s, masking %s, TLP %s or stricter, retention %s",
		infoSummary(ssaA.Information), maskSummary(ssaA.Policy), ssaA.Policy.Handling.TLP, ssaA.Policy.Handling.Retention)
	say("  SSA-B (domain B's offer %q): %s, masking %s, TLP %s, retention %s",
		offer.ID, infoSummary(offer.Terms.Information), maskSummary(offer.Terms.Policy), offer.Terms.Policy.Handling.TLP, offer.Terms.Policy.Handling.Retention)

	var providers []peer.ID
	deadline := time.Now().Add(30 * time.Second)
	for len(providers) == 0 {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		found, err := a.Directory().Find(fctx, protocol.TypeAttackDetectionLog, protocol.FormatEVE)
		cancel()
		for _, p := range found {
			providers = append(providers, p.PeerID)
		}
		if len(providers) == 0 {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("no provider found in the directory: %v", err)
			}
			time.Sleep(200 * time.Millisecond) // the provider's advertisement is on its way
		}
	}
	say("   discovery: the directory lists %d provider(s) of attack-detection-log/eve: %s", len(providers), providers[0])

	rec, err := a.Request(ctx, peer.AddrInfo{ID: providers[0]}, ssaA)
	if err != nil {
		return err
	}
	if rec.State != protocol.StateApproved {
		return fmt.Errorf("negotiation ended %s: %v", rec.State, rec.Reasons)
	}
	ssaX, err := a.Store().Agreement(rec.SSAID)
	if err != nil {
		return err
	}
	say("② domain A sent an SSA request with SSA-A")
	say("③ domain B answered with SSA-X, the meet of SSA-A and SSA-B: masking %s, TLP %s, retention %s, schedule %s",
		maskSummary(ssaX.Policy), ssaX.Policy.Handling.TLP, ssaX.Policy.Handling.Retention, scheduleSummary(ssaX.Schedule))
	signers, err := protocol.VerifySSA(ssaX)
	if err != nil {
		return err
	}
	say("④ domain A accepted, domain B confirmed: SSA %s approved, signed by %s (%s) and %s (%s)",
		ssaX.ID, signers[0].Role, signers[0].Message, signers[1].Role, signers[1].Message)
	say("⑤ both negotiation points handed SSA-X to their management points")
	say("⑥ both management points translated SSA-X into SSP-X")

	stream := demoRecords(records, time.Now())
	say("⑦ the sensor hands %d raw EVE records to domain B's enforcement point", records)
	st, err := b.Ingest(ctx, protocol.FormatEVE, bytes.NewReader(stream))
	if err != nil {
		return err
	}
	queued := st.Queued[ssaX.ID]
	say("⑧ domain B refined them under SSP-X: %d records to share (%d malformed)", queued, st.Malformed)
	first := firstLine(stream)
	say("   raw:     %s", excerpt(first))

	deadline = time.Now().Add(60 * time.Second)
	var inbox uint64
	for inbox < uint64(queued) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d records delivered", inbox, queued)
		}
		time.Sleep(50 * time.Millisecond)
		s, err := a.Store().InboxState(ssaX.ID)
		if err != nil {
			return err
		}
		inbox = s.Last
	}
	got, err := a.Records(ssaX.ID, 0, 1)
	if err != nil || len(got) == 0 {
		return fmt.Errorf("read the delivered records: %v", err)
	}
	say("⑨ domain B delivered them in signed, numbered batches over %s", agent.ProtocolExchange)
	say("   refined: %s", excerpt(got[0].Record))
	say("⑩ domain A's enforcement point verified every record against SSP-X and stored it once")
	for deadline := time.Now().Add(30 * time.Second); countLines(sink) < queued && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // the sink's forwarder runs in the agent
	}
	say("⑪ and forwarded them to the security management server: %s (%d lines)", sink, countLines(sink))

	as, err := a.Monitor(ctx, ssaX.ID)
	if err != nil {
		return err
	}
	say("⑫ domain A's management point asked domain B's for the fulfilment state of SSA-X")
	if p := as.Provider; p != nil {
		say("⑬ domain B replied with a signed report: ingested %d, refined %d, acknowledged %d, latency p99 %d ms",
			p.Ingested, p.Refined, p.Acked, p.LatencyP99)
	}
	say("⑭ verdict for the security management server: %s (phase %s)", strings.ToUpper(as.Verdict), as.Phase)
	for _, r := range as.Reasons {
		say("   - %s", r)
	}
	say("\nsummary: %d raw records, %d shared, %d received and verified, %d violations, verdict %s",
		st.Records, queued, as.Local.Last, as.Local.Violations, as.Verdict)
	if as.Verdict != agent.VerdictFulfilled {
		return fmt.Errorf("the SSA was not fulfilled")
	}
	return nil
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
