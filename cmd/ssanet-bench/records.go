//go:build linux

package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"time"
)

// eveSamples are the public Suricata EVE samples of policy/testdata/eve (16 events: alerts,
// flows, dns, http, tls, ssh, fileinfo, stats; see policy/testdata/SOURCES.md), one a line.
//
//go:embed eve-samples.jsonl
var eveSamples []byte

// eveGen makes EVE records from the samples in turn, each with its own time, flow ID,
// source port and public source address, so that no two records are alike (as on a
// sensor, where compression finds no copies).
type eveGen struct {
	lines [][]byte
	rnd   *rand.Rand
	n     int
	base  time.Time
}

func newEVEGen(seed uint64) *eveGen {
	return &eveGen{lines: bytes.Split(bytes.TrimSpace(eveSamples), []byte("\n")),
		rnd: rand.New(rand.NewPCG(seed, 19)), base: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
}

// next appends the next record (no newline) to dst.
func (g *eveGen) next(dst []byte) []byte {
	l := g.lines[g.n%len(g.lines)]
	ts := g.base.Add(time.Duration(g.n) * 200 * time.Microsecond).Format("2006-01-02T15:04:05.000000-0700")
	g.n++
	r := g.rnd
	for len(l) > 0 {
		i := bytes.IndexByte(l, '"')
		if i < 0 {
			break
		}
		dst = append(dst, l[:i]...)
		l = l[i:]
		switch {
		case bytes.HasPrefix(l, []byte(`"timestamp":"`)):
			end := bytes.IndexByte(l[len(`"timestamp":"`):], '"') + len(`"timestamp":"`) + 1
			dst = fmt.Appendf(dst, `"timestamp":"%s"`, ts)
			l = l[end:]
		case bytes.HasPrefix(l, []byte(`"src_ip":"192.168.`)):
			dst = fmt.Appendf(dst, `"src_ip":"%d.%d.`, 11+r.IntN(200), r.IntN(250))
			l = l[len(`"src_ip":"192.168.`):]
		case bytes.HasPrefix(l, []byte(`"flow_id":`)):
			dst = fmt.Appendf(dst, `"flow_id":%d,"first_flow_id":`, r.Int64N(1<<50))
			l = l[len(`"flow_id":`):]
		case bytes.HasPrefix(l, []byte(`"src_port":`)):
			dst = fmt.Appendf(dst, `"src_port":%d,"first_src_port":`, 1024+r.IntN(64000))
			l = l[len(`"src_port":`):]
		default:
			dst = append(dst, '"')
			l = l[1:]
		}
	}
	return append(dst, l...)
}

// records returns n records from a new generator.
func records(n int) [][]byte {
	g := newEVEGen(1)
	out := make([][]byte, n)
	for i := range out {
		out[i] = g.next(nil)
	}
	return out
}
