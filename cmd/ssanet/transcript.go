package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
	"github.com/ssanet/ssanet/protocol"
)

func (c *cli) ssaTranscriptCommand() *cobra.Command {
	var export string
	cmd := c.withSSA("transcript ID [--export FILE]", "the signed, hash-chained messages of a negotiation", printsData,
		func(id string) int { return c.ssaTranscript(ssaPath(id), export) })
	cmd.Flags().StringVar(&export, "export", "", "write every signed message, as sent and received, to `FILE` (- for standard output), for ssanet ssa verify")
	return cmd
}

func (c *cli) ssaTranscript(path, export string) int {
	if export == "" {
		return getAndPrint(c, path+"/transcript", func(ms []agent.MessageView) {
			for i, m := range ms {
				fmt.Fprintf(c.stdout, "%2d %-12s %s from %s ssa %s %s\n", i+1, m.Type, m.Time, m.Sender, m.SSAID, m.Status)
			}
		})
	}
	if export == "-" && c.json {
		return c.usageError("ssa transcript: --export - writes CBOR to standard output; run it without --json")
	}
	var b []byte
	if err := c.api("GET", path+"/transcript/export", nil, &b); err != nil {
		return c.apiFail(err)
	}
	if export == "-" {
		if _, err := c.stdout.Write(b); err != nil {
			return c.fail(fmt.Errorf("write the transcript: %w", err))
		}
		return exitOK
	}
	if err := os.WriteFile(export, b, 0o600); err != nil {
		return c.fail(fmt.Errorf("write the transcript: %w", err))
	}
	if c.json {
		return c.printJSON(map[string]any{"file": export, "bytes": len(b)})
	}
	fmt.Fprintf(c.stderr, "wrote %s (verify it with: ssanet ssa verify %s)\n", export, export)
	return exitOK
}

// transcriptMessage is one message of a verified transcript, as ssa verify --json shows it.
type transcriptMessage struct {
	Type    protocol.MsgType `json:"type"`
	Sender  string           `json:"sender"`
	Time    string           `json:"time"`
	ID      string           `json:"id"`
	Prev    string           `json:"prev,omitempty"`
	Hash    string           `json:"hash"`
	SSAID   string           `json:"ssa_id"`
	Status  string           `json:"status,omitempty"`
	GaveWay bool             `json:"gave_way,omitempty"`
}

// verifyTranscript prints the verdict on an exported transcript whose messages are msgs (or
// that did not decode: err): exit 0 when valid, 1 with the reason when not.
func (c *cli) verifyTranscript(file string, msgs [][]byte, err error) int {
	var check *protocol.TranscriptCheck
	if err == nil {
		check, err = protocol.VerifyTranscript(msgs)
	}
	if err != nil {
		if c.json {
			c.printJSON(map[string]any{"valid": false, "kind": "transcript", "file": file, "error": err.Error()})
		} else {
			fmt.Fprintf(c.stdout, "INVALID: %s: transcript: %v\n", file, err)
		}
		return exitError
	}
	var list []transcriptMessage
	gaveWay := map[int]bool{}
	for _, i := range check.GaveWay {
		gaveWay[i] = true
	}
	for i, e := range check.Messages {
		m := transcriptMessage{Type: e.Header.Type, Sender: e.Sender.String(), ID: hex.EncodeToString(e.Header.ID),
			Prev: hex.EncodeToString(e.Header.Prev), Hash: hex.EncodeToString(e.Hash()), GaveWay: gaveWay[i],
			Time: time.UnixMilli(e.Header.Time).UTC().Format(time.RFC3339Nano)}
		if e.SSA != nil {
			m.SSAID, m.Status = e.SSA.ID, e.SSA.Status.String()
		} else {
			m.SSAID = e.Rejection.SSAID
		}
		list = append(list, m)
	}
	var sum string
	if check.Agreement != nil {
		b, err := check.Agreement.Encode()
		if err != nil {
			return c.fail(err)
		}
		h := sha256.Sum256(b)
		sum = hex.EncodeToString(h[:])
	}
	if c.json {
		out := map[string]any{"valid": true, "kind": "transcript", "file": file,
			"negotiation": hex.EncodeToString(check.Negotiation),
			"requester":   map[string]any{"peer_id": check.Requester.String(), "state": check.RequesterState},
			"provider":    map[string]any{"peer_id": check.Provider.String(), "state": check.ProviderState},
			"messages":    list}
		if check.Agreement != nil {
			out["agreement"], out["agreement_sha256"], out["signers"] = check.Agreement, sum, check.Signers
		}
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "VALID: transcript of negotiation %x: %d messages, every signature and the hash chain check, and each side accepted what the other sent\n",
		check.Negotiation, len(list))
	fmt.Fprintf(c.stdout, "  requester %s ends %s\n  provider  %s ends %s\n", check.Requester, check.RequesterState, check.Provider, check.ProviderState)
	for i, m := range list {
		note := ""
		if m.GaveWay {
			note = " (crossed the peer's and gave way)"
		}
		fmt.Fprintf(c.stdout, "  %2d %-12s %s from %s ssa %s %s%s\n", i+1, m.Type, m.Time, m.Sender, m.SSAID, m.Status, note)
	}
	if a := check.Agreement; a != nil {
		fmt.Fprintf(c.stdout, "  agreement: SSA %s version %d, status %s, sha256 %s (the bytes ssa export writes)\n", a.ID, a.Version, a.Status, sum)
		for _, sg := range check.Signers {
			fmt.Fprintf(c.stdout, "    %-9s %s (%s) signed the %s at %s\n", sg.Role, sg.PeerID, sg.Name,
				sg.Message, time.UnixMilli(sg.Time).UTC().Format(time.RFC3339))
		}
	} else {
		fmt.Fprintf(c.stdout, "  agreement: none\n")
	}
	return exitOK
}
