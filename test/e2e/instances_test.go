package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/network"
)

// tapMaster is the bridge tap is a port of in ns, "" if none or missing.
func tapMaster(ns, tap string) string {
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", tap).CombinedOutput()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	for i := range f[:len(f)-1] {
		if f[i] == "master" {
			return f[i+1]
		}
	}
	return ""
}

func nftIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v in %s: %v\n%s", args, ns, err, out)
	}
	return string(out)
}

// TestTwoBangersOnOneHost: two daemons with their own state, bridges and
// subnets on one machine (two users, or a system install next to a root
// user-mode daemon). Starting or restarting either leaves the other's
// taps, bridge and firewall alone, and a third configured with the first
// one's bridge is refused with a sentence naming its owner.
func TestTwoBangersOnOneHost(t *testing.T) {
	ns := newNetns(t)
	first := hostInNetns(t, ns, bins.Bangerd, "bridge = \"banger0\"\nsubnet = \"172.31.7.0/24\"\n")
	first.must("vm", "create", "--name", "web", "--memory", "128", "--disk", "64M")
	web := first.vm("web")
	webTap := network.TapName(web.ID)

	second := hostInNetns(t, ns, bins.Bangerd, "bridge = \"banger1\"\nsubnet = \"172.31.8.0/24\"\n")
	second.must("vm", "create", "--name", "db", "--memory", "128", "--disk", "64M")
	db := second.vm("db")
	dbTap := network.TapName(db.ID)

	assertIntact := func(when string) {
		t.Helper()
		if got := tapMaster(ns, webTap); got != "banger0" {
			t.Errorf("%s: first banger's tap %s is on %q, want banger0", when, webTap, got)
		}
		if got := tapMaster(ns, dbTap); got != "banger1" {
			t.Errorf("%s: second banger's tap %s is on %q, want banger1", when, dbTap, got)
		}
		tables := nftIn(t, ns, "list", "tables")
		for _, want := range []string{"table ip banger-banger0", "table bridge banger-banger0", "table ip banger-banger1", "table bridge banger-banger1"} {
			if !strings.Contains(tables, want) {
				t.Errorf("%s: %s missing from\n%s", when, want, tables)
			}
		}
		if set := nftIn(t, ns, "list", "set", "bridge", "banger-banger0", "guests"); !strings.Contains(set, web.IP) {
			t.Errorf("%s: first banger's VM %s is no longer admitted:\n%s", when, web.IP, set)
		}
		if set := nftIn(t, ns, "list", "set", "bridge", "banger-banger1", "guests"); !strings.Contains(set, db.IP) {
			t.Errorf("%s: second banger's VM %s is not admitted:\n%s", when, db.IP, set)
		}
	}
	assertIntact("after the second banger started")

	// A daemon's restart removes stale taps: only its own.
	first.must("daemon", "stop")
	first.must("vm", "list")
	second.must("daemon", "stop")
	second.must("vm", "list")
	assertIntact("after both daemons restarted")

	third := hostInNetns(t, ns, bins.Bangerd, "bridge = \"banger0\"\nsubnet = \"172.31.9.0/24\"\n")
	_, errOut, code := third.run("vm", "create", "--name", "x", "--memory", "128", "--disk", "64M")
	// The daemon refuses to start (network.enabled = "on"); the CLI points
	// at its log, where the reason is.
	log, _ := os.ReadFile(filepath.Join(third.stateDir(), "bangerd.log"))
	want := "bridge banger0 belongs to another banger (state dir " + first.stateDir() + ", uid 0); set network.bridge and network.subnet in your config to use another"
	if code == 0 || !strings.Contains(errOut+string(log), want) {
		t.Errorf("a third banger on the first one's bridge: exit %d, stderr %q, log:\n%s\nwant a refusal saying %q", code, errOut, log, want)
	}
	assertIntact("after the third banger was refused")
}
