package agent

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	xssh "golang.org/x/crypto/ssh"
)

// fakeUsers writes a passwd file with root and alice.
func fakeUsers(t *testing.T) userDB {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "passwd"), strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
		"alice:x:1000:1000:Alice:/home/alice:/bin/bash",
		"svc:x:1001:1001::/srv:/usr/sbin/nologin",
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
	}, "\n")+"\n", 0o644)
	writeFile(t, filepath.Join(dir, "group"), "alice:x:1000:\nsudo:x:27:alice\n", 0o644)
	return userDB{passwd: filepath.Join(dir, "passwd"), group: filepath.Join(dir, "group")}
}

func TestAuthorizeKey(t *testing.T) {
	root := t.TempDir()
	c := newClient(t, startServer(t, &Server{Root: root, users: fakeUsers(t)}))
	ctx := testCtx(t)
	keyA := genKey(t, "banger:owner@host")
	keyB := genKey(t, "banger:owner@host")
	path := filepath.Join(root, "home/alice/.ssh/authorized_keys")
	writeFile(t, path, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOthe someone@else\n", 0o600)

	res, err := c.AuthorizeKey(ctx, AuthorizeKeyRequest{User: "alice", Key: keyA})
	if err != nil || !res.Added || res.Home != "/home/alice" {
		t.Fatalf("first install: %+v %v", res, err)
	}
	res, err = c.AuthorizeKey(ctx, AuthorizeKeyRequest{User: "alice", Key: keyA})
	if err != nil || res.Added {
		t.Fatalf("second install of the same key: %+v %v", res, err)
	}
	// A new banger key replaces the old one and leaves other keys alone.
	if _, err := c.AuthorizeKey(ctx, AuthorizeKeyRequest{User: "alice", Key: keyB}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "someone@else") || lines[1] != keyB {
		t.Fatalf("authorized_keys:\n%s", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("authorized_keys mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Fatalf(".ssh mode %v", st.Mode())
	}

	var remote *RemoteError
	if _, err := c.AuthorizeKey(ctx, AuthorizeKeyRequest{User: "bob", Key: keyA}); !errors.As(err, &remote) || remote.Code != CodeNoUser {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := c.AuthorizeKey(ctx, AuthorizeKeyRequest{User: "alice", Key: "not a key"}); !errors.As(err, &remote) || remote.Code != CodeInvalid {
		t.Fatalf("bad key: %v", err)
	}
}

func genKey(t *testing.T, comment string) string {
	t.Helper()
	srv := &Server{Root: t.TempDir()}
	if err := srv.generateHostKeys(srv.guestPath("/etc/ssh")); err != nil {
		t.Fatal(err)
	}
	keys, err := readHostKeys(srv.guestPath("/etc/ssh"))
	if err != nil || len(keys) != 1 {
		t.Fatal(keys, err)
	}
	return keys[0] + " " + comment
}

func TestGuestInfoReportsAndCreatesHostKeys(t *testing.T) {
	root := t.TempDir()
	seed := func() io.Reader { return bytes.NewReader(bytes.Repeat([]byte{7}, 64)) }
	srv := &Server{Version: "v2", Root: root, HostKeyEntropy: seed, users: fakeUsers(t), Hostname: func() (string, error) { return "dev", nil }}
	c := newClient(t, startServer(t, srv))
	info, err := c.GuestInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.AgentVersion != "v2" || info.Hostname != "dev" || info.Kernel == "" || len(info.HostKeys) != 1 {
		t.Fatalf("guest info %+v", info)
	}
	wantUsers := []GuestUser{{"root", 0, "/root"}, {"alice", 1000, "/home/alice"}}
	if !reflect.DeepEqual(info.Users, wantUsers) {
		t.Fatalf("users %+v, want %+v", info.Users, wantUsers)
	}
	if _, _, _, _, err := xssh.ParseAuthorizedKey([]byte(info.HostKeys[0])); err != nil {
		t.Fatalf("host key %q: %v", info.HostKeys[0], err)
	}
	// The private key is there for sshd, and private.
	st, err := os.Stat(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private host key: %v %v", st, err)
	}
	// Asking again reports the same key; the same seed makes the same key.
	again, err := c.GuestInfo(testCtx(t))
	if err != nil || !reflect.DeepEqual(again.HostKeys, info.HostKeys) {
		t.Fatalf("second guest info: %v %v", again.HostKeys, err)
	}
	other := &Server{Root: t.TempDir(), HostKeyEntropy: seed}
	keys, err := other.hostKeys()
	if err != nil || !reflect.DeepEqual(keys, info.HostKeys) {
		t.Fatalf("same seed gave %v, want %v (%v)", keys, info.HostKeys, err)
	}
}

func TestBootParams(t *testing.T) {
	cmdline := "console=ttyS0 banger.name=dev banger.ip=172.30.0.5/24 banger.gw=172.30.0.1 banger.dns=172.30.0.1,1.1.1.1 banger.domain=banger banger.mtu=1400 banger.iface=eth0 banger.agent_port=2000 banger.agent_channel=serial quiet"
	p, err := ParseBootParams(cmdline)
	if err != nil {
		t.Fatal(err)
	}
	want := BootParams{
		Hostname: "dev", Address: netip.MustParsePrefix("172.30.0.5/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
		DNS: []netip.Addr{netip.MustParseAddr("172.30.0.1"), netip.MustParseAddr("1.1.1.1")}, Domain: "banger",
		MTU: 1400, Interface: "eth0", AgentPort: 2000, AgentChannel: "serial:/dev/virtio-ports/banger",
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("parsed %+v\nwant   %+v", p, want)
	}
	if p.ListenAddr() != "serial:/dev/virtio-ports/banger" {
		t.Fatalf("listen addr %s", p.ListenAddr())
	}
	again, err := ParseBootParams(strings.Join(p.Args(), " "))
	if err != nil || !reflect.DeepEqual(again, p) {
		t.Fatalf("Args round trip: %+v %v", again, err)
	}
	def, err := ParseBootParams("console=ttyS0")
	if err != nil || def.ListenAddr() != "vsock:1024" || def.Hostname != "" {
		t.Fatalf("defaults: %+v %v", def, err)
	}
	for _, bad := range []string{
		"banger.name=Bad_Name", "banger.ip=172.30.0.5", "banger.ip=::1/64", "banger.gw=x",
		"banger.dns=1.1.1.1,nope", "banger.mtu=10", "banger.agent_port=0", "banger.agent_channel=carrier-pigeon",
		"banger.domain=a..b", "banger.iface=a/b",
	} {
		if _, err := ParseBootParams(bad); err == nil || !strings.Contains(err.Error(), "kernel parameter") {
			t.Errorf("ParseBootParams(%q) = %v, want a kernel parameter error", bad, err)
		}
	}
}

func TestPortFromBootArgs(t *testing.T) {
	tests := []struct {
		cmdline string
		want    uint32
		wantErr bool
	}{
		{"console=ttyS0 panic=-1", DefaultPort, false},
		{"console=ttyS0 banger.agent_port=5000 quiet", 5000, false},
		{"banger.agent_port=abc", 0, true},
		{"xbanger.agent_port=7", DefaultPort, false},
	}
	for _, tt := range tests {
		got, err := PortFromBootArgs(tt.cmdline)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("PortFromBootArgs(%q) = %d, %v; want %d, err=%v", tt.cmdline, got, err, tt.want, tt.wantErr)
		}
	}
}

type recordingNet struct {
	calls []string
	err   error
}

func (r *recordingNet) Configure(iface string, addr netip.Prefix, gw netip.Addr, mtu int) (string, error) {
	r.calls = append(r.calls, strings.Join([]string{iface, addr.String(), gw.String(), strconv.Itoa(mtu)}, " "))
	return "eth0", r.err
}

func (r *recordingNet) SetHardwareAddr(iface string, mac net.HardwareAddr) (string, error) {
	r.calls = append(r.calls, "mac "+iface+" "+mac.String())
	return "eth0", r.err
}

func TestGuestSetupFiles(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n::1\tlocalhost ip6-localhost\n", 0o644)
	if err := os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	var hostname string
	net := &recordingNet{}
	g := GuestSetup{Root: root, Net: net, SetHostname: func(n string) error { hostname = n; return nil }}
	p, _ := ParseBootParams("banger.name=dev banger.ip=172.30.0.5/24 banger.gw=172.30.0.1 banger.dns=172.30.0.1 banger.domain=banger")
	if err := g.Apply(p); err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if hostname != "dev" || read("etc/hostname") != "dev\n" {
		t.Fatalf("hostname %q, file %q", hostname, read("etc/hostname"))
	}
	if hosts := read("etc/hosts"); hosts != "127.0.0.1\tlocalhost\n127.0.1.1\tdev\n::1\tlocalhost ip6-localhost\n" {
		t.Fatalf("hosts:\n%s", hosts)
	}
	if rc := read("etc/resolv.conf"); !strings.Contains(rc, "search banger\nnameserver 172.30.0.1\n") {
		t.Fatalf("resolv.conf:\n%s", rc)
	}
	if st, _ := os.Lstat(filepath.Join(root, "etc/resolv.conf")); st.Mode()&os.ModeSymlink != 0 {
		t.Fatal("resolv.conf is still a symlink")
	}
	if len(net.calls) != 1 || net.calls[0] != " 172.30.0.5/24 172.30.0.1 0" {
		t.Fatalf("network calls %q", net.calls)
	}

	// One failing step does not stop the others; all failures come back.
	root2 := t.TempDir()
	g2 := GuestSetup{Root: root2, Net: &recordingNet{err: errors.New("no carrier")}, SetHostname: func(string) error { return errors.New("EPERM") }}
	err := g2.Apply(p)
	if err == nil || !strings.Contains(err.Error(), "no carrier") || !strings.Contains(err.Error(), "EPERM") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root2, "etc/resolv.conf")); err != nil {
		t.Fatalf("resolv.conf not written after a network failure: %v", err)
	}
}

// TestNetlinkNetworkInNamespace applies the real netlink configuration to a
// dummy interface inside a network namespace this test creates.
func TestNetlinkNetworkInNamespace(t *testing.T) {
	requireRoot(t)
	h := namespaceWithEth0(t)
	n := NetlinkNetwork{Handle: h}
	name, err := n.Configure("", netip.MustParsePrefix("172.30.0.5/24"), netip.MustParseAddr("172.30.0.1"), 1400)
	if err != nil || name != "eth0" {
		t.Fatalf("configure: %s %v", name, err)
	}
	// Twice is fine: everything is a replace.
	if _, err := n.Configure("eth0", netip.MustParsePrefix("172.30.0.5/24"), netip.MustParseAddr("172.30.0.1"), 1400); err != nil {
		t.Fatalf("second configure: %v", err)
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MTU != 1400 || link.Attrs().Flags&1 == 0 {
		t.Fatalf("link %+v", link.Attrs())
	}
	addrs, _ := h.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.30.0.5/24" {
		t.Fatalf("addresses %v", addrs)
	}
	routes, _ := h.RouteList(link, netlink.FAMILY_V4)
	var gw string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gw = r.Gw.String()
		}
	}
	if gw != "172.30.0.1" {
		t.Fatalf("default route via %q, routes %v", gw, routes)
	}
	lo, _ := h.LinkByName("lo")
	if lo.Attrs().Flags&1 == 0 {
		t.Fatal("loopback not up")
	}
	if _, err := n.Configure("nope0", netip.Prefix{}, netip.Addr{}, 0); err == nil {
		t.Fatal("configuring a missing interface succeeded")
	}
}

