package privileged

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// testTree is a state dir and a runtime dir with a Local over a fake backend.
type testTree struct {
	root, state, run string
	owner            Owner
	fake             *fakeBackend
	local            *Local
}

func newTree(t *testing.T, noOpenat2 bool) *testTree {
	t.Helper()
	root := t.TempDir()
	tr := &testTree{
		root:  root,
		state: filepath.Join(root, "state"),
		run:   filepath.Join(root, "run"),
		owner: Owner{UID: os.Getuid(), GID: os.Getgid()},
		fake:  &fakeBackend{loops: map[string]string{}},
	}
	for _, d := range []string{tr.state, tr.run, filepath.Join(tr.run, "vms", "abc"), filepath.Join(tr.state, "vms", "abc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l, err := NewLocal(Policy{
		Owner:             tr.owner,
		StateDir:          tr.state,
		RuntimeDir:        tr.run,
		Protected:         []string{filepath.Join(tr.run, "root-helper.sock")},
		DeviceMapperMajor: 254,
	}, tr.fake)
	if err != nil {
		t.Fatal(err)
	}
	l.resolve.noOpenat2 = noOpenat2
	tr.local = l
	return tr
}

// socketAt creates a Unix socket file at path.
func socketAt(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
}

func forEachResolver(t *testing.T, f func(t *testing.T, tr *testTree)) {
	for _, walk := range []bool{false, true} {
		name := "openat2"
		if walk {
			name = "walk"
		}
		t.Run(name, func(t *testing.T) { f(t, newTree(t, walk)) })
	}
}

func TestChownResolvesBeneathRuntimeDir(t *testing.T) {
	forEachResolver(t, func(t *testing.T, tr *testTree) {
		ctx := context.Background()
		sock := filepath.Join(tr.run, "vms", "abc", "fc.sock")
		socketAt(t, sock)
		if err := Do(ctx, tr.local, OpChown, ChownSpec{Path: sock, UID: tr.owner.UID, GID: tr.owner.GID}); err != nil {
			t.Fatalf("chown of a socket in the runtime dir: %v", err)
		}
		if err := Do(ctx, tr.local, OpChmod, ChmodSpec{Path: sock, Mode: 0o660}); err != nil {
			t.Fatalf("chmod of a socket in the runtime dir: %v", err)
		}
		want := inodeAt(t, sock)
		if len(tr.fake.Touched()) != 2 || tr.fake.Touched()[0] != want || tr.fake.Touched()[1] != want {
			t.Fatalf("backend acted on %v, want the socket %v twice", tr.fake.Touched(), want)
		}
	})
}

