package agent

import (
	"fmt"
	"net/http"

	"github.com/ssanet/ssanet/protocol"
	"github.com/ssanet/ssanet/storage"
)

// ExportTranscript is the negotiation of an SSA (any version's ID) as an exported transcript
// (protocol.EncodeTranscript): every signed message, byte for byte as this agent sent and
// received it, in order, for anyone to check with `ssanet ssa verify` or the README alone.
func (a *Agent) ExportTranscript(ssaID string) ([]byte, error) {
	raw, err := a.rawTranscript(ssaID)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, kindError{storage.ErrNotFound, fmt.Errorf("SSA %s has no message recorded yet", ssaID)}
	}
	return protocol.EncodeTranscript(raw)
}

// rawTranscript is every message of the negotiation of an SSA (any version's ID), as stored.
func (a *Agent) rawTranscript(ssaID string) ([][]byte, error) {
	rec, err := a.Negotiation(ssaID)
	if err != nil {
		return nil, err
	}
	return a.store.Transcript(rec.ID)
}

func (api controlAPI) exportTranscript(r *http.Request) (any, error) {
	return api.a.ExportTranscript(r.PathValue("id"))
}
