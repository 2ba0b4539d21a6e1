package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

const (
	policyApplySynopsis = "policy apply (--ssa FILE | --template FILE) --format FORMAT [--key-file FILE] [--out OUT] [IN]"
	policyCheckSynopsis = "policy check (--ssa FILE | --template FILE) --format FORMAT [--json] [IN]"
	policyUsage         = "usage:\n  ssanet " + policyApplySynopsis + "\n  ssanet " + policyCheckSynopsis + `

apply refines the records of IN (default: standard input) with the SSA's policy and writes
them to OUT (default: standard output). check verifies received records against the SSA and
lists every violation (with --json: one JSON object with the SSP, the number of records and
the violations). --ssa is a canonical CBOR SSA, --template a YAML SSA template.
Exit codes: 0 ok (check: no violation), 1 error or violations (apply: a bad record), 2 usage.
`
)

// cmdPolicy runs "ssanet policy apply|check" offline, on files or standard input.
func cmdPolicy(c *cli, args []string) int {
	if code, done := c.subcommandUsage(args, policyUsage); done {
		return code
	}
	sub := args[0]
	var fs *flag.FlagSet
	switch sub {
	case "apply":
		fs = c.plainFlags("policy apply", policyApplySynopsis) // it prints the refined records
	case "check":
		fs = c.flags("policy check", policyCheckSynopsis)
	default:
		fmt.Fprintf(c.stderr, "ssanet: policy: unknown subcommand %q\n%s", sub, policyUsage)
		return exitUsage
	}
	fs.Usage = func() {
		fmt.Fprint(c.stderr, policyUsage)
		fs.PrintDefaults()
	}
	ssaFile := fs.String("ssa", "", "agreed SSA, canonical CBOR `FILE`")
	tmplFile := fs.String("template", "", "SSA template, YAML `FILE`")
	format := fs.String("format", "", "record format: "+strings.Join(policy.Formats(), ", "))
	var keyFile, outFile *string
	if sub == "apply" {
		keyFile = fs.String("key-file", "", "`FILE` holding the 32-byte masking key as 64 hex digits, for every key-id and as the per-SSA key (default: a random key)")
		outFile = fs.String("out", "", "write refined records to `FILE` (default: standard output)")
	}
	pos, code := c.parse(fs, args[1:])
	if code >= 0 {
		return code
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(c.stderr, "ssanet: policy %s: %s\n", sub, fmt.Sprintf(format, a...))
		return exitUsage
	}
	switch {
	case (*ssaFile == "") == (*tmplFile == ""):
		return bad("give one of --ssa and --template")
	case *format == "":
		return bad("--format is required")
	case !slices.Contains(policy.Formats(), *format):
		return bad("unknown format %q (want one of %s)", *format, strings.Join(policy.Formats(), ", "))
	case len(pos) > 1:
		return bad("at most one input file")
	}
	fail := func(err error) int {
		fmt.Fprintf(c.stderr, "ssanet: policy %s: %v\n", sub, err)
		return exitError
	}
	ssa, err := loadPolicySSA(*ssaFile, *tmplFile, *format)
	if err != nil {
		return fail(err)
	}
	in := c.stdin
	if len(pos) == 1 && pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		in = f
	}
	ctx := context.Background()
	if sub == "check" {
		return policyCheck(ctx, c, ssa, *format, in)
	}
	keys, err := policyKeys(*keyFile, c.stderr)
	if err != nil {
		return fail(err)
	}
	p, err := policy.Compile(ssa, keys)
	if err != nil {
		return fail(err)
	}
	e, err := policy.NewEnforcer(p, *format, policy.Config{Year: time.Now().Year()})
	if err != nil {
		return fail(err)
	}
	out := c.stdout
	if *outFile != "" {
		f, err := os.Create(*outFile)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		out = f
	}
	st, err := e.Run(ctx, in, out)
	if err != nil {
		return fail(err)
	}
	if f, ok := out.(io.Closer); ok && out != c.stdout {
		if err := f.Close(); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(c.stderr, "ssanet: policy apply: ssp %s: %d records, %d refined, %d filtered, %d filter errors, %d outside schedule, %d summaries, %d malformed\n",
		p.Hash()[:16], st.Records, st.Refined, st.Filtered, st.FilterErrors, st.OutsideSchedule, st.Summaries, st.Malformed)
	for _, b := range st.Bad {
		fmt.Fprintf(c.stderr, "ssanet: policy apply: skipped %v\n", b)
	}
	if st.Malformed > 0 {
		return exitError
	}
	return exitOK
}

// violation is one finding of policy check as --json prints it.
type violation struct {
	Line   int                `json:"line"`
	Offset int64              `json:"byte"`
	Code   policy.FindingCode `json:"code"`
	Field  string             `json:"field,omitempty"`
	Text   string             `json:"text"`
}

func policyCheck(ctx context.Context, c *cli, ssa *protocol.SSA, format string, in io.Reader) int {
	p, err := policy.Compile(ssa, nil)
	if err != nil {
		fmt.Fprintf(c.stderr, "ssanet: policy check: %v\n", err)
		return exitError
	}
	found, n, err := policy.VerifyStream(ctx, p, format, in)
	if err != nil {
		fmt.Fprintf(c.stderr, "ssanet: policy check: %v\n", err)
		return exitError
	}
	violations := []violation{}
	for _, r := range found {
		for _, f := range r.Findings {
			violations = append(violations, violation{r.Line, r.Offset, f.Code, f.Field, f.Text})
			if !c.json {
				fmt.Fprintf(c.stdout, "line %d (byte %d): %s\n", r.Line, r.Offset, f)
			}
		}
	}
	fmt.Fprintf(c.stderr, "ssanet: policy check: ssp %s: %d records, %d with violations, %d violations\n", p.Hash()[:16], n, len(found), len(violations))
	if c.json {
		if code := c.printJSON(map[string]any{"ssp": p.Hash(), "records": n, "violations": violations}); code != exitOK {
			return code
		}
	}
	if len(violations) > 0 {
		return exitError
	}
	return exitOK
}

// loadPolicySSA reads the SSA. A template that names no information is given the format.
func loadPolicySSA(ssaFile, tmplFile, format string) (*protocol.SSA, error) {
	if ssaFile != "" {
		b, err := os.ReadFile(ssaFile)
		if err != nil {
			return nil, err
		}
		return protocol.DecodeSSA(b)
	}
	b, err := os.ReadFile(tmplFile)
	if err != nil {
		return nil, err
	}
	ssa, err := protocol.ParseSSAYAML(b, time.Now())
	if err != nil {
		return nil, err
	}
	if len(ssa.Information) == 0 {
		ssa.Information = []protocol.Information{{Type: protocol.TypeAttackDetectionLog, Format: format}}
	}
	return ssa, nil
}

// policyKeys reads the masking key from a file of 64 hex digits, or makes a random one.
func policyKeys(keyFile string, stderr io.Writer) (policy.KeySource, error) {
	if keyFile == "" {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		fmt.Fprintln(stderr, "ssanet: policy apply: no --key-file: cryptopan and hmac rules use a random key, not kept")
		return policy.StaticKey(k), nil
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("%s: want 64 hex digits (32 bytes)", keyFile)
	}
	return policy.StaticKey(k), nil
}
