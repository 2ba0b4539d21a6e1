package cti

import (
	"encoding/json"
	"testing"

	"github.com/ssanet/ssanet/policy"
)

// FuzzMap: no record a peer can send makes a mapping panic; whatever the STIX mapping makes is
// a bundle of objects with IDs of their types, and the ECS mapping valid JSON.
func FuzzMap(f *testing.F) {
	for _, s := range samples {
		for _, r := range readSample(f, s.format, s.file, 0) {
			f.Add(s.format, r.Data)
		}
	}
	f.Add("eve", []byte(`{"timestamp":"x","src_ip":"::ffff:1.2.3.4%eth0","dest_ip":"1.2.3.0","http":{"url":"//","hostname":"a..b"}}`))
	f.Add("syslog", []byte("<13>1 - - - - - -"))
	a, _ := agreement(f, "AMBER+STRICT")
	f.Fuzz(func(t *testing.T, format string, data []byte) {
		rec := Record{Seq: 7, Received: received, Format: format, Data: data}
		b, err := a.Bundle([]Record{rec})
		if err != nil {
			return // an unknown format
		}
		for _, o := range b.Objects {
			if id, typ := o.ID(), o.Type(); len(id) < len(typ)+38 || id[:len(typ)+2] != typ+"--" {
				t.Fatalf("object %q of type %q", id, typ)
			}
		}
		if _, err := json.Marshal(b); err != nil {
			t.Fatal(err)
		}
		doc, err := a.ECSJSON(rec)
		if err != nil || !json.Valid(doc) {
			t.Fatalf("ECS: %v %s", err, doc)
		}
		if _, err := a.MISPAttributes(rec); err != nil {
			t.Fatal(err)
		}
		_, _ = policy.View(format, 2026, data)
	})
}
