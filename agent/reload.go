package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// A reload (SIGHUP, `ssanet reload`) reads config.yaml again and applies what can change while
// the agent runs: the sinks, the ingest sources, the allow-list, the log level, and the offers
// (advertised again). Agreements, negotiations and queued records are untouched: they live in
// the store, not in the config. What only a restart can change (listen addresses, security,
// the store, ...) is reported, never silently ignored.

// ErrReload means a reload did not apply the config: it does not load (the old config stays,
// all of it), or a part of it could not be applied (that part stays as it was).
var ErrReload = errors.New("agent: config not reloaded")

// Outcomes of a reload: the label result of ssanet_config_reloads_total.
const (
	reloadOK     = "ok"
	reloadFailed = "failed"
)

// newReloadCounter registers ssanet_config_reloads_total{result}.
func newReloadCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ssanet", Name: "config_reloads_total",
		Help: "Reloads of config.yaml (SIGHUP, ssanet reload): ok (applied), failed (the config does not load, and the old one stays; or a part could not be applied)."},
		[]string{"result"})
	c.WithLabelValues(reloadOK)
	c.WithLabelValues(reloadFailed)
	reg.MustRegister(c)
	return c
}

// ReloadReport says what a reload did.
type ReloadReport struct {
	// Applied lists what changed: "sink NAME added", "ingest follow PATH removed", "allow",
	// "log-level", "offers readvertised".
	Applied []string `json:"applied"`
	// Restart lists the config keys that changed but take effect only at the next start.
	Restart []string `json:"restart,omitempty"`
	// Error, in the control API's answer to a reload that applied a part of the config only,
	// says what was not applied (kept as it was) and why; empty when all of it applied.
	Error string `json:"error,omitempty"`
}

// reloadable are the config keys a reload applies; every other one needs a restart.
var reloadable = map[string]bool{"sinks": true, "ingest": true, "allow": true, "log-level": true}

// allowList is the community allow-list, which a reload replaces while the gater reads it.
type allowList struct {
	peers atomic.Pointer[map[peer.ID]bool]
}

// newAllowList is the allow-list of peer IDs ids (validated with the config).
func newAllowList(ids []string) *allowList {
	l := &allowList{}
	l.set(ids)
	return l
}

func (l *allowList) set(ids []string) {
	m := map[peer.ID]bool{}
	for _, s := range ids {
		p, _ := peer.Decode(s) // validated with the config
		m[p] = true
	}
	l.peers.Store(&m)
}

// allowed reports whether p may connect: any peer when the list is empty.
func (l *allowList) allowed(p peer.ID) bool {
	m := *l.peers.Load()
	return len(m) == 0 || m[p]
}

// list is the allow-list as it is now (nil: anyone).
func (l *allowList) list() map[peer.ID]bool { return *l.peers.Load() }

// Reload reads config.yaml again and applies it, as SIGHUP does. A config that does not load
// (syntax, unknown key, what Validate refuses) changes nothing: the error says why, and the
// old config stays entirely. Otherwise the sinks, ingest sources, allow-list (connections of
// peers no longer in it are closed; with directory: amino their ssanet streams are reset and
// refused instead, members.go) and log level become the new config's and the offers are
// advertised again; a part that cannot be applied (a listener's address taken, a sink that
// cannot open) keeps its old setting and makes the error, the others apply. Keys that only a
// restart applies are listed in the report and logged. Each reload is counted in
// ssanet_config_reloads_total{result}.
func (a *Agent) Reload() (*ReloadReport, error) {
	a.closeMu.Lock()
	defer a.closeMu.Unlock()
	if a.closed {
		return nil, fmt.Errorf("%w: the agent is stopping", ErrReload)
	}
	rep, err := a.reload()
	if err != nil {
		a.reloads.WithLabelValues(reloadFailed).Inc()
		a.log.Error("config reload failed: fix config.yaml and reload again ('ssanet config check' lists every problem)", "err", err)
		return rep, err
	}
	a.reloads.WithLabelValues(reloadOK).Inc()
	a.log.Info("config reloaded", "applied", rep.Applied, "restart", rep.Restart)
	return rep, nil
}

func (a *Agent) reload() (*ReloadReport, error) {
	if err := CheckHome(a.home); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReload, err)
	}
	cfg, err := LoadConfig(filepath.Join(a.home, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("%w (the running config stays): %w", ErrReload, err)
	}
	rep := &ReloadReport{Applied: []string{}, Restart: restartKeys(a.cfg, cfg)}
	if key, err := LoadKey(a.home); err != nil {
		return nil, fmt.Errorf("%w (the running config stays): %w", ErrReload, err)
	} else if id, err := peer.IDFromPrivateKey(key); err != nil || id != a.self.PeerID() {
		rep.Restart = append(rep.Restart, KeyFile)
	}
	if len(rep.Restart) > 0 {
		a.log.Warn("config keys changed that apply only at the next start: restart the agent to apply them", "keys", rep.Restart)
	}
	var errs []error
	// A part that fails leaves the others applied: both report what they did change.
	changes, err := a.sources.reload(cfg.Ingest)
	rep.Applied = append(rep.Applied, changes...)
	if err != nil {
		errs = append(errs, err)
	} else {
		a.cfg.Ingest = cfg.Ingest
	}
	changes, err = a.sinks.reload(cfg.Sinks)
	rep.Applied = append(rep.Applied, changes...)
	if err != nil {
		errs = append(errs, err)
	} else {
		a.cfg.Sinks = cfg.Sinks
	}
	if !reflect.DeepEqual(a.cfg.Allow, cfg.Allow) {
		a.cfg.Allow = cfg.Allow
		a.allow.set(cfg.Allow)
		rep.Applied = append(rep.Applied, "allow")
		a.dropNonMembers("the peer is no longer in the allow-list")
	}
	if cfg.LogLevel != a.cfg.LogLevel {
		a.cfg.LogLevel = cfg.LogLevel
		a.setLevel()
		rep.Applied = append(rep.Applied, "log-level")
	}
	// Offers live in the store, not in the config; advertising them again puts any that
	// changed there since the last round into the directory now.
	if a.dir != nil {
		a.dir.Readvertise()
		rep.Applied = append(rep.Applied, "offers readvertised")
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("%w: %w", ErrReload, err)
	}
	return rep, nil
}

// setLevel sets the logger's level to config's log-level, or to the level the agent started
// with when the config has none.
func (a *Agent) setLevel() {
	if a.level == nil {
		return
	}
	lvl := a.startLevel
	if a.cfg.LogLevel != "" {
		_ = lvl.UnmarshalText([]byte(a.cfg.LogLevel)) // validated with the config
	}
	a.level.Set(lvl)
}

// restartKeys are the config keys that differ between old and new and that a reload does not
// apply, by their YAML names.
func restartKeys(old, new Config) []string {
	var out []string
	vo, vn := reflect.ValueOf(old), reflect.ValueOf(new)
	t := vo.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if reloadable[key] {
			continue
		}
		if !reflect.DeepEqual(vo.Field(i).Interface(), vn.Field(i).Interface()) {
			out = append(out, key)
		}
	}
	return out
}

// levelOf parses a log-level value of config.yaml.
func levelOf(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}
