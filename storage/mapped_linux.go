package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// madvPageout is Linux's MADV_PAGEOUT (5.4 and later): reclaim the pages of the range, the
// dirty ones of a file written back first. It changes no content: a page is read again from
// the file (or, anonymous, from swap) at its next access. Older kernels answer EINVAL.
const madvPageout = 21

// maxMapsLine bounds a line of /proc/self/maps (a path is at most PATH_MAX, 4096 bytes).
const maxMapsLine = 8 << 10

// releaseMapped hands back to the kernel the pages of the store's tables (.sst) and value
// log files (.vlog) that are mapped into the process, so that the resident memory does not
// hold every page Badger has read or written (ProfileSensor). The write-ahead logs (.mem)
// are left alone: they are written all the time. A range that Badger unmapped since
// /proc/self/maps was read, and that some other mapping took, is only paged out too, which
// loses nothing: the advice is never destructive.
func (s *Store) releaseMapped() error {
	// /proc/self/maps names a file by its real path: through a symbolic link in s.dir no
	// line would match, and no page would ever be released.
	dir, err := filepath.Abs(s.dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return fmt.Errorf("storage: release mapped pages: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return fmt.Errorf("storage: release mapped pages: %w", err)
	}
	defer f.Close()
	prefix := []byte(dir + string(filepath.Separator))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), maxMapsLine)
	for sc.Scan() {
		// 7f..-7f.. rw-s 00000000 fd:01 1234   /path/to/000001.sst
		line := sc.Bytes()
		i := bytes.IndexByte(line, '/')
		if i < 0 {
			continue
		}
		path := line[i:]
		if !bytes.HasPrefix(path, prefix) || !(bytes.HasSuffix(path, []byte(".sst")) || bytes.HasSuffix(path, []byte(".vlog"))) {
			continue
		}
		lo, hi, ok := mapsRange(line)
		if !ok {
			return fmt.Errorf("storage: release mapped pages: unreadable line %q of /proc/self/maps", line)
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, lo, hi-lo, madvPageout)
		switch {
		case errno == 0, errno == syscall.ENOMEM: // ENOMEM: unmapped since
		case errno == syscall.EINVAL:
			return fmt.Errorf("%w: %w", errNoPageout, errno)
		default:
			return fmt.Errorf("storage: release mapped pages of %s: %w", path, errno)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("storage: release mapped pages: read /proc/self/maps: %w", err)
	}
	return nil
}

// releaseOver hands back the pages of the store's mapped files (releaseMapped) when the
// process's resident pages of mapped files have grown more than budget over
// floor, what they were after the last release (or at the start), and sets floor to what they
// are after it. While they stay within the budget it reads one small file and advises
// nothing.
func (s *Store) releaseOver(floor *uint64, budget uint64) error {
	now, err := fileResident()
	if err != nil {
		return fmt.Errorf("storage: release mapped pages: %w", err)
	}
	*floor = min(*floor, now) // pages the kernel took back, mappings gone
	if now-*floor <= budget {
		return nil
	}
	if err := s.releaseMapped(); err != nil {
		return err
	}
	s.releases.Add(1)
	if now, err = fileResident(); err != nil {
		return fmt.Errorf("storage: release mapped pages: %w", err)
	}
	*floor = now
	return nil
}

// fileResident is the process's resident memory of mapped files and shared memory: the
// third field of /proc/self/statm (RssFile + RssShmem of /proc/self/status), in bytes.
func fileResident() (uint64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, fmt.Errorf("unreadable /proc/self/statm %q", b)
	}
	pages, err := strconv.ParseUint(string(f[2]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unreadable /proc/self/statm %q: %w", b, err)
	}
	return pages * uint64(os.Getpagesize()), nil
}

// mapsRange parses the address range a line of /proc/self/maps begins with.
func mapsRange(line []byte) (lo, hi uintptr, ok bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return 0, 0, false
	}
	a, b, found := bytes.Cut(line[:sp], []byte("-"))
	if !found {
		return 0, 0, false
	}
	l, err1 := strconv.ParseUint(string(a), 16, 64)
	h, err2 := strconv.ParseUint(string(b), 16, 64)
	if err1 != nil || err2 != nil || h <= l {
		return 0, 0, false
	}
	return uintptr(l), uintptr(h), true
}
