package storage

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test's child process is this test binary, run with these variables set.
const (
	envCrashDir   = "SSANET_STORAGE_CRASH_DIR"
	envCrashRound = "SSANET_STORAGE_CRASH_ROUND"
)

const (
	crashRounds     = 3
	crashGoroutines = 4
	// crashPerRound negotiations of a round commit an agreement; later ones commit none.
	crashPerRound = 150
	crashMinAcks  = 200
	crashMaxTime  = 10 * time.Second // from the child's first commit
	// crashSetupTime bounds the child's set-up (signing its agreements), slow under -race.
	crashSetupTime = 2 * time.Minute
)

// crashReady is the line the child prints once it is about to commit.
const crashReady = "ready"

// crashAck is one acknowledged commit as the child reported it: after it, the negotiation's
// transcript holds at least messages entries, and the agreement (if any) is stored.
type crashAck struct {
	nid       []byte
	messages  int
	agreement string
}

func (a crashAck) String() string {
	ag := a.agreement
	if ag == "" {
		ag = "-"
	}
	return fmt.Sprintf("%x %d %s", a.nid, a.messages, ag)
}

func parseAck(line string) (crashAck, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return crashAck{}, fmt.Errorf("ack %q: want 3 fields", line)
	}
	nid, err := hex.DecodeString(f[0])
	if err != nil {
		return crashAck{}, err
	}
	m, err := strconv.Atoi(f[1])
	if err != nil {
		return crashAck{}, err
	}
	a := crashAck{nid: nid, messages: m}
	if f[2] != "-" {
		a.agreement = f[2]
	}
	return a, nil
}

// TestHelperProcess is the crash test's child: it commits negotiations from several
// goroutines until it is killed, and prints each commit's ack once Commit has returned.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("run by TestCrash only")
	}
	round, err := strconv.Atoi(os.Getenv(envCrashRound))
	if err != nil {
		t.Fatal(err)
	}
	f := approvedFixture(t)
	pool := makeAgreements(t, fmt.Sprintf("crash%d", round), crashPerRound)
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Println(crashReady); err != nil {
		t.Fatal(err)
	}
	var out sync.Mutex
	ack := func(a crashAck) {
		out.Lock()
		defer out.Unlock()
		if _, err := fmt.Fprintln(os.Stdout, a); err != nil {
			panic(err)
		}
	}
	var wg sync.WaitGroup
	for g := range crashGoroutines {
		wg.Go(func() {
			for k := g; ; k += crashGoroutines {
				nid := testNID(uint64(round)<<32 | uint64(k))
				n := &Negotiation{ID: nid, SSAID: fmt.Sprintf("crash-%d-%d", round, k), Created: time.Now()}
				if err := s.Commit(n, f.msgs[:1], nil); err != nil {
					panic(err)
				}
				ack(crashAck{nid: nid, messages: 1})
				var a *crashAck
				n.Updated, n.Delivered = time.Now(), true
				if k < len(pool) {
					err = s.Commit(n, f.msgs[1:], pool[k])
					a = &crashAck{nid: nid, messages: len(f.msgs), agreement: pool[k].ID}
				} else {
					err = s.Commit(n, f.msgs[1:], nil)
					a = &crashAck{nid: nid, messages: len(f.msgs)}
				}
				if err != nil {
					panic(err)
				}
				ack(*a)
			}
		})
	}
	wg.Wait() // never: the parent kills this process
}

