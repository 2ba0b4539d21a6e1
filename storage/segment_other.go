//go:build !linux

package storage

import (
	"errors"
	"fmt"
	"os"
)

// errNoPunch means the file system cannot punch holes: dead blocks stay until their file is
// removed whole. Only Linux punches them here.
var errNoPunch = errors.New("storage: the file system cannot punch holes")

func punchHole(*os.File, int64, int64) error { return errNoPunch }

// fdatasync flushes f to the disk.
func fdatasync(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("storage: sync %s: %w", f.Name(), err)
	}
	return nil
}
