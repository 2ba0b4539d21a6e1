package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ssanet/ssanet/agent"
)

// errNoDaemon means no agent answers on the home's control socket.
var errNoDaemon = errors.New("no ssanet daemon runs")

// api calls the control API of the daemon of c.home. A non-2xx answer becomes an error with
// the daemon's message; out (if not nil) receives the JSON or raw bytes of a 2xx answer.
func (c *cli) api(method, path string, body io.Reader, out any) error {
	sock := filepath.Join(c.home, agent.SocketFile)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequest(method, "http://ssanet"+path, body)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w in %s; start one with: ssanet --home %s run", errNoDaemon, c.home, c.home)
		}
		return fmt.Errorf("reach the daemon in %s: %w", c.home, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &apiStatusError{resp.StatusCode, e.Error}
		}
		return &apiStatusError{resp.StatusCode, resp.Status}
	}
	switch o := out.(type) {
	case nil:
	case *[]byte:
		*o = data
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("read the daemon's answer: %w", err)
		}
	}
	return nil
}

type apiStatusError struct {
	status int
	msg    string
}

func (e *apiStatusError) Error() string { return e.msg }

// exitFor maps an API error to an exit code: the caller's mistakes are usage errors.
func (c *cli) apiFail(err error) int {
	c.fail(err)
	var ae *apiStatusError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
		return exitUsage
	}
	return exitError
}