// TestCrash kills a process that commits in a loop, at a random moment, and checks that every
// commit it acknowledged is there and complete, and that no commit is there in part; three
// times over the same store. A killed process leaves the kernel's page cache behind, so this
// tests atomicity and recovery, not the fsync that a power cut needs: that is SyncWrites'.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	f := approvedFixture(t)
	var acks []crashAck
	for round := range crashRounds {
		got := crashChild(t, dir, round)
		t.Logf("round %d: %d acknowledged commits before SIGKILL", round, len(got))
		acks = append(acks, got...)

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("reopen after the crash: %v", err)
		}
		for _, a := range acks {
			if err := checkAck(s, f.msgs, a); err != nil {
				t.Errorf("acknowledged commit %s: %v", a, err)
			}
		}
		// Atomicity: whatever was written, acknowledged or not, is whole.
		ns, err := s.Negotiations()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			tr, err := s.Transcript(n.ID)
			if err != nil {
				t.Errorf("negotiation %x: %v", n.ID, err)
				continue
			}
			if !slices.EqualFunc(tr, f.msgs[:len(tr)], bytes.Equal) || (len(tr) != 1 && len(tr) != len(f.msgs)) {
				t.Errorf("negotiation %x: transcript of %d entries is not a commit's", n.ID, len(tr))
			}
			if (len(tr) == len(f.msgs)) != n.Delivered {
				t.Errorf("negotiation %x: record and transcript are of different commits", n.ID)
			}
		}
		if _, err := s.Agreements(); err != nil {
			t.Error(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}

// crashChild runs the child for one round, kills it with SIGKILL after a random number of
// acknowledged commits (at least crashMinAcks) or crashMaxTime, and returns every ack it
// printed.
func crashChild(t *testing.T, dir string, round int) []crashAck {
	t.Helper()
	lines := killChild(t, "TestHelperProcess", crashMinAcks+rand.IntN(crashMinAcks), crashMaxTime,
		envCrashDir+"="+dir, envCrashRound+"="+strconv.Itoa(round))
	var acks []crashAck
	for _, line := range lines {
		a, err := parseAck(line)
		if err != nil {
			t.Errorf("child printed %q: %v", line, err)
			continue
		}
		acks = append(acks, a)
	}
	return acks
}

// killChild runs this test binary's test helper with env added, kills it with SIGKILL after
// it has printed killAt lines or maxTime after it printed crashReady, and returns the lines
// it printed after crashReady. Each line is one write of less than PIPE_BUF bytes,
// which a kill cannot cut.
func killChild(t *testing.T, helper string, killAt int, maxTime time.Duration, env ...string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out []string
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(crashSetupTime)
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil {
				t.Errorf("kill child: %v", err)
			}
		}
	}
	for done := false; !done; {
		select {
		case line, ok := <-lines:
			if !ok {
				done = true
				break
			}
			if line == crashReady {
				deadline = time.After(maxTime)
				continue
			}
			out = append(out, line)
			if len(out) >= killAt {
				kill()
			}
		case <-deadline:
			kill()
			deadline = nil
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited by itself (%v): %s", err, stderr.String())
	}
	if len(out) == 0 {
		t.Fatalf("child acknowledged nothing: %s", stderr.String())
	}
	return out
}

// checkAck checks that an acknowledged commit is in the store, whole.
func checkAck(s *Store, msgs [][]byte, a crashAck) error {
	n, err := s.Negotiation(a.nid)
	if err != nil {
		return err
	}
	tr, err := s.Transcript(a.nid)
	if err != nil {
		return err
	}
	if len(tr) < a.messages {
		return fmt.Errorf("transcript has %d messages, %d were acknowledged", len(tr), a.messages)
	}
	if !slices.EqualFunc(tr, msgs[:len(tr)], bytes.Equal) {
		return fmt.Errorf("transcript differs from the messages committed")
	}
	if a.messages == len(msgs) && !n.Delivered {
		return fmt.Errorf("record of the first commit after the second was acknowledged")
	}
	byID, err := s.NegotiationBySSA(n.SSAID)
	if err != nil {
		return err
	}
	if !bytes.Equal(byID.ID, a.nid) {
		return fmt.Errorf("SSA %s indexed to %x", n.SSAID, byID.ID)
	}
	if a.agreement != "" {
		if _, err := s.Agreement(a.agreement); err != nil {
			return err
		}
		byID, err := s.NegotiationBySSA(a.agreement)
		if err != nil {
			return err
		}
		if !bytes.Equal(byID.ID, a.nid) {
			return fmt.Errorf("agreement %s indexed to %x", a.agreement, byID.ID)
		}
	}
	return nil
}
