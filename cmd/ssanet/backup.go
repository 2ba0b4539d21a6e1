package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ssanet/ssanet/agent"
)

func (c *cli) backupCommand() *cobra.Command {
	return c.command("backup FILE|-", "write a consistent copy of the running agent's store (not its key or config)", printsData, nargs(1, 1),
		func(a []string) int { return c.backup(a[0]) })
}

func (c *cli) backup(file string) int {
	if file == "-" {
		if c.json {
			return c.usageError("backup - writes the backup to stdout; run it without --json")
		}
		if _, err := c.streamBackup(c.stdout); err != nil {
			return c.fail(err)
		}
		return exitOK
	}
	// Checked first so as not to stream a whole backup for nothing; the link below is what
	// guarantees that an existing file is never replaced.
	if _, err := os.Lstat(file); err == nil {
		return c.fail(fmt.Errorf("%s exists: give a new file name", file))
	}
	// The store's secrets: CreateTemp makes the file 0600.
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".partial-*")
	if err != nil {
		return c.fail(fmt.Errorf("create the backup file: %w", err))
	}
	partial := f.Name()
	n, err := c.streamBackup(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return c.fail(errors.Join(err, os.Remove(partial)))
	}
	if err := publishNew(partial, file); err != nil {
		return c.fail(err)
	}
	if c.json {
		return c.printJSON(map[string]any{"file": file, "bytes": n})
	}
	fmt.Fprintf(c.stdout, "backup of %s written to %s (%d bytes); the identity key and config.yaml are not in it\n", c.home, file, n)
	return exitOK
}

// errBackupExists means the backup's file name was taken while the backup was written.
var errBackupExists = errors.New("the backup file appeared while the backup was written; it was left as it is")

// publishNew gives the complete file partial the name file, which must not exist: a hard link
// fails rather than replace a file made since the check (a rename would replace it). partial
// is removed; if the link cannot be made for another reason, it is kept and the error says
// where the backup is.
func publishNew(partial, file string) error {
	err := os.Link(partial, file)
	switch {
	case errors.Is(err, os.ErrExist):
		return fmt.Errorf("%s: %w: give a new file name", file, errors.Join(errBackupExists, os.Remove(partial)))
	case err != nil:
		return fmt.Errorf("the backup is complete in %s but could not be named %s (%w): rename it yourself", partial, file, err)
	}
	if err := os.Remove(partial); err != nil {
		return fmt.Errorf("the backup is in %s; remove the temporary name %s: %w", file, partial, err)
	}
	return nil
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

func (c *cli) restoreCommand() *cobra.Command {
	return c.command("restore FILE|- [--home NEWHOME]", "create the store of a new home from a backup", noData, nargs(1, 1),
		func(a []string) int { return c.restore(a[0]) })
}

func (c *cli) restore(file string) int {
	in := c.stdin
	if file != "-" {
		f, err := os.Open(file)
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
