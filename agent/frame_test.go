package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// TestFrames: frames of every size around the growth steps of the body's buffer read back
// whole; a frame over the cap is refused before its body is read; a short body is an error.
func TestFrames(t *testing.T) {
	const max = 1 << 20
	for _, n := range []int{0, 1, frameChunk - 1, frameChunk, frameChunk + 1, 2 * frameChunk, 3*frameChunk + 5, max} {
		body := bytes.Repeat([]byte{byte(n)}, n)
		var buf bytes.Buffer
		if err := writeFrame(&buf, body); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("next")
		r := bufio.NewReader(&buf)
		got, err := readFrame(r, max)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%d bytes: read %d, %v", n, len(got), err)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "next" {
			t.Fatalf("%d bytes: the frame read past its end: %q left", n, rest)
		}
		if n == 0 {
			continue
		}
		var short bytes.Buffer
		writeFrame(&short, body)
		short.Truncate(short.Len() - 1)
		if _, err := readFrame(bufio.NewReader(&short), max); !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			t.Fatalf("%d bytes, one missing: %v", n, err)
		}
	}
	var big bytes.Buffer
	writeFrame(&big, make([]byte, max+1))
	if _, err := readFrame(bufio.NewReader(&big), max); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
}

// TestFrameMemoryFollowsBytes: a frame announced large whose bytes do not come holds memory
// for what came (a frameChunk), not for what was announced.
func TestFrameMemoryFollowsBytes(t *testing.T) {
	const announced, tries = 1 << 20, 20
	short := append(binary.AppendUvarint(nil, announced), make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range tries {
		if _, err := readFrame(bufio.NewReaderSize(bytes.NewReader(short), 16), announced); err == nil {
			t.Fatal("a frame without its bytes was read")
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / tries; per > 4*frameChunk {
		t.Fatalf("reading a frame of %d bytes announced and 100 sent allocated %d bytes", announced, per)
	}
}

// FuzzReadFrame: whatever a peer sends, readFrame returns a frame no larger than the cap, or
// an error; never a panic.
func FuzzReadFrame(f *testing.F) {
	var ok bytes.Buffer
	writeFrame(&ok, []byte("hello"))
	f.Add(ok.Bytes())
	f.Add([]byte{0x80, 0x80, 0x40}) // announces 1 MiB, sends nothing
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := readFrame(bufio.NewReader(bytes.NewReader(data)), 4096)
		if err == nil && len(b) > 4096 {
			t.Fatalf("%d bytes read past the cap", len(b))
		}
	})
}
