package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCutShort: an empty config, or one cut short by a failed write, is refused; the
// agent never starts on the defaults (every interface, mDNS on, no allow-list).
func TestConfigCutShort(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Allow = []string{"12D3KooWP4di9gewGsjwMBmjMz1eox58qzYKYhRJWM2saqEZvSen"}
	path := filepath.Join(t.TempDir(), ConfigFile)
	if err := WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err != nil {
		t.Fatalf("the config init writes: %v", err)
	}
	cutAt := func(key string) string { return string(full[:strings.Index(string(full), "\n"+key+":")+1]) }
	for _, tc := range []struct{ name, body, want string }{
		{"empty", "", "it is empty"},
		{"comments only", configHeader, "it is empty"},
		{"no final newline", strings.TrimSuffix(string(full), "\n"), "does not end with a newline"},
		{"cut before accept", cutAt("accept"), "no accept: key"},
		{"cut before mdns", cutAt("mdns"), "no mdns: key"},
		{"not a mapping", "- listen\n", "is a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			if !errors.Is(err, ErrConfigIncomplete) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadConfig: %v; want %v saying %q", err, ErrConfigIncomplete, tc.want)
			}
		})
	}
}

// TestHomePermissions: a key others can read, or a home others can write (they could replace
// the key, the config or the control socket), is refused with the chmod to run.
func TestHomePermissions(t *testing.T) {
	for _, tc := range []struct {
		name       string
		file       string
		mode       os.FileMode
		wantInMsg  string
		startsFine bool
	}{
		{name: "as init makes it", startsFine: true},
		{name: "key readable by others", file: KeyFile, mode: 0o644, wantInMsg: "run chmod 0600"},
		{name: "key readable by the group", file: KeyFile, mode: 0o640, wantInMsg: "run chmod 0600"},
		{name: "home writable by all", file: ".", mode: 0o777, wantInMsg: "run chmod 0755"},
		{name: "home writable by the group", file: ".", mode: 0o770, wantInMsg: "run chmod 0750"},
		{name: "home readable by others", file: ".", mode: 0o755, startsFine: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), "agent")
			cfg := DefaultConfig()
			cfg.Listen, cfg.MDNS = []string{"/ip4/127.0.0.1/tcp/0"}, false
			if _, err := Init(home, cfg); err != nil {
				t.Fatal(err)
			}
			if tc.file != "" {
				if err := os.Chmod(filepath.Join(home, tc.file), tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			a, err := New(home, Options{})
			if tc.startsFine {
				if err != nil {
					t.Fatal(err)
				}
				a.Close()
				return
			}
			if err == nil {
				a.Close()
				t.Fatal("the agent started")
			}
			if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), tc.wantInMsg) {
				t.Fatalf("New: %v; want %v saying %q", err, ErrPermissions, tc.wantInMsg)
			}
		})
	}
}
