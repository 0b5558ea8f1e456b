package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/nstest"
)

// netnsHost is a host whose daemon runs inside a network namespace the test
// made, so bridge, taps, NAT and DNS never touch the host's own namespace.
func netnsHost(t *testing.T) (*host, string) {
	t.Helper()
	return netnsHostWith(t, bins.Bangerd)
}

// netnsHostWith is netnsHost running daemon (a bangerd build) with extraEnv.
func netnsHostWith(t *testing.T, daemon string, extraEnv ...string) (*host, string) {
	t.Helper()
	ns := newNetns(t)
	return hostInNetns(t, ns, daemon, "subnet = \"172.31.7.0/24\"\n", extraEnv...), ns
}

// newNetns makes a network namespace (lo up) for daemons, removed when the
// test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace for the daemon")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip) to create a network namespace")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "bge2e-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return ns
}

// hostInNetns is a host (its own state, config and daemon) whose daemon
// runs in ns with networking on and netCfg added to its [network] table.
// Several hosts in one ns are several bangers on one machine.
func hostInNetns(t *testing.T, ns, daemon, netCfg string, extraEnv ...string) *host {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "bangerd-in-ns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns, daemon)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, append(extraEnv, "BANGER_DAEMON="+wrapper)...)
	cfg := fmt.Sprintf("vmm = \"firecracker\"\n[firecracker]\nbinary = %q\n[network]\nenabled = \"on\"\n%s", bins.FakeFirecracker, netCfg)
	if err := os.WriteFile(filepath.Join(h.dir, "config", "banger", "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	h.must("daemon", "stop") // newHost's image import started a daemon with the old config
	return h
}

func linkExists(ns, name string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", name).Run() == nil
}

// lookupIn asks the resolver at server for name, from inside namespace ns.
func lookupIn(t *testing.T, ns, server, name string) (addr string, rcode int) {
	t.Helper()
	err := nstest.InNamed(ns, func() error {
		c := &mdns.Client{Timeout: 3 * time.Second}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		r, _, err := c.Exchange(m, server+":53")
		if err != nil {
			return err
		}
		rcode = r.Rcode
		for _, rr := range r.Answer {
			if a, ok := rr.(*mdns.A); ok {
				addr = a.A.String()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("DNS query for %s in %s: %v", name, ns, err)
	}
	return addr, rcode
}

func TestVMNetworkingInsideNamespace(t *testing.T) {
	h, ns := netnsHost(t)
	h.must("vm", "create", "--name", "web", "--memory", "128", "--disk", "64M")
	vm := h.vm("web")
	if !strings.HasPrefix(vm.IP, "172.31.7.") || vm.MAC == "" || vm.DNSName != "web.banger" {
		t.Fatalf("vm has no network identity: %+v", vm)
	}
	tap := network.TapName(vm.ID)
	if !linkExists(ns, "banger0") || !linkExists(ns, tap) {
		t.Fatalf("bridge or tap %s missing in %s", tap, ns)
	}
	if linkExists("", tap) {
		t.Fatal("tap created in the host namespace")
	}
	out, _ := exec.Command("ip", "-n", ns, "-o", "link", "show", tap).CombinedOutput()
	if !strings.Contains(string(out), "master banger0") {
		t.Fatalf("tap not on the bridge: %s", out)
	}
	out, _ = exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput()
	if !strings.Contains(string(out), "banger") {
		t.Fatalf("banger's nftables table missing: %s", out)
	}
	if addr, rcode := lookupIn(t, ns, "172.31.7.1", "web.banger"); addr != vm.IP {
		t.Fatalf("web.banger resolved to %q (rcode %d), want %s", addr, rcode, vm.IP)
	}

	// Stop releases the tap; the address and name stay with the VM.
	h.must("vm", "stop", "web")
	if linkExists(ns, tap) {
		t.Fatal("tap left after stop")
	}
	h.must("vm", "start", "web")
	if got := h.vm("web"); got.IP != vm.IP || got.MAC != vm.MAC {
		t.Fatalf("address changed across restart: %s/%s -> %s/%s", vm.IP, vm.MAC, got.IP, got.MAC)
	}
	if !linkExists(ns, tap) {
		t.Fatal("tap not recreated on start")
	}

	// A port forward (added live, persistent) reaches the guest address. No
	// guest NIC exists under the fake VMM, so a listener bound to the VM's
	// address inside the namespace stands in for the guest's server.
	serveAt(t, ns, vm.IP+":8000", "hello from the guest")
	h.must("vm", "port-forward", "web", "18080:8000")
	if got := dialIn(t, ns, "127.0.0.1:18080"); got != "hello from the guest" {
		t.Fatalf("forward answered %q", got)
	}
	h.must("vm", "restart", "web")
	if got := dialIn(t, ns, "127.0.0.1:18080"); got != "hello from the guest" {
		t.Fatalf("forward after restart answered %q", got)
	}
	if !strings.Contains(h.must("vm", "show", "web"), "127.0.0.1:18080:8000") {
		t.Fatal("vm show does not list the forward")
	}
	if _, errOut, code := h.run("vm", "port-forward", "web", "99999:80"); code == 0 || !strings.Contains(errOut, "1 to 65535") {
		t.Fatalf("bad port accepted: %s", errOut)
	}
	h.must("vm", "port-forward", "web", "18080:8000", "--remove")
	if err := tryDialIn(ns, "127.0.0.1:18080"); err == nil {
		t.Fatal("removed forward still listens")
	}

	// A second VM gets another address.
	h.must("vm", "create", "--name", "db", "--isolated", "--memory", "128", "--disk", "64M")
	db := h.vm("db")
	if db.IP == vm.IP || db.IP == "" || !db.Isolated {
		t.Fatalf("second VM: %+v (first %s)", db, vm.IP)
	}
	out, _ = exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	// (nft prints the isolated tap's ifname set element as "", so the
	// address set is what this asserts on; the firewall package's own test
	// proves the bridge-level drop between guests.)
	if !regexp.MustCompile(`isolated_addrs \{[^}]*elements = \{ ` + regexp.QuoteMeta(db.IP) + ` \}`).Match(out) {
		t.Fatalf("isolated VM's address not in the isolation set:\n%s", out)
	}
	h.must("vm", "stop", "db")
	out, _ = exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if strings.Contains(string(out), db.IP) {
		t.Fatalf("isolation rule left after stop:\n%s", out)
	}

	h.must("vm", "delete", "--force", "web", "db")
	if linkExists(ns, tap) {
		t.Fatal("tap left after delete")
	}
	if _, rcode := lookupIn(t, ns, "172.31.7.1", "web.banger"); rcode != mdns.RcodeNameError {
		t.Fatalf("deleted VM still resolves (rcode %d)", rcode)
	}
}

// serveAt adds addr's IP to the namespace's loopback and answers every
// connection with msg, until the test ends.
func serveAt(t *testing.T, ns, addr, msg string) {
	t.Helper()
	ip, _, _ := strings.Cut(addr, ":")
	if out, err := exec.Command("ip", "-n", ns, "addr", "add", ip+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("add %s: %v %s", ip, err, out)
	}
	var ln net.Listener
	if err := nstest.InNamed(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(msg))
			c.Close()
		}
	}()
}

func tryDialIn(ns, addr string) error {
	return nstest.InNamed(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func dialIn(t *testing.T, ns, addr string) string {
	t.Helper()
	var got []byte
	err := nstest.InNamed(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s in %s: %v", addr, ns, err)
	}
	return string(got)
}
