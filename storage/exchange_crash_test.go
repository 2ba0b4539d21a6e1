package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The exchange crash tests' children are this test binary, run with these variables set.
const (
	envExchangeDir   = "SSANET_STORAGE_EXCHANGE_CRASH_DIR"
	envExchangeRound = "SSANET_STORAGE_EXCHANGE_CRASH_ROUND"
	envHugeBatchDir  = "SSANET_STORAGE_HUGE_BATCH_DIR"
)

const (
	exchangeCrashRounds = 3
	exchangeEnqueuers   = 2
	// Every few batches holds more records than a group holds entries (one transaction, an
	// index entry per block of records).
	exchangeLargeEvery = 12
	exchangeLarge      = maxGroupEntries + 100
	// exchangeCrashTime bounds a round, from the child's first write (-race is slow).
	exchangeCrashTime = 3 * time.Second
)

// outRecord is record i of the n of outbox batch tag, size bytes: it says where it belongs.
func outRecord(tag string, i, n, size int) []byte {
	b := fmt.Appendf(nil, "%s/%d/%d/%d|", tag, i, n, size)
	for len(b) < size {
		b = append(b, byte('A'+len(b)%26))
	}
	return b
}

// parseOutRecord reads back what outRecord wrote.
func parseOutRecord(b []byte) (tag string, i, n, size int, err error) {
	head, _, ok := bytes.Cut(b, []byte("|"))
	f := strings.Split(string(head), "/")
	if !ok || len(f) != 4 {
		return "", 0, 0, 0, fmt.Errorf("record %.40q", b)
	}
	if i, err = strconv.Atoi(f[1]); err == nil {
		if n, err = strconv.Atoi(f[2]); err == nil {
			size, err = strconv.Atoi(f[3])
		}
	}
	return f[0], i, n, size, err
}

// inRecord is inbox record seq: its size varies with seq, some under valueThreshold.
func inRecord(seq uint64) []byte {
	size := 40
	if seq%4 != 0 {
		size = 150 + int(seq%400)
	}
	return record("in", seq, size)
}

// TestHelperExchange is the exchange crash test's child. Two goroutines enqueue batches to
// the outbox "out", one acknowledges them, and one receives batches into the inbox "in" (some
// overlapping what is stored); each prints what it did once the call has returned:
//
//	E <tag> <n> <last>   Enqueue of n records returned last
//	A <seq>              Ack of seq returned
//	r <first> <n>        Receive of records first..first+n-1 is about to start
//	R <last>             Receive returned last
func TestHelperExchange(t *testing.T) {
	dir := os.Getenv(envExchangeDir)
	if dir == "" {
		t.Skip("run by TestExchangeCrash only")
	}
	round, err := strconv.Atoi(os.Getenv(envExchangeRound))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Printf(format+"\n", args...); err != nil {
			panic(err)
		}
	}
	say(crashReady)
	check := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var wg sync.WaitGroup
	for g := range exchangeEnqueuers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
			for b := 0; ; b++ {
				tag := fmt.Sprintf("%d.%d.%d", round, g, b)
				n, size := 1+rng.IntN(300), 150+rng.IntN(500)
				if g == 0 && b%exchangeLargeEvery == exchangeLargeEvery-1 {
					n, size = exchangeLarge, 40
				}
				recs := make([][]byte, n)
				for i := range recs {
					recs[i] = outRecord(tag, i, n, size)
				}
				last, err := s.Enqueue("out", recs, uint64(n)+1, 1)
				check(err)
				say("E %s %d %d", tag, n, last)
			}
		})
	}
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(round), 99))
		for {
			st, err := s.OutboxState("out")
			check(err)
			if st.Refined > 0 {
				seq := st.Refined - uint64(rng.IntN(int(min(st.Refined, 2000))))
				check(s.MarkSent("out", st.Refined))
				check(s.Ack("out", seq))
				say("A %d", seq)
			}
			time.Sleep(2 * time.Millisecond) // pace: acks follow batches
		}
	})
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(round), 100))
		st, err := s.InboxState("in")
		check(err)
		last := st.Last
		for b := 0; ; b++ {
			first := last + 1
			if b%5 == 2 && last > 10 {
				first = last - 9 // resent: the first 10 are duplicates
			}
			n := 1 + rng.IntN(400)
			if b%exchangeLargeEvery == exchangeLargeEvery-1 {
				n = exchangeLarge
			}
			recs := make([][]byte, n)
			for i := range recs {
				recs[i] = inRecord(first + uint64(i))
			}
			say("r %d %d", first, n)
			_, last, err = s.Receive("in", first, recs, time.Now(), 0)
			check(err)
			say("R %d", last)
		}
	})
	wg.Wait() // never: the parent kills this process
}

