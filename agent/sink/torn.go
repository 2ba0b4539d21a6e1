package sink

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// dropTornLine cuts the last line of a JSON Lines file that a crash left half-written (a
// record longer than one write, cut by kill -9 or a power cut between two writes). Its
// records were not yet counted as forwarded, so they are written again whole after it; a
// receiver reading the file never sees half a record followed by the next one. It returns
// how many bytes it cut, so that the cut is logged.
func dropTornLine(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() || info.Size() == 0 {
		return 0, err
	}
	end := info.Size()
	buf := make([]byte, 64<<10)
	for pos := end; pos > 0; {
		n := min(int64(len(buf)), pos)
		pos -= n
		if _, err := f.ReadAt(buf[:n], pos); err != nil && err != io.EOF {
			return 0, fmt.Errorf("sink: read the end of %s: %w", path, err)
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			if cut := pos + int64(i) + 1; cut < end {
				return end - cut, truncate(f, path, cut)
			}
			return 0, nil
		}
	}
	return end, truncate(f, path, 0) // one torn line and nothing before it
}

func truncate(f *os.File, path string, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("sink: cut the half-written last line of %s: %w", path, err)
	}
	return f.Sync()
}
