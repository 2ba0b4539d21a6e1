package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/ssanet/ssanet/protocol"
)

// Unix socket sources: Suricata's eve-log outputs `filetype: unix_stream` (one EVE record per
// line on a connection) and `unix_dgram` (one record per datagram) write to a socket that
// the agent creates and listens on, so the sensor feeds the agent with no file between them.

// UnixSourceConfig is one Unix socket the agent creates and reads records from.
type UnixSourceConfig struct {
	// Path is where the socket is created; its directory must exist (the operator names it,
	// and its permissions say who may reach the socket). A socket left there by an earlier
	// run is replaced; any other file is an error. The socket is removed at shutdown.
	Path string `yaml:"path"`
	// Type is stream (SOCK_STREAM: one record per line, as Suricata's unix_stream) or dgram
	// (SOCK_DGRAM: one record per datagram, as unix_dgram).
	Type string `yaml:"type"`
	// Format of the records; default eve.
	Format string `yaml:"format,omitempty"`
	// Mode is the socket's permission bits: "0600" (default: the agent's user only) or
	// "0660" (its group too, e.g. a suricata user in the agent's group).
	Mode string `yaml:"mode,omitempty"`
}

// Unix socket types.
const (
	UnixStream = "stream"
	UnixDgram  = "dgram"
)

// unixModes are the permission bits a socket may have, by their config spelling.
var unixModes = map[string]fs.FileMode{"": 0o600, "0600": 0o600, "0660": 0o660}

// startUnix creates the socket of u and starts reading it; it is closed and removed when ctx
// ends.
func (s *sources) startUnix(ctx context.Context, u UnixSourceConfig) error {
	format := u.Format
	if format == "" {
		format = protocol.FormatEVE
	}
	if err := removeStaleSocket(u.Path); err != nil {
		return err
	}
	// Created under a temporary name, given its mode, then renamed into place: nobody can
	// connect before the mode is set.
	tmp := filepath.Join(filepath.Dir(u.Path), fmt.Sprintf(".%s.%d.tmp", filepath.Base(u.Path), os.Getpid()))
	if err := removeStaleSocket(tmp); err != nil {
		return err
	}
	var closer io.Closer // closed here unless the socket is started
	switch u.Type {
	case UnixStream:
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
		if err != nil {
			return fmt.Errorf("unix socket %s: %w", u.Path, err)
		}
		ln.SetUnlinkOnClose(false) // removed by its path below: it is renamed
		closer = ln
		defer func() {
			if closer != nil { // not started
				ln.Close()
			}
		}()
		if err := placeSocket(tmp, u.Path, unixModes[u.Mode]); err != nil {
			return err
		}
		c := s.newCollector(ctx, format)
		s.goRun(func() { s.unixStream(ctx, ln, c, u.Path) })
	case UnixDgram:
		pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: tmp, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("unix socket %s: %w", u.Path, err)
		}
		closer = pc
		defer func() {
			if closer != nil {
				closer.Close()
			}
		}()
		if err := placeSocket(tmp, u.Path, unixModes[u.Mode]); err != nil {
			return err
		}
		c := s.newCollector(ctx, format)
		s.goRun(func() { s.unixDgram(ctx, pc, c, u.Path) })
	default:
		return fmt.Errorf("unix socket %s: type %q is not %s or %s", u.Path, u.Type, UnixStream, UnixDgram)
	}
	stop := closer
	closer = nil
	s.goRun(func() {
		<-ctx.Done()
		stop.Close()
		if err := os.Remove(u.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove unix socket", "path", u.Path, "err", err)
		}
	})
	return nil
}

// removeStaleSocket removes the socket at path, if there is one; another kind of file there
// is an error.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("unix socket %s: %w", path, err)
	case info.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("unix socket %s: a file that is no socket is there; remove it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("unix socket %s: remove the one an earlier run left: %w", path, err)
	}
	return nil
}

// placeSocket gives the socket at tmp its mode and renames it to path.
func placeSocket(tmp, path string, mode fs.FileMode) error {
	err := os.Chmod(tmp, mode)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", path, errors.Join(err, os.Remove(tmp)))
	}
	return nil
}

// unixStream accepts connections on ln and reads one record per line from each.
func (s *sources) unixStream(ctx context.Context, ln *net.UnixListener, c *collector, path string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("unix socket", "path", path, "err", err)
			}
			return
		}
		s.goRun(func() {
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			c.readStream(ctx, conn, "unix "+path, false)
		})
	}
}

// unixDgram reads one record per datagram from pc. A datagram over maxFrame (cut by the
// kernel: MSG_TRUNC) is counted malformed.
func (s *sources) unixDgram(ctx context.Context, pc *net.UnixConn, c *collector, path string) {
	buf := make([]byte, maxFrame+1)
	for {
		n, _, flags, _, err := pc.ReadMsgUnix(buf, nil)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("unix socket", "path", path, "err", err)
			}
			return
		}
		if flags&syscall.MSG_TRUNC != 0 || n > maxFrame {
			s.badFrame("unix "+path, "", fmt.Errorf("%w: a datagram over %d bytes", errFrame, maxFrame))
			continue
		}
		msg := bytes.TrimRight(buf[:n], "\r\n")
		if len(msg) == 0 {
			continue
		}
		select {
		case c.recs <- slices.Clone(msg):
		case <-ctx.Done():
			return
		}
	}
}