// TestExchangeCrash kills a process that enqueues, acknowledges and receives records in a
// loop, at a random moment, and checks the queues: every record whose Enqueue or Receive
// returned is there exactly once, in its place, the sequences dense, no batch there in part,
// and acknowledgements kept; three times over the same store.
func TestExchangeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	var lines []string
	for round := range exchangeCrashRounds {
		got := killChild(t, "TestHelperExchange", 100+rand.IntN(200), exchangeCrashTime,
			envExchangeDir+"="+dir, envExchangeRound+"="+strconv.Itoa(round))
		lines = append(lines, got...)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("reopen after the crash: %v", err)
		}
		checkExchange(t, s, lines)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}

// checkExchange checks the store against the lines the children printed.
func checkExchange(t *testing.T, s *Store, lines []string) {
	t.Helper()
	printed := parseExchangeLines(t, lines)
	out := checkOutboxAfterCrash(t, s, printed)
	in := checkInboxAfterCrash(t, s, printed)
	checkSegmentFiles(t, s)
	t.Logf("outbox %+v (%d batches acknowledged to the test), inbox %+v", out, len(printed.enqueued), in)
}

// exchangePrinted is what the children printed: the calls that returned before a kill.
type exchangePrinted struct {
	enqueued    map[string]enqueuedBatch // by tag
	maxLast     uint64                   // last record an Enqueue returned
	maxAck      uint64
	maxReceived uint64
	ends        map[uint64]bool // where a Receive may have left the inbox
}

// enqueuedBatch is what an Enqueue returned: its number of records and its last one.
type enqueuedBatch struct{ n, last uint64 }

func parseExchangeLines(t *testing.T, lines []string) exchangePrinted {
	t.Helper()
	p := exchangePrinted{enqueued: map[string]enqueuedBatch{}, ends: map[uint64]bool{0: true}}
	for _, line := range lines {
		f := strings.Fields(line)
		nums := make([]uint64, len(f))
		for i := range f[1:] {
			if f[0] == "E" && i == 0 {
				continue
			}
			var err error
			if nums[i+1], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				t.Fatalf("child printed %q", line)
			}
		}
		switch {
		case f[0] == "E" && len(f) == 4:
			p.enqueued[f[1]] = enqueuedBatch{nums[2], nums[3]}
			p.maxLast = max(p.maxLast, nums[3])
		case f[0] == "A" && len(f) == 2:
			p.maxAck = max(p.maxAck, nums[1])
		case f[0] == "r" && len(f) == 3:
			p.ends[nums[1]+nums[2]-1] = true
		case f[0] == "R" && len(f) == 2:
			p.maxReceived = max(p.maxReceived, nums[1])
		default:
			t.Fatalf("child printed %q", line)
		}
	}
	return p
}

