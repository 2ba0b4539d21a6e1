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

const policyUsage = `usage:
  ssanet policy apply (--ssa FILE | --template FILE) --format FORMAT [--key-file FILE] [--out OUT] [IN]
  ssanet policy check (--ssa FILE | --template FILE) --format FORMAT [IN]

apply refines the records of IN (default: standard input) with the SSA's policy and writes
them to OUT (default: standard output). check verifies received records against the SSA and
lists every violation. --ssa is a canonical CBOR SSA, --template a YAML SSA template.
Exit codes: 0 ok (check: no violation), 1 error or violations (apply: a bad record), 2 usage.
`

// cmdPolicy runs "ssanet policy apply|check" offline, on files or standard input.
func cmdPolicy(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, policyUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	sub := args[0]
	if sub != "apply" && sub != "check" {
		fmt.Fprintf(stderr, "ssanet: policy: unknown subcommand %q\n%s", sub, policyUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("policy "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage) }
	ssaFile := fs.String("ssa", "", "agreed SSA, canonical CBOR `FILE`")
	tmplFile := fs.String("template", "", "SSA template, YAML `FILE`")
	format := fs.String("format", "", "record format: "+strings.Join(policy.Formats(), ", "))
	var keyFile, outFile *string
	if sub == "apply" {
		keyFile = fs.String("key-file", "", "`FILE` holding the 32-byte masking key as 64 hex digits (default: a random key)")
		outFile = fs.String("out", "", "write refined records to `FILE` (default: standard output)")
	}
	pos, code := parse(fs, args[1:])
	if code >= 0 {
		return code
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ssanet: policy %s: %s\n", sub, fmt.Sprintf(format, a...))
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
		fmt.Fprintf(stderr, "ssanet: policy %s: %v\n", sub, err)
		return exitError
	}
	ssa, err := loadPolicySSA(*ssaFile, *tmplFile, *format)
	if err != nil {
		return fail(err)
	}
	in := stdin
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
		return policyCheck(ctx, ssa, *format, in, stdout, stderr)
	}
	keys, err := policyKeys(*keyFile, stderr)
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
	out := stdout
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
	if c, ok := out.(io.Closer); ok && out != stdout {
		if err := c.Close(); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(stderr, "ssanet: policy apply: ssp %s: %d records, %d refined, %d filtered, %d filter errors, %d outside schedule, %d summaries, %d malformed\n",
		p.Hash()[:16], st.Records, st.Refined, st.Filtered, st.FilterErrors, st.OutsideSchedule, st.Summaries, st.Malformed)
	for _, b := range st.Bad {
		fmt.Fprintf(stderr, "ssanet: policy apply: skipped %v\n", b)
	}
	if st.Malformed > 0 {
		return exitError
	}
	return exitOK
}

func policyCheck(ctx context.Context, ssa *protocol.SSA, format string, in io.Reader, stdout, stderr io.Writer) int {
	p, err := policy.Compile(ssa, nil)
	if err != nil {
		fmt.Fprintf(stderr, "ssanet: policy check: %v\n", err)
		return exitError
	}
	found, n, err := policy.VerifyStream(ctx, p, format, in)
	if err != nil {
		fmt.Fprintf(stderr, "ssanet: policy check: %v\n", err)
		return exitError
	}
	violations := 0
	for _, r := range found {
		for _, f := range r.Findings {
			fmt.Fprintf(stdout, "line %d (byte %d): %s\n", r.Line, r.Offset, f)
			violations++
		}
	}
	fmt.Fprintf(stderr, "ssanet: policy check: ssp %s: %d records, %d with violations, %d violations\n", p.Hash()[:16], n, len(found), violations)
	if violations > 0 {
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
		fmt.Fprintln(stderr, "ssanet: policy apply: no --key-file: cryptopan and hmac rules without a key use a random key, not kept")
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
