package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ssanet/ssanet/agent"
)

const (
	backupSynopsis  = "backup FILE|-: write a consistent copy of the running agent's store (not its key or config)"
	restoreSynopsis = "restore FILE|- [--home NEWHOME]: create a new home's store from a backup"
)

func cmdBackup(c *cli, args []string) int {
	pos, code := c.parse(c.flags("backup", "backup FILE|-"), args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("backup takes one FILE (- for stdout)")
	}
	file := pos[0]
	if file == "-" {
		if c.json {
			return c.usageError("backup - writes the backup to stdout; run it without --json")
		}
		if _, err := c.streamBackup(c.stdout); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	if _, err := os.Lstat(file); err == nil {
		return c.fail(fmt.Errorf("%s exists: give a new file name", file))
	}
	partial := file + ".partial"
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // the store's secrets
	if err != nil {
		return c.fail(fmt.Errorf("create the backup file: %w", err))
	}
	n, err := c.streamBackup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(partial, file)
	}
	if err != nil {
		return c.fail(errors.Join(err, os.Remove(partial)))
	}
	if c.json {
		return c.printJSON(map[string]any{"file": file, "bytes": n})
	}
	fmt.Fprintf(c.stdout, "backup of %s written to %s (%d bytes); the identity key and config.yaml are not in it\n", c.home, file, n)
	return exitOK
}

// streamBackup copies GET /v1/backup of the home's daemon to w, returning the bytes copied.
func (c *cli) streamBackup(w io.Writer) (int64, error) {
	resp, err := c.do("GET", "/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("backup cut short after %d bytes: %w", n, err)
	}
	if msg := resp.Trailer.Get("Ssanet-Backup-Error"); msg != "" {
		return n, fmt.Errorf("backup failed after %d bytes: %s", n, msg)
	}
	return n, nil
}

func cmdRestore(c *cli, args []string) int {
	fs := c.plainFlags("restore", "restore FILE|- [--home NEWHOME]")
	fs.StringVar(&c.home, "home", c.home, "the new home `DIR`, which must hold no store yet")
	pos, code := c.parse(fs, args)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("restore takes one FILE (- for stdin)")
	}
	in := c.stdin
	if pos[0] != "-" {
		f, err := os.Open(pos[0])
		if err != nil {
			return c.fail(fmt.Errorf("open the backup: %w", err))
		}
		defer f.Close()
		in = f
	}
	if err := agent.Restore(c.home, in); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "store restored into %s\n", filepath.Join(c.home, agent.DataDir))
	for _, name := range []string{agent.KeyFile, agent.ConfigFile} {
		if _, err := os.Stat(filepath.Join(c.home, name)); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(c.stdout, "copy %s of the agent the backup was taken of into %s (mode 0600) before: %s\n", name, c.home, c.hint("run"))
		}
	}
	return exitOK
}