func checkOutboxAfterCrash(t *testing.T, s *Store, printed exchangePrinted) OutboxState {
	t.Helper()
	out, err := s.OutboxState("out")
	if err != nil {
		t.Fatal(err)
	}
	if out.Refined < printed.maxLast || out.Acked < printed.maxAck {
		t.Fatalf("outbox %+v, but records up to %d were enqueued and %d acknowledged", out, printed.maxLast, printed.maxAck)
	}
	pending, err := s.Pending("out", 0, 1<<30, 1<<40) // dense from Acked+1 to Refined, or an error
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(pending)) != out.Refined-out.Acked {
		t.Fatalf("%d records pending, outbox %+v", len(pending), out)
	}
	start := checkPendingBatches(t, out, pending, printed.enqueued)
	for tag, b := range printed.enqueued {
		if b.last > out.Acked {
			if _, ok := start[tag]; !ok {
				t.Fatalf("batch %s enqueued up to %d is not pending", tag, b.last)
			}
		}
	}
	// The index holds the blocks of the records pending, and Open cut what a batch cut short
	// left in the files (checkExchange checks the files).
	checkIndex(t, s, outboxPrefix("out"), out.Acked, out.Refined)
	return out
}

// checkPendingBatches checks that each pending record's batch (the record names it) is there
// whole (but for what was acknowledged), in one place, and where its Enqueue said if it
// returned. It returns where each batch starts, by tag.
func checkPendingBatches(t *testing.T, out OutboxState, pending []QueuedRecord, enqueued map[string]enqueuedBatch) map[string]uint64 {
	t.Helper()
	start := map[string]uint64{}
	for _, r := range pending {
		tag, i, n, size, err := parseOutRecord(r.Data)
		if err != nil {
			t.Fatalf("record %d: %v", r.Seq, err)
		}
		first := r.Seq - uint64(i)
		if s, ok := start[tag]; ok && s != first {
			t.Fatalf("batch %s at %d and at %d", tag, s, first)
		}
		start[tag] = first
		if end := first + uint64(n) - 1; end > out.Refined {
			t.Fatalf("batch %s ends at %d, beyond the last record %d", tag, end, out.Refined)
		}
		if b, ok := enqueued[tag]; ok && (b.last != first+uint64(n)-1 || b.n != uint64(n)) {
			t.Fatalf("batch %s at %d..%d, its Enqueue returned %d for %d records", tag, first, first+uint64(n)-1, b.last, b.n)
		}
		if !bytes.Equal(r.Data, outRecord(tag, i, n, size)) {
			t.Fatalf("record %d differs", r.Seq)
		}
	}
	return start
}

func checkInboxAfterCrash(t *testing.T, s *Store, printed exchangePrinted) InboxState {
	t.Helper()
	in, err := s.InboxState("in")
	if err != nil {
		t.Fatal(err)
	}
	if in.Last < printed.maxReceived || !printed.ends[in.Last] || in.Stored != in.Last || in.Deleted != 0 {
		t.Fatalf("inbox %+v, but records up to %d were received", in, printed.maxReceived)
	}
	got, err := s.Records("in", 0, 1<<30, 1<<40) // dense from 1 to Last, or an error
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != in.Last {
		t.Fatalf("%d records stored, inbox %+v", len(got), in)
	}
	checkIndex(t, s, inboxPrefix("in"), 0, in.Last)
	for _, r := range got {
		if !bytes.Equal(r.Data, inRecord(r.Seq)) {
			t.Fatalf("inbox record %d differs", r.Seq)
		}
	}
	return in
}

// Huge batches: hugeBatch records of hugeRecordSize bytes, which do not compress, in files
// of hugeSegmentSize bytes, so that each batch spans several files.
const (
	hugeBatch       = 48
	hugeRecordSize  = 16 << 10
	hugeSegmentSize = 128 << 10
	hugeRounds      = 3
)

// hugeRecord is record seq of the huge batches: random bytes, from seq.
func hugeRecord(seq uint64) []byte {
	b := make([]byte, hugeRecordSize)
	rng := rand.New(rand.NewPCG(seq, 7))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}

