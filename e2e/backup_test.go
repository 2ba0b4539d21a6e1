package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestBackupUnderLoadRestores: the requester's store (encrypted with encryption-key-file) is
// backed up by `ssanet backup` while records flow into it, and restored with `ssanet restore`
// into a fresh home that has the identity key, config and storage key copied in. The daemon
// of the new home shows the same agreement (export byte for byte) and a prefix of the
// original's records, record for record, at least those it held before the backup began.
func TestBackupUnderLoadRestores(t *testing.T) {
	t.Parallel()
	const storeKey = "store.key"
	key := strings.Repeat("5a", 32)
	withStoreKey := func(t *testing.T, a *agent) {
		if err := os.WriteFile(filepath.Join(a.home, storeKey), []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	prov := newAgent(t, "provider", "", fastExchange...)
	req := newAgent(t, "requester", "", append(fastExchange, withStoreKey, withYAML("encryption-key-file: "+storeKey))...)
	prov.offer("provider.yaml")
	id := agree(t, req, prov, requesterTemplate(t, "", "90d"))

	// Bounded load: batches of records ingested one after the other while the backup runs.
	const batches, per = 30, 40
	sample, dir := sampleEVE(t), t.TempDir()
	loadDone := make(chan error, 1)
	go func() {
		var err error
		for b := 0; b < batches && err == nil; b++ {
			var path string
			if path, err = writeStream(dir, fmt.Sprintf("b%d.jsonl", b), eveStream(sample, streamBase, b*per, per, nil)); err != nil {
				break
			}
			if r := runCLI("", nil, []string{"--home", prov.home, "ingest", "--format", "eve", path}); r.code != 0 {
				err = fmt.Errorf("%s", r)
			}
		}
		loadDone <- err
	}()
	deadline := time.Now().Add(settle)
	before := 0
	for before = len(req.records(id)); before == 0; before = len(req.records(id)) {
		if time.Now().After(deadline) {
			t.Fatalf("no record reached the requester in %s", settle)
		}
		time.Sleep(pollInterval)
	}
	file := filepath.Join(t.TempDir(), "requester.backup")
	req.must("backup", file)
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", fi, err)
	}
	all := req.records(id)
	for deadline := time.Now().Add(settle); len(all) < batches*per; all = req.records(id) {
		if time.Now().After(deadline) {
			t.Fatalf("the requester holds %d records %s after the load, want %d", len(all), settle, batches*per)
		}
		time.Sleep(pollInterval)
	}
	export, list := req.export(id), req.list()
	req.stop()

	home := filepath.Join(t.TempDir(), "restored")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"identity.key", "config.yaml", storeKey} {
		data, err := os.ReadFile(filepath.Join(req.home, name))
		if err == nil {
			err = os.WriteFile(filepath.Join(home, name), data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if r := run(t, "", []string{"SSANET_STORAGE_KEY=" + strings.Repeat("a5", 32)}, "restore", file, "--home", home); r.code != 1 ||
		!strings.Contains(r.stderr, "key") {
		t.Fatalf("restore with another key: %s; want exit 1 naming the key", r)
	}
	if r := run(t, "", nil, "restore", file, "--home", home); r.code != 0 {
		t.Fatalf("%s", r)
	}
	if r := run(t, "", nil, "restore", file, "--home", home); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("restore over a store: %s; want exit 1, already exists", r)
	}
	restored := &agent{t: t, node: &node{name: "restored", home: home, log: filepath.Join(filepath.Dir(home), "restored.log")}}
	t.Cleanup(func() {
		restored.stop()
		if t.Failed() {
			restored.dumpLog()
		}
	})
	restored.start()
	if got := restored.export(id); !bytes.Equal(got, export) {
		t.Errorf("the restored agreement exports %d bytes, the original %d, differently", len(got), len(export))
	}
	if got := restored.list(); !reflect.DeepEqual(got, list) {
		t.Errorf("restored negotiations %+v, want %+v", got, list)
	}
	got := restored.records(id)
	if len(got) < before || len(got) > len(all) {
		t.Fatalf("restored %d records; the requester held %d before the backup and %d after the load", len(got), before, len(all))
	}
	for i := range got {
		if got[i].Seq != all[i].Seq || !bytes.Equal(got[i].body(), all[i].body()) || !got[i].Received.Equal(all[i].Received) {
			t.Fatalf("restored record %d: seq %d %s, want seq %d %s", i, got[i].Seq, got[i].body(), all[i].Seq, all[i].body())
		}
	}
	t.Logf("backup under load: %d records held before it, %d in it, %d after the load", before, len(got), len(all))
}
