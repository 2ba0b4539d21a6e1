package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrFrameTooLarge means a peer announced a frame over the cap; nothing of it was read.
var ErrFrameTooLarge = errors.New("agent: frame too large")

// writeFrame writes one length-prefixed frame (unsigned varint length, then the bytes). An
// empty frame is an acknowledgement with no answer. A frame of up to frameJoin bytes is
// written with its length in one write; a larger one (a batch) in two, not copied.
func writeFrame(w io.Writer, b []byte) error {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	var err error
	if len(b) <= frameJoin {
		_, err = w.Write(append(hdr[:n:n], b...))
	} else if _, err = w.Write(hdr[:n]); err == nil {
		_, err = w.Write(b)
	}
	if err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// frameJoin is the largest frame writeFrame copies behind its length to write both at once.
const frameJoin = 16 << 10

// frameChunk is the most memory readFrame takes before the bytes arrive.
const frameChunk = 64 << 10

// readFrame reads one frame, checking the announced length against max before reading the
// body. The body's buffer grows with what arrives (doubling from frameChunk), so a peer that
// announces a large frame and sends little of it holds little memory.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, n, max)
	}
	b := make([]byte, min(n, frameChunk))
	for read := 0; ; {
		if _, err := io.ReadFull(r, b[read:]); err != nil {
			return nil, fmt.Errorf("read frame body: %w", err)
		}
		read = len(b)
		if uint64(read) == n {
			break
		}
		b = append(b, make([]byte, min(n-uint64(read), uint64(read)))...)
	}
	return b, nil
}
