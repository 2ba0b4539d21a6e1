package agent

import (
	"slices"

	"github.com/ssanet/ssanet/protocol"
)

// Records are kept, on both sides, behind one byte: the index of their format in the SSA's
// information list (unknownFormat for a format the SSA does not name), so that a batch never
// mixes formats and a forwarded record says what it is.
// The requester sets quarantineBit in the tag of a record that does not comply with the SSA
// (policy.Verify found something, or its whole batch is at fault): it is kept, shown by
// Records, and never forwarded to a sink. A record of a format the SSA does not name
// (unknownFormat) never complies.
const (
	unknownFormat = 0x7f
	quarantineBit = 0x80
)

func (run *agreementRun) formatTag(format string) byte {
	if i := slices.IndexFunc(run.ssa.Information, func(in protocol.Information) bool { return in.Format == format }); i >= 0 && i < unknownFormat {
		return byte(i)
	}
	return unknownFormat
}

// untag splits a kept record into its format ("" if unknown) and its bytes.
func (run *agreementRun) untag(data []byte) (string, []byte) {
	if len(data) == 0 || int(data[0]&^quarantineBit) >= len(run.ssa.Information) {
		return "", data[min(len(data), 1):]
	}
	return run.ssa.Information[data[0]&^quarantineBit].Format, data[1:]
}

// quarantined reports whether a kept record does not comply with the SSA.
func quarantined(data []byte) bool { return len(data) > 0 && data[0]&quarantineBit != 0 }

// retag copies tagged records with another format tag.
func retag(recs [][]byte, tag byte) [][]byte {
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = append([]byte{tag}, r[1:]...)
	}
	return out
}
