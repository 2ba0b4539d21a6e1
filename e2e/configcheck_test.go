package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCheckStoredOffers: an offer the agent took (`offer add` does not compile its
// policy) whose filter does not compile, so that every request for it would be refused, is
// reported by `ssanet config check` as "offer ID: ...", asked of the running daemon, and the
// same once the daemon is stopped, read from its store.
func TestConfigCheckStoredOffers(t *testing.T) {
	prov := newAgent(t, "provider", "")
	prov.offer("provider.yaml")
	data, err := os.ReadFile(testdata(t, "provider.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(data), "id: ids-alerts", "id: broken", 1)
	broken = strings.Replace(broken, "  policy:\n", "  policy:\n    filtering:\n      - expr: r[\"source.ip\"] ==\n", 1)
	path := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := prov.cli("offer", "add", path); r.code != 0 {
		t.Skipf("offer add now refuses an offer whose filter does not compile, which config check reports too: %s", r)
	}
	const want = `offer broken: policy: SSA cannot be enforced: bad-filter: filtering: "r[\"source.ip\"] =="`
	check := func(how string) {
		t.Helper()
		r := prov.cli("config", "check")
		if r.code != 1 || !strings.HasPrefix(r.stdout, want) || strings.Contains(r.stdout, "ids-alerts") {
			t.Errorf("config check (%s): %s; want exit 1 and only offer broken reported", how, r)
		}
	}
	check("daemon running")
	prov.stop()
	check("daemon stopped")
}
