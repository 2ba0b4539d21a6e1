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

// encMode is the single encoder of everything ssanet signs or sends: RFC 8949 §4.2.1 core
// deterministic encoding.
var encMode = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeUnix
	em, err := opts.EncMode()
	if err != nil {
		panic(err) // constant options: cannot fail at run time
	}
	return em
}()

// decMode is the single strict decoder: it refuses duplicate map keys, indefinite lengths,
// every tag, unknown fields and anything past the caps.
var decMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   maxNesting,
		MaxArrayElements:  maxArrayLen,
		MaxMapPairs:       maxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
		IntDec:            cbor.IntDecConvertSignedOrFail,
	}.DecMode()
	if err != nil {
		panic(err) // constant options: cannot fail at run time
	}
	return dm
}()

func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %T: %w", v, err)
	}
	return b, nil
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
