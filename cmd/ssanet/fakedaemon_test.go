package main

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssanet/ssanet/agent"
)

// fakeDaemon serves h on the control socket of a new home, as a daemon of that home would,
// until the test ends; it returns the home.
func fakeDaemon(t *testing.T, h http.Handler) string {
	t.Helper()
	home := t.TempDir()
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(home, agent.SocketFile)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close() // ends the handlers' requests too
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake daemon: %v", err)
		}
	})
	return home
}

// TestRunDaemonHangs: run checks that no daemon runs in its home; one that accepts
// connections and never answers makes run fail within a bound, saying what to look at,
// instead of waiting for ever.
func TestRunDaemonHangs(t *testing.T) {
	home := fakeDaemon(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}))
	start := time.Now()
	done := make(chan struct{})
	var out, errs string
	var code int
	go func() {
		defer close(done)
		out, errs, code = ssanet(t, "--home", home, "run")
	}()
	select {
	case <-done:
	case <-time.After(daemonCheckTimeout + 20*time.Second):
		t.Fatalf("ssanet run still waits %s after it started, for a daemon that does not answer", time.Since(start).Round(time.Second))
	}
	if code != exitError || !strings.Contains(errs, "did not answer within "+daemonCheckTimeout.String()) ||
		!strings.Contains(errs, agent.SocketFile) || !strings.Contains(errs, "look at its log") {
		t.Errorf("run with a daemon that does not answer: exit %d\nstdout: %s\nstderr: %s\nwant exit 1 naming the socket and what to look at", code, out, errs)
	}
}

// TestBackupNeverReplaces: a file that appears under the backup's name while the backup is
// written (the daemon makes it here, between the check and the end of the stream) is left as
// it is, and the command fails saying so; without one the backup gets the name. Neither
// leaves a partial file.
func TestBackupNeverReplaces(t *testing.T) {
	const precious, stream = "somebody else's file\n", "backup stream"
	for _, tc := range []struct {
		name     string
		appears  bool // the file appears while the backup is written
		code     int
		errs     string
		contents string
	}{
		{name: "file appears", appears: true, code: exitError, errs: "appeared while the backup was written", contents: precious},
		{name: "new file", code: exitOK, contents: stream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "store.bak")
			home := fakeDaemon(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/backup" {
					http.NotFound(w, r)
					return
				}
				if tc.appears {
					if err := os.WriteFile(file, []byte(precious), 0o600); err != nil {
						t.Error(err)
					}
				}
				w.Write([]byte(stream))
			}))
			out, errs, code := ssanet(t, "--home", home, "backup", file)
			if code != tc.code || !strings.Contains(errs, tc.errs) {
				t.Errorf("backup: exit %d\nstdout: %s\nstderr: %s\nwant exit %d and %q", code, out, errs, tc.code, tc.errs)
			}
			if b, err := os.ReadFile(file); err != nil || string(b) != tc.contents {
				t.Errorf("%s holds %q (%v) after the backup, want %q", file, b, err, tc.contents)
			}
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
				t.Errorf("%s holds %v (%v), want only %s", dir, ents, err, filepath.Base(file))
			}
		})
	}
}