// TestHelperHugeBatch is TestHugeBatchKilled's child. It enqueues huge batches to the outbox
// "huge" and receives them in the inbox "huge", acknowledging and expiring the older ones as
// it goes, and prints each call once it returned:
//
//	E <last>   Enqueue returned last
//	R <last>   Receive returned last
func TestHelperHugeBatch(t *testing.T) {
	dir := os.Getenv(envHugeBatchDir)
	if dir == "" {
		t.Skip("run by TestHugeBatchKilled only")
	}
	smallSegments(t, hugeSegmentSize)
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	fmt.Println(crashReady)
	fmt.Println("go") // a line before the first kill
	batch := func(first uint64) [][]byte {
		recs := make([][]byte, hugeBatch)
		for i := range recs {
			recs[i] = hugeRecord(first + uint64(i))
		}
		return recs
	}
	out, err := s.OutboxState("huge")
	check(err)
	in, err := s.InboxState("huge")
	check(err)
	if in.Last < out.Refined { // the last round was killed between the two calls
		_, _, err := s.Receive("huge", in.Last+1, batch(in.Last+1), time.Now(), 0)
		check(err)
	}
	for b := 0; ; b++ {
		recs := batch(out.Refined + 1)
		last, err := s.Enqueue("huge", recs, hugeBatch, 0)
		check(err)
		fmt.Printf("E %d\n", last)
		_, last, err = s.Receive("huge", last-hugeBatch+1, recs, time.Now(), 0)
		check(err)
		fmt.Printf("R %d\n", last)
		if b%2 == 1 {
			check(s.Ack("huge", last-hugeBatch))
			_, err := s.DeleteRecordsReceivedBefore("huge", time.Now().Add(-time.Millisecond))
			check(err)
		}
		out.Refined = last
	}
}

// TestHugeBatchKilled kills a process that writes huge batches at a random moment, three
// times over one store, and checks that each batch is in both queues whole or not at all,
// that what was acknowledged and expired is gone, and that Open cut the files at their last
// indexed block and removed those no block is indexed in.
func TestHugeBatchKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	smallSegments(t, hugeSegmentSize)
	dir := t.TempDir()
	var maxE, maxR uint64
	for range hugeRounds {
		lines := killChild(t, "TestHelperHugeBatch", 1<<30, time.Duration(100+rand.IntN(1000))*time.Millisecond, envHugeBatchDir+"="+dir)
		for _, line := range lines {
			if line == "go" {
				continue
			}
			var op string
			var last uint64
			if _, err := fmt.Sscanf(line, "%s %d", &op, &last); err != nil || op != "E" && op != "R" {
				t.Fatalf("child printed %q", line)
			}
			if op == "E" {
				maxE = max(maxE, last)
			} else {
				maxR = max(maxR, last)
			}
		}
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("reopen after the crash: %v", err)
		}
		out, in := outbox(t, s, "huge"), inbox(t, s, "huge")
		if out.Refined < maxE || out.Refined%hugeBatch != 0 || in.Last < maxR || in.Last%hugeBatch != 0 {
			t.Fatalf("outbox %+v, inbox %+v, but Enqueue returned %d and Receive %d, in batches of %d", out, in, maxE, maxR, hugeBatch)
		}
		pending, err := s.Pending("huge", 0, 1<<30, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(pending)) != out.Refined-out.Acked {
			t.Fatalf("%d records pending, outbox %+v", len(pending), out)
		}
		for _, r := range pending {
			if !bytes.Equal(r.Data, hugeRecord(r.Seq)) {
				t.Fatalf("outbox record %d differs", r.Seq)
			}
		}
		got, err := s.Records("huge", 0, 1<<30, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(got)) != in.Stored {
			t.Fatalf("%d records stored, inbox %+v", len(got), in)
		}
		for _, r := range got {
			if !bytes.Equal(r.Data, hugeRecord(r.Seq)) {
				t.Fatalf("inbox record %d differs", r.Seq)
			}
		}
		checkIndex(t, s, outboxPrefix("huge"), out.Acked, out.Refined)
		checkIndex(t, s, inboxPrefix("huge"), in.Deleted, in.Last)
		checkSegmentFiles(t, s)
		t.Logf("outbox %+v, inbox %+v", out, in)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
