package protocol

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Limits on what the strict decoder accepts. They bound the memory a peer or a file can make
// the decoder allocate.
const (
	// MaxMessageSize is the largest encoded SSA or envelope accepted, in bytes.
	MaxMessageSize = 1 << 20
	maxNesting     = 16
	maxArrayLen    = 4096
	maxMapPairs    = 1024
)

var (
	// ErrMalformed means bytes are not a valid encoding of the expected value: not CBOR, not
	// canonical, a duplicate key, an indefinite length, a tag, or over a size cap.
	ErrMalformed = errors.New("protocol: malformed encoding")
	// ErrTooLarge means an encoding is over MaxMessageSize.
	ErrTooLarge = errors.New("protocol: encoding too large")
)

// One CBOR configuration serves the whole program: everything ssanet signs, sends, hashes
// (the SSP's identity) or stores is written by encMode and read by decMode. A value then has
// one encoding wherever it is made, so a signature, an SSP hash compared by two peers or a
// record read back from disk never depends on which package encoded it. Other packages use
// them through Marshal and Unmarshal.

// encMode is the single encoder: RFC 8949 §4.2.1 core deterministic encoding.
var encMode = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeUnix // the default, said here because signed bytes depend on it
	em, err := opts.EncMode()
	if err != nil {
		panic(err) // constant options: cannot fail at run time
	}
	return em
}()

// strictDecOptions configures the single strict decoder: it refuses duplicate map keys,
// indefinite lengths, every tag, unknown fields and anything past the caps.
func strictDecOptions() cbor.DecOptions {
	return cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   maxNesting,
		MaxArrayElements:  maxArrayLen,
		MaxMapPairs:       maxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		IntDec:            cbor.IntDecConvertSignedOrFail,
	}
}

func mustDecMode(o cbor.DecOptions) cbor.DecMode {
	dm, err := o.DecMode()
	if err != nil {
		panic(err) // constant options: cannot fail at run time
	}
	return dm
}

var decMode = mustDecMode(strictDecOptions())

// Marshal returns the core deterministic encoding of v (RFC 8949 §4.2.1): the one encoding
// ssanet signs, hashes and stores.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %T: %w", v, err)
	}
	return b, nil
}

// Unmarshal decodes b into v with the strict decoder (ErrMalformed if it refuses b). It is for
// bytes this program wrote itself, such as a store's records: unlike the Decode and Open
// functions for what peers send, it neither caps b at MaxMessageSize (a stored record may
// hold a whole batch) nor requires the canonical form, which Marshal always writes.
func Unmarshal(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// unmarshalCanonical decodes b into v with the strict decoder and then requires that the
// value re-encodes to exactly b, so that every accepted encoding is the canonical one and
// what is signed is what is read.
func unmarshalCanonical(b []byte, v any) error {
	if len(b) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	if err := decodeCanonical(b, v); err != nil {
		return fmt.Errorf("%w: %T: %v", ErrMalformed, v, err)
	}
	return nil
}

// decodeCanonical is unmarshalCanonical without the size cap and without ErrMalformed: for a
// value inside one that unmarshalCanonical is decoding, which reports the error.
func decodeCanonical(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return err
	}
	same := &sameBytes{want: b, ok: true}
	if err := encMode.NewEncoder(same).Encode(v); err != nil {
		return err
	}
	if !same.ok || same.off != len(b) {
		return errors.New("not in core deterministic form")
	}
	return nil
}

// sameBytes is a writer that checks that what is written to it is want, without keeping it:
// the re-encoding check of unmarshalCanonical allocates no copy of the value's encoding.
type sameBytes struct {
	want []byte
	off  int
	ok   bool
}

func (w *sameBytes) Write(p []byte) (int, error) {
	if w.ok && len(p) <= len(w.want)-w.off && string(p) == string(w.want[w.off:w.off+len(p)]) {
		w.off += len(p)
	} else {
		w.ok = false
	}
	return len(p), nil
}

// The primitives below write and read the few CBOR items of a COSE_Sign1 by hand, so that
// signing and opening a message needs neither reflection nor the re-encoding check of
// unmarshalCanonical. They write exactly what encMode writes (the golden tests hold them to
// it).

// appendNilBstr appends v as a byte string, or null if v is nil, as the encoder does.
func appendNilBstr(b, v []byte) []byte {
	if v == nil {
		return append(b, 0xf6)
	}
	return appendBstr(b, v)
}

// appendHead appends the head of a CBOR item of major type major and argument n, in its
// shortest form, as core deterministic encoding requires.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// headSize is the length of the shortest head with argument n.
func headSize(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

func appendBstr(b, v []byte) []byte { return append(appendHead(b, 2, uint64(len(v))), v...) }

// readHead reads the head of a CBOR item in shortest form from the front of b: its major type
// and argument.
func readHead(b []byte) (major byte, n uint64, rest []byte, err error) {
	if len(b) == 0 {
		return 0, 0, nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	major, ai, b := b[0]>>5, b[0]&0x1f, b[1:]
	switch {
	case ai < 24:
		return major, uint64(ai), b, nil
	case ai <= 27:
		size := 1 << (ai - 24)
		if len(b) < size {
			return 0, 0, nil, fmt.Errorf("%w: truncated", ErrMalformed)
		}
		for _, c := range b[:size] {
			n = n<<8 | uint64(c)
		}
		if headSize(n) != 1+size {
			return 0, 0, nil, fmt.Errorf("%w: not in core deterministic form", ErrMalformed)
		}
		return major, n, b[size:], nil
	}
	return 0, 0, nil, fmt.Errorf("%w: indefinite or reserved length", ErrMalformed)
}

// readString reads a definite-length string of major type major (2: bytes, 3: text) in
// shortest form from the front of b. The string aliases b.
func readString(b []byte, major byte) (v, rest []byte, err error) {
	m, n, b, err := readHead(b)
	if err != nil {
		return nil, nil, err
	}
	if m != major {
		return nil, nil, fmt.Errorf("%w: major type %d, want %d", ErrMalformed, m, major)
	}
	if n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	return b[:n:n], b[n:], nil
}
