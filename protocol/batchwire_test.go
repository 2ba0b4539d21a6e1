package protocol

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// batchDecMode is the strict decoder OpenBatch used before decodeBatchWire: the reference the
// tests below hold it to.
var batchDecMode = func() cbor.DecMode {
	o := strictDecOptions()
	o.MaxArrayElements = maxBatchRecords
	return mustDecMode(o)
}()

// batchWireCases are record sets around every head size.
func batchWireCases() map[string][][]byte {
	many := make([][]byte, 300)
	for i := range many {
		many[i] = bytes.Repeat([]byte{byte(i)}, i%30)
	}
	return map[string][][]byte{
		"one":       {[]byte(`{"a":1}`)},
		"empty":     {{}},
		"sizes":     {make([]byte, 23), make([]byte, 24), make([]byte, 255), make([]byte, 256), make([]byte, 65535), make([]byte, 65536)},
		"24":        make([][]byte, 24),
		"300 mixed": many,
	}
}

// TestBatchWireAsEncoder: appendBatchWire writes what the CBOR encoder writes, and
// decodeBatchWire reads it back, every record a slice of the batch that an append cannot
// write through.
func TestBatchWireAsEncoder(t *testing.T) {
	signed := bytes.Repeat([]byte{0xd2}, 300)
	for name, recs := range batchWireCases() {
		t.Run(name, func(t *testing.T) {
			for i := range recs {
				if recs[i] == nil {
					recs[i] = []byte{} // the encoder writes null for nil; a record is never nil
				}
			}
			want, err := Marshal(&batchWire{Signed: signed, Records: recs})
			if err != nil {
				t.Fatal(err)
			}
			got := appendBatchWire(nil, signed, recs)
			if !bytes.Equal(got, want) {
				t.Fatalf("appendBatchWire wrote %x…, the encoder %x…", got[:min(len(got), 40)], want[:min(len(want), 40)])
			}
			w, err := decodeBatchWire(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.Signed, signed) || !reflect.DeepEqual(w.Records, recs) {
				t.Fatal("decodeBatchWire read another batch")
			}
			before := bytes.Clone(got)
			for _, r := range w.Records {
				_ = append(r, 0xff)
			}
			if !bytes.Equal(got, before) {
				t.Fatal("an append to a decoded record wrote over the batch")
			}
		})
	}
}

// TestBatchWireAsDecoder: decodeBatchWire refuses what the strict decoder refused (each
// prefix of a batch, bytes after it, indefinite lengths, tags, other types, too many
// records), and what it refuses beyond: heads not in shortest form and nulls.
func TestBatchWireAsDecoder(t *testing.T) {
	valid := appendBatchWire(nil, []byte{1, 2, 3}, [][]byte{[]byte("ab"), {}, []byte("c")})
	cases := map[string]struct {
		raw     []byte
		refOK   bool // what the strict decoder says
		refused bool // what decodeBatchWire must say
	}{
		"valid":              {valid, true, false},
		"trailing byte":      {append(bytes.Clone(valid), 0), false, true},
		"indefinite records": {[]byte{0x82, 0x41, 1, 0x9f, 0x41, 'a', 0xff}, false, true},
		"indefinite bytes":   {[]byte{0x82, 0x5f, 0x41, 1, 0xff, 0x81, 0x41, 'a'}, false, true},
		"tagged record":      {[]byte{0x82, 0x41, 1, 0x81, 0xd8, 0x18, 0x41, 'a'}, false, true},
		"text record":        {[]byte{0x82, 0x41, 1, 0x81, 0x61, 'a'}, false, true},
		"array of 3":         {[]byte{0x83, 0x41, 1, 0x81, 0x41, 'a', 0x41, 'b'}, false, true},
		"map":                {[]byte{0xa1, 0x01, 0x02}, false, true},
		"too many records":   {append([]byte{0x82, 0x41, 1, 0x9a, 0, 1, 0, 1}, bytes.Repeat([]byte{0x40}, maxBatchRecords+1)...), false, true},
		"count over bytes":   {[]byte{0x82, 0x41, 1, 0x99, 0xff, 0xff, 0x40}, false, true},
		"long head":          {[]byte{0x82, 0x58, 1, 1, 0x81, 0x41, 'a'}, true, true},
		"null records":       {[]byte{0x82, 0x41, 1, 0xf6}, true, true},
		"null record":        {[]byte{0x82, 0x41, 1, 0x81, 0xf6}, true, true},
	}
	for i := range valid {
		cases["prefix "+string(rune('a'+i))] = struct {
			raw            []byte
			refOK, refused bool
		}{valid[:i], false, true}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var ref batchWire
			refErr := batchDecMode.Unmarshal(c.raw, &ref)
			if (refErr == nil) != c.refOK {
				t.Fatalf("the strict decoder says %v", refErr)
			}
			w, err := decodeBatchWire(c.raw)
			if (err != nil) != c.refused {
				t.Fatalf("decodeBatchWire says %v", err)
			}
			if err == nil && (!bytes.Equal(w.Signed, ref.Signed) || !reflect.DeepEqual(w.Records, ref.Records)) {
				t.Fatalf("decodeBatchWire read %q, the strict decoder %q", w.Records, ref.Records)
			}
		})
	}
}

// FuzzBatchWire: whatever decodeBatchWire accepts, the strict decoder accepts as the same
// batch.
func FuzzBatchWire(f *testing.F) {
	for _, recs := range batchWireCases() {
		f.Add(appendBatchWire(nil, []byte{1}, recs))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		w, err := decodeBatchWire(raw)
		if err != nil {
			return
		}
		var ref batchWire
		if err := batchDecMode.Unmarshal(raw, &ref); err != nil {
			t.Fatalf("decodeBatchWire accepts what the strict decoder refuses: %v", err)
		}
		if !bytes.Equal(w.Signed, ref.Signed) || len(w.Records) != len(ref.Records) {
			t.Fatal("another batch")
		}
		for i := range w.Records {
			if !bytes.Equal(w.Records[i], ref.Records[i]) {
				t.Fatalf("record %d differs", i)
			}
		}
	})
}
