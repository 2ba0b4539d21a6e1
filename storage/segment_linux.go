package storage

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// errNoPunch means the file system cannot punch holes: dead blocks stay until their file is
// removed whole.
var errNoPunch = errors.New("storage: the file system cannot punch holes")

// punchHole gives the disk of n bytes of f from off back, keeping the file's size.
func punchHole(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errNoPunch
	}
	return err
}

// fdatasync flushes f's data (and its size) to the disk.
func fdatasync(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("storage: sync %s: %w", f.Name(), err)
	}
	return nil
}