// newNetns creates a network namespace without entering it.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	defer func() { _ = orig.Close() }()
	ns, err := netns.New()
	if err != nil {
		t.Skipf("skipping: cannot create a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("return to the original namespace: %v", err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	return ns
}

// TestMinimalGuestWithoutPasswd: a busybox guest with no /etc/passwd still
// has root, for exec and for the host's key install.
func TestMinimalGuestWithoutPasswd(t *testing.T) {
	dir := t.TempDir()
	db := userDB{passwd: filepath.Join(dir, "passwd"), group: filepath.Join(dir, "group")}
	acct, err := db.lookup("root")
	if err != nil || acct.UID != 0 || acct.Home != "/root" {
		t.Fatalf("root without passwd: %+v %v", acct, err)
	}
	if _, err := db.lookup("alice"); !errors.Is(err, errNoUser) {
		t.Fatalf("alice without passwd: %v", err)
	}
	if users := db.loginUsers(); len(users) != 1 || users[0].Name != "root" {
		t.Fatalf("login users without passwd: %+v", users)
	}
	root := t.TempDir()
	c := newClient(t, startServer(t, &Server{Root: root, users: db}))
	if _, err := c.AuthorizeKey(testCtx(t), AuthorizeKeyRequest{User: "root", Key: genKey(t, "banger:x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "root/.ssh/authorized_keys")); err != nil {
		t.Fatal(err)
	}
}
