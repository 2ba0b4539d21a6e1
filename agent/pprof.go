package agent

import (
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
)

// errPprofAddress is the configuration's error when pprof is asked for without a loopback
// metrics address to serve it on.
var errPprofAddress = errors.New("config: pprof: true serves the Go profiler on the metrics address, which must then be set and loopback (127.0.0.1:PORT or [::1]:PORT): the profiles show the process's memory and code to whoever reads them")

// checkPprof checks that pprof, when on, has a loopback metrics address to be served on.
func (c *Config) checkPprof() error {
	if !c.Pprof {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Metrics)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errPprofAddress
	}
	return nil
}

// servePprof adds the Go profiler (net/http/pprof) under /debug/pprof/ to the metrics mux
// when the configuration turns it on (pprof: true), so that `go tool pprof
// http://ADDR/debug/pprof/profile?seconds=30` reads a running agent. Off by default: a
// profile costs CPU while it runs, and shows the process's memory.
func (a *Agent) servePprof(mux *http.ServeMux) {
	if !a.cfg.Pprof {
		return
	}
	mux.HandleFunc("/debug/pprof/", pprof.Index) // the named profiles too: heap, goroutine, allocs...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.log.Info("the Go profiler is served (pprof: true)", "url", "http://"+a.cfg.Metrics+"/debug/pprof/")
}
