package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

func cmdTemplate(c *cli, args []string) int {
	fs := c.plainFlags("template", "template example [requester|provider]")
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) == 0 || pos[0] != "example" || len(pos) > 2 {
		return c.usageError("usage: ssanet template example [requester|provider]")
	}
	which := "requester"
	if len(pos) == 2 {
		which = pos[1]
	}
	var text []byte
	switch which {
	case "requester":
		text = protocol.ExampleRequester
	case "provider":
		text = protocol.ExampleProvider
	default:
		return c.usageError("template example: %q is neither requester nor provider", which)
	}
	if _, err := c.stdout.Write(text); err != nil {
		return c.fail(fmt.Errorf("write the template: %w", err))
	}
	return exitOK
}

// subcommand is a subcommand's name, synopsis and what runs it.
type subcommand struct {
	name, synopsis string
	run            func(c *cli, synopsis string, args []string) int
}

// ssaSubcommands are the ssa subcommands, in the order help lists them.
var ssaSubcommands = []subcommand{
	{"list", "ssa list", cmdSSAList},
	{"show", "ssa show ID", cmdSSAShow},
	{"approve", "ssa approve ID [--wait D]", cmdSSAApprove},
	{"decline", "ssa decline ID [--reason R] [--wait D]", cmdSSADecline},
	{"cancel", "ssa cancel ID [--wait D]", cmdSSACancel},
	{"revise", "ssa revise ID [--template FILE] [--set PATH=VALUE]... [--wait D]", cmdSSARevise},
	{"export", "ssa export ID [--out FILE]", cmdSSAExport},
	{"verify", "ssa verify FILE", cmdSSAVerify},
	{"transcript", "ssa transcript ID [--export FILE]", cmdSSATranscript},
}

// ssaSynopsis is every ssa subcommand on one line.
func ssaSynopsis() string {
	s := make([]string, len(ssaSubcommands))
	for i, sc := range ssaSubcommands {
		s[i] = strings.TrimPrefix(sc.synopsis, "ssa ")
	}
	return "ssa " + strings.Join(s, " | ")
}

func cmdSSA(c *cli, args []string) int {
	usage := "usage:\n"
	for _, sc := range ssaSubcommands {
		usage += "  ssanet " + sc.synopsis + "\n"
	}
	usage += "Each subcommand's flags: ssanet ssa SUBCOMMAND --help\n"
	if code, done := c.subcommandUsage(args, usage); done {
		return code
	}
	i := slices.IndexFunc(ssaSubcommands, func(sc subcommand) bool { return sc.name == args[0] })
	if i < 0 {
		return c.usageError("ssa: unknown subcommand %q; run ssanet ssa --help for the list", args[0])
	}
	sc := ssaSubcommands[i]
	return sc.run(c, sc.synopsis, args[1:])
}

func cmdSSAVerify(c *cli, synopsis string, args []string) int {
	fs := c.flags("ssa verify", synopsis)
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("usage: ssanet %s", synopsis)
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return c.fail(fmt.Errorf("read the exported SSA: %w", err))
	}
	if msgs, err := protocol.DecodeTranscript(data); !errors.Is(err, protocol.ErrNotTranscript) {
		return c.verifyTranscript(pos[0], msgs, err)
	}
	s, err := protocol.DecodeSSA(data)
	var signers []protocol.Signer
	if err == nil {
		signers, err = protocol.VerifySSA(s)
	}
	if c.json {
		out := map[string]any{"valid": err == nil, "file": pos[0]}
		if err != nil {
			out["error"] = err.Error()
		} else {
			out["ssa"], out["signers"] = s, signers
		}
		c.printJSON(out)
		if err != nil {
			return exitError
		}
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(c.stdout, "INVALID: %s: %v\n", pos[0], err)
		return exitError
	}
	fmt.Fprintf(c.stdout, "VALID: SSA %s version %d, status %s\n", s.ID, s.Version, s.Status)
	for _, sg := range signers {
		fmt.Fprintf(c.stdout, "  %-9s %s (%s) signed the %s at %s\n", sg.Role, sg.PeerID, sg.Name,
			sg.Message, time.UnixMilli(sg.Time).UTC().Format(time.RFC3339))
	}
	return exitOK
}
