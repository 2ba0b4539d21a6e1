package main

import (
	"fmt"
	"os"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

func cmdTemplate(c *cli, args []string) int {
	fs := c.flags("template", "template example [requester|provider]")
	pos, code := parse(fs, args)
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
	c.stdout.Write(text)
	return exitOK
}

func cmdSSA(c *cli, args []string) int {
	if len(args) == 0 {
		return c.usageError("usage: ssanet ssa list | show ID | approve ID | decline ID | cancel ID | revise ID --template FILE | export ID [--out FILE] | verify FILE | transcript ID")
	}
	switch args[0] {
	case "verify":
		return cmdSSAVerify(c, args[1:])
	case "list":
		return cmdSSAList(c, args[1:])
	case "show", "approve", "decline", "cancel", "revise", "export", "transcript":
		return cmdSSAOne(c, args[0], args[1:])
	}
	return c.usageError("ssa: unknown subcommand %q (want list, show, approve, decline, cancel, revise, export, verify or transcript)", args[0])
}

func cmdSSAVerify(c *cli, args []string) int {
	fs := c.flags("ssa verify", "ssa verify FILE")
	pos, code := parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("usage: ssanet ssa verify FILE")
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return c.fail(fmt.Errorf("read the exported SSA: %w", err))
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
