package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/policy"
	"github.com/ssanet/ssanet/protocol"
)

const policyLong = `apply refines the records of IN (default: standard input) with the SSA's policy and writes
them to OUT (default: standard output). check verifies received records against the SSA and
lists every violation (with --json: one JSON object with the SSP, the number of records and
the violations). --ssa is a canonical CBOR SSA, --template a YAML SSA template.
Exit codes: 0 ok (check: no violation), 1 error or violations (apply: a bad record), 2 usage.`

// policyArgs are the arguments of policy apply|check.
type policyArgs struct {
	sub               string // apply or check
	ssaFile, tmplFile string // one of them
	format            string
	keyFile, outFile  string // apply only
	in                string // the input file; "" or "-": standard input
}

func (c *cli) policyCommand() *cobra.Command {
	return c.group("policy", "refine or verify records offline", policyLong,
		c.policySubcommand("apply (--ssa FILE|--template FILE) --format F [--key-file FILE] [--out OUT] [IN]",
			"refine records offline exactly as a peer would receive them", noData), // it prints the refined records
		c.policySubcommand("check (--ssa FILE|--template FILE) --format F [IN]",
			"verify records offline against an SSA; exit 1 with the violations", printsData))
}

// policySubcommand defines policy apply or check (the first word of use), which run offline,
// on files or standard input.
func (c *cli) policySubcommand(use, short string, data bool) *cobra.Command {
	pa := policyArgs{sub: strings.Fields(use)[0]}
	cmd := c.command(use, short, data, nargs(0, 1), func(a []string) int {
		if len(a) == 1 {
			pa.in = a[0]
		}
		if code := c.checkPolicyArgs(pa); code >= 0 {
			return code
		}
		return c.policy(pa)
	})
	cmd.Long = policyLong
	f := cmd.Flags()
	f.StringVar(&pa.ssaFile, "ssa", "", "agreed SSA, canonical CBOR `FILE`")
	f.StringVar(&pa.tmplFile, "template", "", "SSA template, YAML `FILE`")
	f.StringVar(&pa.format, "format", "", "record format `F`: "+strings.Join(policy.Formats(), ", "))
	completeFlag(cmd, "format", complete(policy.Formats()...))
	if pa.sub == "apply" {
		f.StringVar(&pa.keyFile, "key-file", "", "`FILE` holding the 32-byte masking key as 64 hex digits, for every key-id and as the per-SSA key (default: a random key)")
		f.StringVar(&pa.outFile, "out", "", "write refined records to `OUT` (default: standard output)")
	}
	return cmd
}

func (c *cli) policy(pa policyArgs) int {
	ssa, err := loadPolicySSA(pa.ssaFile, pa.tmplFile, pa.format)
	if err != nil {
		return c.policyFail(pa.sub, err)
	}
	in := c.stdin
	if pa.in != "" && pa.in != "-" {
		f, err := os.Open(pa.in)
		if err != nil {
			return c.policyFail(pa.sub, err)
		}
		defer f.Close()
		in = f
	}
	if pa.sub == "check" {
		return policyCheck(context.Background(), c, ssa, pa.format, in)
	}
	return c.policyApply(pa, ssa, in)
}

// checkPolicyArgs returns exitUsage, having said why, if the arguments do not go together,
// else -1.
func (c *cli) checkPolicyArgs(pa policyArgs) int {
	bad := func(format string, a ...any) int {
		fmt.Fprintf(c.stderr, "ssanet: policy %s: %s\n", pa.sub, fmt.Sprintf(format, a...))
		return exitUsage
	}
	switch {
	case (pa.ssaFile == "") == (pa.tmplFile == ""):
		return bad("give one of --ssa and --template")
	case pa.format == "":
		return bad("--format is required")
	case !slices.Contains(policy.Formats(), pa.format):
		return bad("unknown format %q (want one of %s)", pa.format, strings.Join(policy.Formats(), ", "))
	}
	return -1
}

func (c *cli) policyFail(sub string, err error) int {
	fmt.Fprintf(c.stderr, "ssanet: policy %s: %v\n", sub, err)
	return exitError
}

// policyApply refines the records of in with the SSA's policy, as an enforcement point would.
func (c *cli) policyApply(pa policyArgs, ssa *protocol.SSA, in io.Reader) int {
	keys, err := policyKeys(pa.keyFile, c.stderr)
	if err != nil {
		return c.policyFail(pa.sub, err)
	}
	p, err := policy.Compile(ssa, keys)
	if err != nil {
		return c.policyFail(pa.sub, err)
	}
	e, err := policy.NewEnforcer(p, pa.format, policy.Config{Year: time.Now().Year()})
	if err != nil {
		return c.policyFail(pa.sub, err)
	}
	st, err := c.refineTo(pa.outFile, e, in)
	if err != nil {
		return c.policyFail(pa.sub, err)
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

// refineTo runs e over in and writes the refined records to the file outFile, or to standard
// output if it is "".
func (c *cli) refineTo(outFile string, e *policy.Enforcer, in io.Reader) (policy.Stats, error) {
	if outFile == "" {
		return e.Run(context.Background(), in, c.stdout)
	}
	f, err := os.Create(outFile)
	if err != nil {
		return policy.Stats{}, err
	}
	st, err := e.Run(context.Background(), in, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return st, err
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
