package agent

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/ssanet/ssanet/agent/sink"
)

// writeFileAtomic replaces path with data so that a crash leaves either the old or the new
// content, never an empty or partial file.
func writeFileAtomic(path string, data []byte) error {
	if err := sink.WriteFileAtomic(path, data, 0o600); err != nil {
		return err
	}
	return sink.SyncDir(filepath.Dir(path)) // the rename itself survives a power cut
}

// writeJSONFile writes v, indented, to path (mode 0600), making its directory if need be;
// atomically, so that a reader (an operator, a test polling for the file) never sees a part.
func writeJSONFile(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}
