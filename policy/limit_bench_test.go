//go:build linux

package policy

import (
	"bytes"
	"io"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// cpuTime is the CPU time the process has used, all threads (GC included), to the
// nanosecond: getrusage counts in clock ticks, too coarse for a chunk of records.
func cpuTime(tb testing.TB) time.Duration {
	const clockProcessCPUTime = 2 // CLOCK_PROCESS_CPUTIME_ID
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockProcessCPUTime, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		tb.Fatal(errno)
	}
	return time.Duration(ts.Nano())
}

// limitScanner is the yardstick of BenchmarkEnforceLimit: the least work that gives the
// same output as the enforcer under benchPolicy. It drops the records whose event_type is
// stats, finds the IPv4 and IPv6 literals inside the JSON strings of a record and rewrites
// the public ones in place, truncated by 8 bits; it copies every other byte. It knows
// nothing of fields, views or filters, so it is the limit an enforcer can approach.
type limitScanner struct{}

var statsMember = []byte(`"event_type":"stats"`)

// refine appends the refined record to dst (nothing when it is dropped).
func (limitScanner) refine(dst, rec []byte) []byte {
	if bytes.Contains(rec, statsMember) {
		return dst
	}
	for i := 0; i < len(rec); {
		c := rec[i]
		if c != '"' {
			dst = append(dst, c)
			i++
			continue
		}
		j, esc := i+1, false
		for j < len(rec) && rec[j] != '"' {
			if rec[j] == '\\' {
				esc = true
				j++
			}
			j++
		}
		s := rec[i+1 : j]
		if esc {
			// Rare: decode, and encode again only if an address changed.
			u := unescapeJSON(s)
			if m := limitMask(nil, []byte(u)); string(m) != u {
				dst = appendJSONString(dst, string(m))
			} else {
				dst = append(dst, rec[i:j+1]...)
			}
		} else {
			dst = append(dst, '"')
			dst = limitMask(dst, s)
			dst = append(dst, '"')
		}
		i = j + 1
	}
	return append(dst, '\n')
}

// limitMask appends s to dst with its public addresses truncated by 8 bits.
func limitMask(dst, s []byte) []byte {
	last := 0
	for i := 0; i < len(s); {
		if !isIPChar(s[i]) {
			i++
			continue
		}
		j, colons, dots := i, 0, 0
		for j < len(s) && isIPChar(s[j]) {
			colons += b2i(s[j] == ':')
			dots += b2i(s[j] == '.')
			j++
		}
		switch {
		case colons >= 2:
			e := j
			for e-i > 2 && (s[e-1] == '.' || s[e-1] == ':' && s[e-2] != ':') {
				e--
			}
			if e-i > 45 || (e < len(s) && isWordChar(s[e])) || (i > 0 && isWordChar(s[i-1])) ||
				!bytes.Contains(s[i:e], []byte("::")) && colons != 7 && !(colons == 6 && dots == 3) {
				break
			}
			if a, err := netip.ParseAddr(string(s[i:e])); err == nil && a.Is6() {
				dst = append(dst, s[last:i]...)
				dst = limitAddr(dst, a, s[i:e])
				last = e
			}
		case dots >= 3:
			for k := i; k < j; {
				if !isDigit(s[k]) {
					k++
					continue
				}
				start, groups, ok := k, 0, true
				var q [4]byte
				for {
					g, v := k, 0
					for k < j && isDigit(s[k]) {
						v = min(v*10+int(s[k]-'0'), 1000)
						k++
					}
					ok = ok && k-g <= 3 && v <= 255
					if groups < 4 {
						q[groups] = byte(v)
					}
					groups++
					if k+1 < j && s[k] == '.' && isDigit(s[k+1]) {
						k++
						continue
					}
					break
				}
				if ok && groups == 4 {
					dst = append(dst, s[last:start]...)
					dst = limitAddr(dst, netip.AddrFrom4(q), s[start:k])
					last = k
				}
			}
		}
		i = j
	}
	return append(dst, s[last:]...)
}

// limitAddr appends the truncated address a, or its text as read when a is not public.
func limitAddr(dst []byte, a netip.Addr, text []byte) []byte {
	if !IsPublic(a) || tokenPrefix.Contains(a) {
		return append(dst, text...)
	}
	return Truncate(a, 8).AppendTo(dst)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkEnforceLimit refines EVE records under benchPolicy (every public address
// truncated, a CEL filter) with the enforcer (Refine, record by record) and with
// limitScanner, both given the same records, alternating every 1,000 records and each timed
// in CPU time of the process, so that the load of the machine weighs on both alike. It
// reports for each records per CPU-second, allocations and bytes allocated per record, and
// the enforcer's throughput as a fraction of the scanner's (issue 19's target: 0.67 or more):
//
//	go test ./policy -run '^$' -bench EnforceLimit -benchtime 20x
func BenchmarkEnforceLimit(b *testing.B) {
	const n = 20000
	in := benchEVE(b, n)
	recs := bytes.SplitAfter(in, []byte("\n"))
	recs = recs[:len(recs)-1]
	p := mustCompile(b, ssaFor(benchPolicy(), "eve"))
	want, _ := runAll(b, p, "eve", in)
	var got []byte
	for _, r := range recs {
		got = limitScanner{}.refine(got, bytes.TrimSuffix(r, []byte("\n")))
	}
	if !bytes.Equal(got, want) {
		b.Fatalf("the limit scanner's output differs from the enforcer's")
	}
	const chunk = 1000
	var ours, limit time.Duration
	var oursAllocs, limitAllocs, oursBytes, limitBytes uint64
	var ms0, ms1 runtime.MemStats
	buf := make([]byte, 0, 64<<10)
	for b.Loop() {
		e, err := NewEnforcer(p, "eve", Config{})
		if err != nil {
			b.Fatal(err)
		}
		for c := range (len(recs) + chunk - 1) / chunk {
			runtime.ReadMemStats(&ms0)
			start := cpuTime(b)
			for _, r := range recs[c*chunk : min((c+1)*chunk, len(recs))] {
				if buf, err = e.Refine(buf[:0], r[:len(r)-1]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.Discard.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			ours += cpuTime(b) - start
			runtime.ReadMemStats(&ms1)
			oursAllocs += ms1.Mallocs - ms0.Mallocs
			oursBytes += ms1.TotalAlloc - ms0.TotalAlloc

			runtime.ReadMemStats(&ms0)
			start = cpuTime(b)
			var ls limitScanner
			for _, r := range recs[c*chunk : min((c+1)*chunk, len(recs))] {
				buf = ls.refine(buf[:0], r[:len(r)-1])
				if _, err := io.Discard.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			limit += cpuTime(b) - start
			runtime.ReadMemStats(&ms1)
			limitAllocs += ms1.Mallocs - ms0.Mallocs
			limitBytes += ms1.TotalAlloc - ms0.TotalAlloc
		}
	}
	records := float64(b.N) * n
	b.ReportMetric(records/ours.Seconds(), "records/cpu-s")
	b.ReportMetric(records/limit.Seconds(), "limit-records/cpu-s")
	b.ReportMetric(limit.Seconds()/ours.Seconds(), "of-limit")
	b.ReportMetric(float64(oursAllocs)/records, "allocs/record")
	b.ReportMetric(float64(limitAllocs)/records, "limit-allocs/record")
	b.ReportMetric(float64(oursBytes)/records, "B/record")
	b.ReportMetric(float64(limitBytes)/records, "limit-B/record")
	b.ReportMetric(float64(len(in))/n, "record-bytes")
}