func TestChownHostileFileSystem(t *testing.T) {
	forEachResolver(t, func(t *testing.T, tr *testTree) {
		ctx := context.Background()
		outside := filepath.Join(tr.root, "outside")
		if err := os.MkdirAll(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		socketAt(t, filepath.Join(outside, "victim.sock"))
		if err := os.WriteFile(filepath.Join(outside, "shadow"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		vm := filepath.Join(tr.run, "vms", "abc")
		// Symlink escapes: final component, middle component, absolute and
		// relative, and a symlink that stays inside (still refused: banger's
		// paths never contain one, so any symlink is someone's trick).
		must(t, os.Symlink(filepath.Join(outside, "victim.sock"), filepath.Join(vm, "final-link.sock")))
		must(t, os.Symlink(outside, filepath.Join(vm, "dirlink")))
		must(t, os.Symlink("../../../outside", filepath.Join(vm, "rel")))
		must(t, os.Symlink("/etc", filepath.Join(vm, "etc")))
		socketAt(t, filepath.Join(vm, "real.sock"))
		must(t, os.Symlink("real.sock", filepath.Join(vm, "inside-link.sock")))
		// Things that are not sockets or VM devices.
		must(t, os.WriteFile(filepath.Join(vm, "file"), []byte("x"), 0o600))
		must(t, unix.Mkfifo(filepath.Join(vm, "fifo"), 0o600))
		// A second name for a socket.
		socketAt(t, filepath.Join(vm, "one.sock"))
		must(t, os.Link(filepath.Join(vm, "one.sock"), filepath.Join(vm, "two.sock")))
		// The helper's own socket.
		socketAt(t, filepath.Join(tr.run, "root-helper.sock"))

		hostile := []string{
			filepath.Join(vm, "final-link.sock"),
			filepath.Join(vm, "dirlink", "victim.sock"),
			filepath.Join(vm, "rel", "victim.sock"),
			filepath.Join(vm, "etc", "shadow"),
			filepath.Join(vm, "inside-link.sock"),
			filepath.Join(vm, "file"),
			filepath.Join(vm, "fifo"),
			vm,
			filepath.Join(vm, "one.sock"),
			filepath.Join(vm, "missing.sock"),
			filepath.Join(vm, "file", "x"),
			filepath.Join(tr.run, "root-helper.sock"),
			filepath.Join(outside, "victim.sock"),
			filepath.Join(tr.run, "..", "outside", "victim.sock"),
			tr.run,
			tr.run + "x/victim.sock", // shares the prefix but is not beneath
			"/etc/shadow",
			"/proc/self/root/etc/shadow",
		}
		for _, p := range hostile {
			err := Do(ctx, tr.local, OpChown, ChownSpec{Path: p, UID: tr.owner.UID, GID: tr.owner.GID})
			assertInvalid(t, err, "chown %s", p)
			err = Do(ctx, tr.local, OpChmod, ChmodSpec{Path: p, Mode: 0o600})
			assertInvalid(t, err, "chmod %s", p)
		}
		if calls := tr.fake.Calls(); len(calls) != 0 {
			t.Fatalf("backend was called for hostile paths: %v", calls)
		}
	})
}

func TestChownOnlyToOwner(t *testing.T) {
	tr := newTree(t, false)
	sock := filepath.Join(tr.run, "vms", "abc", "fc.sock")
	socketAt(t, sock)
	for _, id := range [][2]int{{0, 0}, {tr.owner.UID + 1, tr.owner.GID}, {tr.owner.UID, tr.owner.GID + 1}} {
		if id[0] == tr.owner.UID && id[1] == tr.owner.GID {
			continue
		}
		assertInvalid(t, Do(context.Background(), tr.local, OpChown, ChownSpec{Path: sock, UID: id[0], GID: id[1]}), "ids %v", id)
	}
}

func TestChownRefusesMountCrossing(t *testing.T) {
	requireRoot(t)
	forEachResolver(t, func(t *testing.T, tr *testTree) {
		mnt := filepath.Join(tr.run, "vms", "abc", "mnt")
		must(t, os.Mkdir(mnt, 0o755))
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
			t.Skipf("cannot mount tmpfs here: %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
		socketAt(t, filepath.Join(mnt, "x.sock"))
		assertInvalid(t, Do(context.Background(), tr.local, OpChmod, ChmodSpec{Path: filepath.Join(mnt, "x.sock"), Mode: 0o600}), "across a mount")
	})
}

func TestChownDeviceAllowList(t *testing.T) {
	requireRoot(t)
	tr := newTree(t, false)
	dir := filepath.Join(tr.run, "vms", "abc")
	cases := []struct {
		name    string
		mode    uint32
		dev     uint64
		allowed bool
	}{
		{"kvm", unix.S_IFCHR, unix.Mkdev(10, 232), true},
		{"tun", unix.S_IFCHR, unix.Mkdev(10, 200), true},
		{"vhost-vsock", unix.S_IFCHR, unix.Mkdev(10, 241), true},
		// A block node here could be a kept, revoked jail node.
		{"loop3", unix.S_IFBLK, unix.Mkdev(7, 3), false},
		{"dm-0", unix.S_IFBLK, unix.Mkdev(254, 0), false},
		{"null", unix.S_IFCHR, unix.Mkdev(1, 3), false},
		{"mem", unix.S_IFCHR, unix.Mkdev(1, 1), false},
		{"tty", unix.S_IFCHR, unix.Mkdev(5, 0), false},
		{"sda", unix.S_IFBLK, unix.Mkdev(8, 0), false},
		{"nvme", unix.S_IFBLK, unix.Mkdev(259, 0), false},
		{"char-7-3", unix.S_IFCHR, unix.Mkdev(7, 3), false},
		{"block-10-232", unix.S_IFBLK, unix.Mkdev(10, 232), false},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		if err := unix.Mknod(p, c.mode|0o600, int(c.dev)); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
		err := Do(context.Background(), tr.local, OpChmod, ChmodSpec{Path: p, Mode: 0o660})
		if c.allowed && err != nil {
			t.Errorf("%s refused: %v", c.name, err)
		}
		if !c.allowed {
			assertInvalid(t, err, "device %s", c.name)
		}
	}
}

// ownedFile makes a file in dir owned by the owner and opens it with flag.
func ownedFile(t *testing.T, dir, name string, flag int) *os.File {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, make([]byte, 4096), 0o600))
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func TestAttachLoop(t *testing.T) {
	tr := newTree(t, false)
	ctx := context.Background()
	vmDir := filepath.Join(tr.state, "vms", "abc")
	rw := ownedFile(t, vmDir, "rootfs.ext4", os.O_RDWR)
	dev, err := Call(ctx, tr.local, OpAttachLoop, LoopAttach{Backing: rw, Name: "banger-abc-cow"})
	if err != nil || dev.Device != "/dev/loop7" {
		t.Fatalf("attach of the owner's state file: %q, %v", dev, err)
	}
	if tr.fake.Attached()[0] != inodeOf(t, rw) {
		t.Fatal("backend got a different file than the caller opened")
	}
	ro := ownedFile(t, vmDir, "base.ext4", os.O_RDONLY)
	if _, err := Call(ctx, tr.local, OpAttachLoop, LoopAttach{Backing: ro, Name: "banger-abc-base", ReadOnly: true}); err != nil {
		t.Fatalf("read-only attach: %v", err)
	}

	outside := ownedFile(t, tr.root, "elsewhere.img", os.O_RDWR)
	linked := ownedFile(t, vmDir, "linked.img", os.O_RDWR)
	must(t, os.Link(filepath.Join(vmDir, "linked.img"), filepath.Join(tr.root, "second-name.img")))
	deleted := ownedFile(t, vmDir, "deleted.img", os.O_RDWR)
	must(t, os.Remove(filepath.Join(vmDir, "deleted.img")))
	dir, err := os.Open(vmDir)
	must(t, err)
	defer func() { _ = dir.Close() }()
	opath, err := os.OpenFile(filepath.Join(vmDir, "rootfs.ext4"), unix.O_PATH, 0)
	must(t, err)
	defer func() { _ = opath.Close() }()
	wo, err := os.OpenFile(filepath.Join(vmDir, "rootfs.ext4"), os.O_WRONLY, 0)
	must(t, err)
	defer func() { _ = wo.Close() }()

	hostile := []struct {
		name string
		spec LoopAttach
	}{
		{"read-only fd, writable loop", LoopAttach{Backing: ro, Name: "banger-abc-base"}},
		{"file outside the state dir", LoopAttach{Backing: outside, Name: "banger-abc-cow"}},
		{"hard-linked file", LoopAttach{Backing: linked, Name: "banger-abc-cow"}},
		{"deleted file", LoopAttach{Backing: deleted, Name: "banger-abc-cow"}},
		{"directory", LoopAttach{Backing: dir, Name: "banger-abc-cow", ReadOnly: true}},
		{"O_PATH descriptor", LoopAttach{Backing: opath, Name: "banger-abc-cow", ReadOnly: true}},
		{"write-only descriptor", LoopAttach{Backing: wo, Name: "banger-abc-cow"}},
		{"foreign loop name", LoopAttach{Backing: rw, Name: "snap-core"}},
		{"no file", LoopAttach{Name: "banger-abc-cow"}},
	}
	for _, h := range hostile {
		_, err := Call(ctx, tr.local, OpAttachLoop, h.spec)
		assertInvalid(t, err, "%s", h.name)
	}
	if n := len(tr.fake.Calls()); n != 2 {
		t.Fatalf("backend called %d times, want 2: %v", n, tr.fake.Calls())
	}
}

func TestAttachLoopRefusesOtherOwnersFile(t *testing.T) {
	requireRoot(t)
	tr := newTree(t, false)
	f := ownedFile(t, filepath.Join(tr.state, "vms", "abc"), "root-owned.img", os.O_RDWR)
	must(t, f.Chown(65534, 65534))
	_, err := Call(context.Background(), tr.local, OpAttachLoop, LoopAttach{Backing: f, Name: "banger-abc-cow"})
	assertInvalid(t, err, "file of uid 65534")
}

func TestDetachAndSnapshotOnlyBangerLoops(t *testing.T) {
	tr := newTree(t, false)
	ctx := context.Background()
	tr.fake.setLoop("/dev/loop1", filepath.Join(tr.state, "images", "x", "rootfs.ext4"))
	tr.fake.setLoop("/dev/loop2", filepath.Join(tr.state, "vms", "abc", "banger-abc.cow")+" (deleted)")
	tr.fake.setLoop("/dev/loop3", "/var/lib/snapd/snaps/core22_1380.snap")
	tr.fake.setLoop("/dev/loop4", "")
	tr.fake.setLoop("/dev/loop5", tr.state+"-other/x.img")
	tr.fake.setLoop("/dev/loop6", filepath.Join(tr.state, "..", "escape.img"))

	if err := Do(ctx, tr.local, OpDetachLoop, DeviceRef{Device: "/dev/loop1"}); err != nil {
		t.Fatalf("detach banger loop: %v", err)
	}
	if err := Do(ctx, tr.local, OpDetachLoop, DeviceRef{Device: "/dev/loop2"}); err != nil {
		t.Fatalf("detach banger loop whose file was deleted: %v", err)
	}
	for _, d := range []string{"/dev/loop3", "/dev/loop4", "/dev/loop5", "/dev/loop6", "/dev/sda"} {
		if err := Do(ctx, tr.local, OpDetachLoop, DeviceRef{Device: d}); err == nil {
			t.Errorf("detach of %s (backing %q) allowed", d, tr.fake.loops[d])
		}
	}
	if _, err := Call(ctx, tr.local, OpCreateSnapshot, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"}); err != nil {
		t.Fatalf("snapshot over banger loops: %v", err)
	}
	for _, o := range []string{"/dev/loop3", "/dev/loop4", "/dev/loop5", "/dev/loop9"} {
		if _, err := Call(ctx, tr.local, OpCreateSnapshot, SnapshotSpec{Name: "banger-abc", Origin: o, COW: "/dev/loop2"}); err == nil {
			t.Errorf("snapshot over %s allowed", o)
		}
	}
	want := []string{"loop.detach {/dev/loop1}", "loop.detach {/dev/loop2}", "snapshot.create {banger-abc /dev/loop1 /dev/loop2 0}"}
	if got := tr.fake.Calls(); !slices.Equal(got, want) {
		t.Fatalf("backend calls:\n got %q\nwant %q", got, want)
	}
	if served := tr.fake.Served(); served[2].owner != tr.owner {
		t.Errorf("snapshot handed to %+v, want the policy's owner %+v", served[2].owner, tr.owner)
	}
}

func TestNetworkOpsReachBackendOnlyWhenValid(t *testing.T) {
	tr := newTree(t, false)
	ctx := context.Background()
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	o := tr.owner
	ok := []error{
		Do(ctx, tr.local, OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: subnet}),
		Do(ctx, tr.local, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger0", UID: o.UID, GID: o.GID}),
		Do(ctx, tr.local, OpEnsureNAT, NATSpec{Subnet: subnet, Bridge: "banger0"}),
		Do(ctx, tr.local, OpIsolate, IsolationSpec{Bridge: "banger0", Tap: "bgt-abc", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}),
		Do(ctx, tr.local, OpUnisolate, IsolationSpec{Bridge: "banger0", Tap: "bgt-abc", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}),
		Do(ctx, tr.local, OpEnableIPForward, None{}),
		Do(ctx, tr.local, OpConfigureResolver, ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}),
		Do(ctx, tr.local, OpRevertResolver, LinkRef{Link: "banger0"}),
		Do(ctx, tr.local, OpRemoveNAT, NATSpec{Subnet: subnet, Bridge: "banger0"}),
		Do(ctx, tr.local, OpDeleteTap, Named{Name: "bgt-abc"}),
		Do(ctx, tr.local, OpDeleteBridge, Named{Name: "banger0"}),
		Do(ctx, tr.local, OpRemoveSnapshot, Named{Name: "banger-abc"}),
	}
	for i, err := range ok {
		if err != nil {
			t.Errorf("valid op %d: %v", i, err)
		}
	}
	bad := []error{
		Do(ctx, tr.local, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger0", UID: o.UID + 1, GID: o.GID}),
		Do(ctx, tr.local, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger0", UID: o.UID, GID: o.GID + 1}),
		Do(ctx, tr.local, OpDeleteTap, Named{Name: "eth0"}),
		Do(ctx, tr.local, OpDeleteTap, Named{Name: "banger0"}),
		Do(ctx, tr.local, OpDeleteBridge, Named{Name: "docker0"}),
		Do(ctx, tr.local, OpDeleteBridge, Named{Name: "bgt-abc"}),
		Do(ctx, tr.local, OpRevertResolver, LinkRef{Link: "eth0"}),
		Do(ctx, tr.local, OpRemoveSnapshot, Named{Name: "vg0-root"}),
		Do(ctx, tr.local, OpIsolate, IsolationSpec{Tap: "eth0", Addr: netip.MustParseAddr("172.30.0.2")}),
		Do(ctx, tr.local, OpUnisolate, IsolationSpec{Tap: "bgt-abc", Addr: netip.MustParseAddr("8.8.8.8")}),
		Do(ctx, tr.local, OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: netip.MustParsePrefix("0.0.0.0/0")}),
	}
	for i, err := range bad {
		assertInvalid(t, err, "bad op %d", i)
	}
	if n := len(tr.fake.Calls()); n != len(ok) {
		t.Fatalf("backend called %d times, want %d: %v", n, len(ok), tr.fake.Calls())
	}
}

func TestNewLocalRefusesBadPolicy(t *testing.T) {
	for _, p := range []Policy{
		{StateDir: "", RuntimeDir: "/run/banger"},
		{StateDir: "/var/lib/banger", RuntimeDir: "run/banger"},
		{StateDir: "/", RuntimeDir: "/run/banger"},
		{StateDir: "/var/lib/banger/", RuntimeDir: "/run/banger"},
		{StateDir: "/var/lib/banger", RuntimeDir: "/run/banger", Owner: Owner{UID: -1}},
	} {
		if _, err := NewLocal(p, &fakeBackend{}); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}

func TestBackendErrorsPassThrough(t *testing.T) {
	tr := newTree(t, false)
	boom := errors.New("netlink: boom")
	tr.fake.fail = boom
	if err := Do(context.Background(), tr.local, OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the backend's error", err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNetworkOpsStayOnTheirOwnersBridge: Local marks the bridge with its
// policy's state dir and owner (never anything the caller sends) and
// refuses every op on a bridge another banger marked, without reaching the
// backend.
func TestNetworkOpsStayOnTheirOwnersBridge(t *testing.T) {
	tr := newTree(t, false)
	ctx := context.Background()
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	if err := Do(ctx, tr.local, OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: subnet}); err != nil {
		t.Fatal(err)
	}
	mark := network.Owner{UID: tr.owner.UID, StateDir: tr.state}.Alias()
	if calls := tr.fake.Calls(); len(calls) != 1 || calls[0] != "bridge.ensure {banger0 172.30.0.0/24}" || tr.fake.Served()[0].instance.Alias() != mark {
		t.Errorf("backend calls %q for %+v, want bridge.ensure marked %q", calls, tr.fake.Served(), mark)
	}
	theirs := &network.OwnedError{Kind: "bridge", Name: "banger1", Owner: network.Owner{UID: 0, StateDir: "/var/lib/banger"}}
	tr.fake.bridgeErr = map[string]error{"banger1": theirs}
	o := tr.owner
	for i, err := range []error{
		Do(ctx, tr.local, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger1", UID: o.UID, GID: o.GID}),
		Do(ctx, tr.local, OpEnsureNAT, NATSpec{Subnet: subnet, Bridge: "banger1"}),
		Do(ctx, tr.local, OpRemoveNAT, NATSpec{Subnet: subnet, Bridge: "banger1"}),
		Do(ctx, tr.local, OpIsolate, IsolationSpec{Bridge: "banger1", Tap: "bgt-abc", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}),
		Do(ctx, tr.local, OpUnisolate, IsolationSpec{Bridge: "banger1", Tap: "bgt-abc", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}),
	} {
		if !errors.Is(err, network.ErrOwnedElsewhere) {
			t.Errorf("op %d on another banger's bridge: %v, want ErrOwnedElsewhere", i, err)
		}
	}
	if n := len(tr.fake.Calls()); n != 1 {
		t.Errorf("backend reached for another banger's bridge: %q", tr.fake.Calls())
	}
}
