package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/ssanet/ssanet/storage"
)

// What a backup holds. The store only: agreements, transcripts, evidence, offers, the
// exchange queues and inboxes, followed-file positions. Not the identity key (KeyFile), the
// config or the storage encryption key: they are secrets or settings the operator keeps
// apart (a backup sent to a backup server must not let whoever reads it sign as the agent),
// and they are small files copied once, mode 0600, when the home is made. A restored store
// works only under the identity that signed its agreements: copy KeyFile and ConfigFile into
// the new home before it runs.

// Backup writes a consistent copy of the agent's store to w while the agent runs (see
// storage.Store.Backup). Of an encrypted store, the exchange records stay sealed under its
// key; the rest of the store is in clear.
func (a *Agent) Backup(w io.Writer) error {
	return a.store.Backup(w)
}

// Restore creates the store of home from a backup read from r. home must hold no store yet
// (ssanet init makes none; the daemon makes it when it first runs). The new store is
// encrypted with the key the home's config names (encryption-key-file) or
// SSANET_STORAGE_KEY, which must be the key of the store the backup was taken of: a backup of
// a store in clear is restored in clear.
func Restore(home string, r io.Reader) error {
	cfg := DefaultConfig()
	if _, err := os.Stat(filepath.Join(home, ConfigFile)); err == nil {
		if cfg, err = LoadConfig(filepath.Join(home, ConfigFile)); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read config: %w", err)
	}
	key, err := storageKey(home, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fmt.Errorf("create home %s: %w", home, err)
	}
	return storage.Restore(filepath.Join(home, DataDir), r, storage.Options{EncryptionKey: key,
		Reserve: cfg.StorageReserveMiB << 20, Profile: storage.Profile(cfg.StorageProfile)})
}

// backupTrailer is the HTTP trailer of GET /v1/backup that carries an error met after the
// stream began: the file the client wrote then lacks its end and must be thrown away.
const backupTrailer = "Ssanet-Backup-Error"

// serveBackup streams a backup (GET /v1/backup).
func (a *Agent) serveBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", backupTrailer)
	if err := a.Backup(ctxWriter{r.Context(), w}); err != nil {
		a.log.Warn("backup failed", "err", err)
		w.Header().Set(backupTrailer, err.Error())
		return
	}
	a.log.Info("backup taken")
}

// ctxWriter ends a backup stream at its next write once ctx ends (the client went away, or
// the daemon stops: the store's Close waits for a backup under way).
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("backup stopped: %w", err)
	}
	return c.w.Write(p)
}
