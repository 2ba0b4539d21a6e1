package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/protocol"
)

func (c *cli) templateCommand() *cobra.Command {
	example := c.command("example [requester|provider]", "print an annotated SSA template (default: requester)", noData, nargs(0, 1), func(a []string) int {
		text := protocol.ExampleRequester
		if len(a) == 1 {
			switch a[0] {
			case "requester":
			case "provider":
				text = protocol.ExampleProvider
			default:
				return c.usageError("template example: %q is neither requester nor provider", a[0])
			}
		}
		if _, err := c.stdout.Write(text); err != nil {
			return c.fail(fmt.Errorf("write the template: %w", err))
		}
		return exitOK
	})
	example.ValidArgsFunction = complete("requester", "provider")
	return c.group("template", "print an annotated SSA template", "", example)
}

func (c *cli) ssaCommand() *cobra.Command {
	return c.group("ssa", "negotiations and agreements", "",
		c.command("list", "every negotiation: SSA ID, role, state, life-cycle phase, peer", printsData, nargs(0, 0), func([]string) int { return c.ssaList() }),
		c.withSSA("show ID", "one negotiation: state, phase, notes, conflicts, versions, the SSA", printsData, c.ssaShow),
		c.ssaApproveCommand(), c.ssaDeclineCommand(), c.ssaCancelCommand(), c.ssaReviseCommand(), c.ssaExportCommand(),
		c.command("verify FILE", "verify offline an exported SSA or transcript", printsData, nargs(1, 1), func(a []string) int { return c.ssaVerify(a[0]) }),
		c.ssaTranscriptCommand())
}

func (c *cli) ssaVerify(file string) int {
	data, err := os.ReadFile(file)
	if err != nil {
		return c.fail(fmt.Errorf("read the exported SSA: %w", err))
	}
	if msgs, err := protocol.DecodeTranscript(data); !errors.Is(err, protocol.ErrNotTranscript) {
		return c.verifyTranscript(file, msgs, err)
	}
	s, err := protocol.DecodeSSA(data)
	var signers []protocol.Signer
	if err == nil {
		signers, err = protocol.VerifySSA(s)
	}
	if c.json {
		out := map[string]any{"valid": err == nil, "file": file}
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
		fmt.Fprintf(c.stdout, "INVALID: %s: %v\n", file, err)
		return exitError
	}
	fmt.Fprintf(c.stdout, "VALID: SSA %s version %d, status %s\n", s.ID, s.Version, s.Status)
	for _, sg := range signers {
		fmt.Fprintf(c.stdout, "  %-9s %s (%s) signed the %s at %s\n", sg.Role, sg.PeerID, sg.Name,
			sg.Message, time.UnixMilli(sg.Time).UTC().Format(time.RFC3339))
	}
	return exitOK
}
