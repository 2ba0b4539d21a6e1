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
	"strings"
	"syscall"

	"github.com/ssanet/ssanet/agent"
)

// errNoDaemon means no agent answers on the home's control socket.
var errNoDaemon = errors.New("no ssanet daemon runs")

// api calls the control API of the daemon of c.home. A non-2xx answer becomes an error with
// the daemon's message; out (if not nil) receives the JSON or raw bytes of a 2xx answer.
func (c *cli) api(method, path string, body io.Reader, out any) error {
	resp, err := c.do(method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
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

// do sends one request to the control API of the daemon of c.home and returns its 2xx
// answer, whose body the caller closes. No daemon, and a non-2xx answer (with the daemon's
// message), are errors.
func (c *cli) do(method, path string, body io.Reader) (*http.Response, error) {
	sock, err := agent.ControlSocket(c.home)
	if errors.Is(err, agent.ErrUntrustedSocket) {
		return nil, err
	}
	hc := &http.Client{Timeout: c.apiTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequest(method, "http://ssanet"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			if _, serr := os.Stat(filepath.Join(c.home, agent.KeyFile)); errors.Is(serr, os.ErrNotExist) {
				return nil, fmt.Errorf("%w in %s: it is no agent home yet (no %s); create one with: %s, then start it with: %s",
					errNoDaemon, c.home, agent.KeyFile, c.hint("init"), c.hint("run"))
			}
			return nil, fmt.Errorf("%w in %s; start one with: %s", errNoDaemon, c.home, c.hint("run"))
		}
		return nil, fmt.Errorf("reach the daemon in %s: %w", c.home, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // the message is what there is of it
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, &apiStatusError{resp.StatusCode, e.Error, body}
		}
		return nil, &apiStatusError{resp.StatusCode, resp.Status, body}
	}
	return resp, nil
}

// hint is the command line of an ssanet command on this home, for a message to suggest.
func (c *cli) hint(args ...string) string {
	return "ssanet --home " + c.home + " " + strings.Join(args, " ")
}

// apiStatusError is a non-2xx answer of the daemon: its status, its message, and its body
// (up to 64 KiB), which may say more (a reload's report).
type apiStatusError struct {
	status int
	msg    string
	body   []byte
}

func (e *apiStatusError) Error() string { return e.msg }

// apiFail reports an API error and maps it to an exit code: the caller's mistakes are usage errors.
func (c *cli) apiFail(err error) int {
	c.fail(err)
	var ae *apiStatusError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
		return exitUsage
	}
	return exitError
}
