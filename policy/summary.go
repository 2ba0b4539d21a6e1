package policy

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ssanet/ssanet/protocol"
)

// SketchCapacity is the number of counters of the top-N sketch for a given N: 64 per
// ranked value, at least 1024, at most 65536. Memory is bounded by it, whatever the number
// of distinct values in a window.
func SketchCapacity(topN int) int {
	return min(max(64*topN, 1024), 1<<16)
}

// spaceSaving is the weighted Space-Saving heavy-hitters sketch (Metwally, Agrawal and El
// Abbadi, ICDT 2005) with k counters kept in a min-heap. A value not yet counted takes over
// the smallest counter: its count starts at that counter's count, which becomes its error.
// With W the total weight added, every count overestimates the true weight by at most its
// error, and the error is at most W/k; every value of true weight above W/k is counted.
type spaceSaving struct {
	k    int
	idx  map[string]int
	heap []ssEntry
}

type ssEntry struct {
	key          string
	count, error int64
}

func newSpaceSaving(k int) *spaceSaving {
	return &spaceSaving{k: k, idx: make(map[string]int, k), heap: make([]ssEntry, 0, k)}
}

func (s *spaceSaving) add(key string, w int64) {
	if i, ok := s.idx[key]; ok {
		s.heap[i].count += w
		s.down(i)
		return
	}
	// The sketch keeps the key beyond the record: a copy, so that it does not hold on to
	// the string of the whole record that a codec may have cut it from.
	key = strings.Clone(key)
	if len(s.heap) < s.k {
		s.heap = append(s.heap, ssEntry{key: key, count: w})
		s.idx[key] = len(s.heap) - 1
		s.up(len(s.heap) - 1)
		return
	}
	m := &s.heap[0]
	delete(s.idx, m.key)
	*m = ssEntry{key: key, count: m.count + w, error: m.count}
	s.idx[key] = 0
	s.down(0)
}

func (s *spaceSaving) less(i, j int) bool { return s.heap[i].count < s.heap[j].count }

func (s *spaceSaving) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.idx[s.heap[i].key] = i
	s.idx[s.heap[j].key] = j
}

func (s *spaceSaving) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			return
		}
		s.swap(i, p)
		i = p
	}
}

func (s *spaceSaving) down(i int) {
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			return
		}
		s.swap(i, m)
		i = m
	}
}

// top returns the n largest counters, largest first (ties by value).
func (s *spaceSaving) top(n int) []ssEntry {
	all := slices.Clone(s.heap)
	slices.SortFunc(all, func(a, b ssEntry) int {
		if c := cmp.Compare(b.count, a.count); c != 0 {
			return c
		}
		return cmp.Compare(a.key, b.key)
	})
	return all[:min(n, len(all))]
}

func (s *spaceSaving) reset() {
	clear(s.idx)
	s.heap = s.heap[:0]
}

// Summary is the record a summarisation emits at the end of each window, in every format,
// as one line of JSON: {"ssanet_summary": Summary}.
type Summary struct {
	SSP         string    `json:"ssp"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	GroupBy     string    `json:"group_by"`
	RankBy      string    `json:"rank_by"`
	// Records counts the records of the window; Unranked those without a group-by value;
	// Late those whose time stamp fell before the window (they are not ranked).
	Records  int64 `json:"records"`
	Unranked int64 `json:"unranked"`
	Late     int64 `json:"late"`
	// Total is the sum of the rank-by values (or the number of ranked records).
	Total int64 `json:"total"`
	// Bound is the most any Score may overestimate: Total divided by the sketch capacity.
	Bound int64      `json:"bound"`
	Top   []TopValue `json:"top"`
}

// TopValue is one ranked value. The true score is between Score-Error and Score.
type TopValue struct {
	Value string `json:"value"`
	Score int64  `json:"score"`
	Error int64  `json:"error"`
}

type summaryRecord struct {
	Summary *Summary `json:"ssanet_summary"`
}

// summarizer aggregates records into fixed windows aligned on multiples of the window
// length since the Unix epoch, by record time stamp. Records are expected in time order:
// a record of a later window closes the current one; one of an earlier window is late.
type summarizer struct {
	spec   protocol.Summarization
	ssp    string
	window int64
	ss     *spaceSaving
	open   bool
	start  int64
	cur    Summary
}

func newSummarizer(spec protocol.Summarization, ssp string) *summarizer {
	return &summarizer{spec: spec, ssp: ssp, window: int64(spec.Window), ss: newSpaceSaving(SketchCapacity(int(spec.TopN)))}
}

// add counts a record; it returns the summary of the window the record closed, if any.
func (s *summarizer) add(ts time.Time, key string, hasKey bool, weight int64) *Summary {
	var closed *Summary
	start := ts.Unix() - ((ts.Unix()%s.window)+s.window)%s.window
	switch {
	case !s.open:
		s.begin(start)
	case start > s.start:
		closed = s.close()
		s.begin(start)
	case start < s.start:
		s.cur.Late++
		return nil
	}
	s.cur.Records++
	if !hasKey || weight <= 0 {
		s.cur.Unranked++
		return closed
	}
	s.cur.Total += weight
	s.ss.add(key, weight)
	return closed
}

func (s *summarizer) begin(start int64) {
	s.open, s.start = true, start
	s.cur = Summary{}
	s.ss.reset()
}

func (s *summarizer) close() *Summary {
	out := s.cur
	out.SSP = s.ssp
	out.WindowStart = time.Unix(s.start, 0).UTC()
	out.WindowEnd = time.Unix(s.start+s.window, 0).UTC()
	out.GroupBy, out.RankBy = s.spec.GroupBy, s.spec.RankBy
	out.Bound = out.Total / int64(s.ss.k)
	out.Top = []TopValue{}
	for _, e := range s.ss.top(int(s.spec.TopN)) {
		out.Top = append(out.Top, TopValue{Value: e.key, Score: e.count, Error: e.error})
	}
	return &out
}

// flush closes the open window, if any.
func (s *summarizer) flush() *Summary {
	if !s.open {
		return nil
	}
	s.open = false
	return s.close()
}

func encodeSummary(dst []byte, s *Summary) ([]byte, error) {
	b, err := json.Marshal(summaryRecord{Summary: s})
	if err != nil {
		return dst, fmt.Errorf("policy: encode summary: %w", err)
	}
	return append(dst, b...), nil
}

// summaryKey renders a view value as the ranked value.
func summaryKey(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case int64:
		return strconv.FormatInt(x, 10), true
	case time.Time:
		return x.Format(time.RFC3339Nano), true
	}
	return "", false
}
