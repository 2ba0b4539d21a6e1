package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ssanet/ssanet/storage"
)

// volumeSize is the size of the tmpfs the provider's store lives on (the 64 MiB).
const volumeSize = 64 << 20

// withDataVolume mounts a tmpfs of size bytes (mode 0700) as the home's data directory, where
// the store lives; it is unmounted at cleanup, after the daemon has stopped. The test is
// skipped when it does not run as root or mounting is not permitted.
func withDataVolume(size int) option {
	return func(t *testing.T, a *agent) {
		t.Helper()
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs needs root (CI runs as root)")
		}
		dir := filepath.Join(a.home, "data")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
			t.Skipf("mount a tmpfs on %s: %v (mounting is not permitted here)", dir, err)
		}
		t.Cleanup(func() { // registered before the daemon's stop, so it runs after it
			if err := syscall.Unmount(dir, 0); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
	}
}

// freeSpace returns the bytes free on the volume of dir.
func freeSpace(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestDiskFull: the provider's store is on a 64 MiB tmpfs, filled by a filler file to 3 MiB
// above the default reserve, and records are ingested 2,000 at a time while the requester is
// down, until an ingest is refused for lack of space. The provider must not crash: it says
// so (the ingest fails naming the free and needed bytes, the log says it once, the
// requester's monitor shows it) and keeps every record it acknowledged. Once the filler is
// removed, ingest resumes, and the requester ends up holding every record once, in order.
func TestDiskFull(t *testing.T) {
	const chunk = 2000 // under the agent's ingest chunk: an ingest is one enqueue, all or nothing
	port := func() string { return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)) }
	prov := newAgent(t, "provider", port(), append(fastExchange, withDataVolume(volumeSize))...)
	req := newAgent(t, "requester", port(), fastExchange...)
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))
	req.stop() // the provider queues everything: nothing is acknowledged and deleted meanwhile

	vol := filepath.Join(prov.home, "data")
	// The provider's reserve, and the room left above it: the records take about a fifth of
	// their raw size in the segment files, and an ingest needs the reserve plus its records'
	// raw size, so a few chunks (1.5 MB raw each) fill it.
	const reserve, room = storage.DefaultReserve, 3 << 20
	filler := filepath.Join(vol, "filler")
	if err := os.WriteFile(filler, make([]byte, freeSpace(t, vol)-reserve-room), 0o600); err != nil {
		t.Fatal(err)
	}

	sample := sampleEVE(t)
	stream := eveStream(sample, streamBase, 0, 40*chunk, nil)
	dir := t.TempDir()
	ingest := func(k int) result {
		path, err := writeStream(dir, fmt.Sprintf("chunk-%03d.jsonl", k), stream[k*chunk:(k+1)*chunk])
		if err != nil {
			t.Fatal(err)
		}
		return prov.cli("--json", "ingest", "--format", "eve", path)
	}
	// At most 40 chunks (about 30 MiB of records, more than the room): the ingest that does
	// not fit is refused.
	k := 0
	var refused result
	for ; k < len(stream)/chunk; k++ {
		r := ingest(k)
		if r.code != 0 {
			refused = r
			break
		}
	}
	prov.checkAlive(t, fmt.Sprintf("with %d chunks queued", k))
	if k == len(stream)/chunk || !strings.Contains(refused.stderr, "not enough free disk space") ||
		!strings.Contains(refused.stderr, "bytes free") {
		t.Fatalf("after %d chunks of %d records with %d MiB free: the last ingest %s; want a refusal for lack of disk space",
			k, chunk, (reserve+room)>>20, refused)
	}
	if k == 0 {
		t.Fatalf("the first ingest was refused, with %d MiB free above the reserve", room>>20)
	}
	queued := k * chunk

	// The requester comes back: it is told the provider pauses, and gets what was queued.
	req.start()
	deadline := time.Now().Add(deliverBy)
	for {
		as := req.monitor(id)
		if strings.Contains(strings.Join(as.Reasons, "; "), "provider's disk is below its reserve") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the requester's monitor does not show the provider's pause after %s: verdict %s, reasons %v", deliverBy, as.Verdict, as.Reasons)
		}
		time.Sleep(pollInterval * 2)
	}
	if n := prov.logLines("disk below its reserve"); n != 1 {
		t.Errorf("the provider logged its pause %d times, want once", n)
	}
	waitInbox(t, req, id, queued, deliverBy)

	// Space returns: ingest resumes with the chunk that was refused.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	total := queued + 3*chunk
	for ; k*chunk < total; k++ {
		if r := ingest(k); r.code != 0 {
			t.Fatalf("ingest of chunk %d after the space returned: %s", k, r)
		}
	}
	as := waitInbox(t, req, id, total, deliverBy)
	checkStream(t, id, req.records(id), stream[:total])
	prov.checkAlive(t, "after the space returned")
	if n := prov.logLines("disk space back above the reserve"); n != 1 {
		t.Errorf("the provider logged the end of its pause %d times, want once", n)
	}
	t.Logf("%d records queued before an ingest was refused with %d MiB above the reserve (%s); all %d delivered once after the space returned; monitor: %s %v",
		queued, room>>20, strings.TrimSpace(refused.stderr), total, as.Verdict, as.Reasons)
}

// checkAlive fails the test if the daemon has exited or exits within 5 s (a failed call may
// return just before the process ends), quoting the fault from its log.
func (a *agent) checkAlive(t *testing.T, when string) {
	t.Helper()
	_, done := a.running()
	if done != nil {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return
		}
	}
	var fault string
	if data, err := os.ReadFile(a.log); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "signal SIG") || strings.Contains(l, "fatal error") || strings.HasPrefix(l, "panic") {
				fault += "\n\t" + l
			}
		}
	}
	t.Fatalf("the %s died %s: %v%s", a.name, when, a.exitErr(), fault)
}
