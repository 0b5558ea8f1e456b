package privileged

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// nobody is the unprivileged owner in tests that need one root is not.
const nobody = 65534

// The review's attack, for real: the owner hard-links a jail's drive node
// (a loop device) out of the jail, has the jail removed, and opens the kept
// link once root has attached a root-only file to the same loop minor. The
// node must have been revoked before the loop was released.
func TestKeptJailDriveNodeGrantsNothingAfterRelease(t *testing.T) {
	requireRoot(t)
	fx := newJailFixture(t)
	backend := HostBackend()
	if err := backend.Loops.Available(); err != nil {
		t.Skip(err)
	}
	owner := Owner{UID: nobody, GID: nobody}
	policy := fx.local.policy
	policy.Owner = owner
	l, err := NewLocal(policy, backend)
	must(t, err)
	l.noHardLinks = true // drives become loop device nodes, as across mount namespaces
	must(t, os.WriteFile(fx.policy.Jailer, []byte("#!/bin/sh\nexit 0\n"), 0o755))
	req := fx.request(t)
	for _, f := range []*os.File{req.Console, req.Kernel, req.Initrd, req.Drives[0].File, req.Drives[1].File} {
		must(t, f.Chown(nobody, nobody))
	}
	ctx := context.Background()
	got, err := Call(ctx, l, OpLaunchJailer, req)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	t.Cleanup(func() { _ = Do(ctx, l, OpRemoveJail, VMRef{VMID: "vm-0123"}) })

	// The owner's link, in a directory it can reach, on the jail's file
	// system. (Made by root here; the inode is what matters.)
	keptDir, err := os.MkdirTemp(filepath.Dir(fx.root), "kept-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(keptDir) })
	must(t, os.Chmod(keptDir, 0o755))
	must(t, os.Chmod(filepath.Dir(fx.root), 0o755))
	kept := filepath.Join(keptDir, "rootfs")
	must(t, os.Link(got.Drives["rootfs"], kept))
	if res := runChild(t, []string{childReadEnv + "=" + kept}, nobody, nobody); !res.OK {
		t.Fatalf("while the VM runs the owner must reach its own drive: %s", res.Message)
	}
	var st unix.Stat_t
	must(t, unix.Stat(kept, &st))

	must(t, Do(ctx, l, OpRemoveJail, VMRef{VMID: "vm-0123"}))

	secret := filepath.Join(keptDir, "secret")
	// A whole sector at least: a loop device ignores a partial one.
	must(t, os.WriteFile(secret, append([]byte("TOP-SECRET"), make([]byte, 4096)...), 0o600))
	reattachMinor(t, unix.Minor(st.Rdev), secret)

	res := runChild(t, []string{childReadEnv + "=" + kept}, nobody, nobody)
	if res.OK || strings.Contains(res.Message, "TOP-SECRET") {
		t.Fatalf("the owner read root's file through a kept jail node: %q", res.Message)
	}
	if !strings.Contains(res.Message, "permission denied") {
		t.Fatalf("opening the kept node: %s, want permission denied", res.Message)
	}
	must(t, unix.Stat(kept, &st))
	if st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != 0 {
		t.Fatalf("kept node is %d:%d mode %#o, want revoked to 0:0 mode 0", st.Uid, st.Gid, st.Mode&0o7777)
	}
}

// reattachMinor binds file to loop minor (just released), as root attaching
// its own disk would, and detaches it at cleanup. Another process taking
// the minor first makes the test inconclusive, not wrong.
func reattachMinor(t *testing.T, minor uint32, file string) {
	t.Helper()
	name, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", loopMajor, minor))
	must(t, err)
	loop, err := os.OpenFile("/dev/"+filepath.Base(name), os.O_RDWR, 0)
	must(t, err)
	t.Cleanup(func() { _ = loop.Close() })
	backing, err := os.OpenFile(file, os.O_RDWR, 0)
	must(t, err)
	defer func() { _ = backing.Close() }()
	err = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(backing.Fd()))
	if errors.Is(err, unix.EBUSY) {
		t.Skipf("loop minor %d was taken by another process before the test could reuse it", minor)
	}
	must(t, err)
	t.Cleanup(func() { _ = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0) })
}

// Releasing a loop or device-mapper device through the menu (loop.detach,
// snapshot.remove) revokes the jail nodes for it first, whether or not the
// jail is removed: a stopped VM's jail may outlive its disks.
func TestReleaseRevokesJailNodesFirst(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name    string
		rdev    uint64
		release func(l *Local) error
	}{
		{"loop.detach", unix.Mkdev(loopMajor, 3), func(l *Local) error {
			return Do(context.Background(), l, OpDetachLoop, DeviceRef{Device: "/dev/loop3"})
		}},
		{"snapshot.remove", unix.Mkdev(254, 9), func(l *Local) error { return Do(context.Background(), l, OpRemoveSnapshot, Named{Name: "banger-abc"}) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := newJailFixture(t)
			fx.fake.setLoop("/dev/loop3", filepath.Join(fx.state, "vms", "abc", "rootfs.ext4"))
			dev := filepath.Join(fx.root, "dev")
			must(t, os.MkdirAll(filepath.Join(dev, "mapper"), 0o755))
			fx.local.policy.DevDir = dev
			must(t, unix.Mknod(filepath.Join(dev, "loop3"), unix.S_IFBLK|0o660, int(unix.Mkdev(loopMajor, 3))))
			must(t, unix.Mknod(filepath.Join(dev, "dm-9"), unix.S_IFBLK|0o660, int(unix.Mkdev(254, 9))))
			must(t, os.Symlink("../dm-9", filepath.Join(dev, "mapper", "banger-abc")))

			// A stopped VM's jail: its drive node for the device, another
			// drive's node, and a node the owner dropped into its jail root.
			jroot := filepath.Join(fx.policy.ChrootBase, "firecracker", "vm-0123", "root")
			drives := filepath.Join(jroot, jailDrivesDir)
			must(t, os.MkdirAll(drives, 0o755))
			node := func(path string, rdev uint64) {
				must(t, unix.Mknod(path, unix.S_IFBLK|0o600, int(rdev)))
				must(t, os.Lchown(path, nobody, nobody))
			}
			node(filepath.Join(drives, "rootfs"), c.rdev)
			node(filepath.Join(drives, "seed"), unix.Mkdev(loopMajor, 4))
			node(filepath.Join(jroot, "planted"), c.rdev)
			must(t, os.Chown(jroot, nobody, nobody)) // as the jailer leaves it

			released := false
			fx.fake.beforeCall = func(call string) {
				if strings.HasPrefix(call, OpDetachLoop.Name()) || strings.HasPrefix(call, OpRemoveSnapshot.Name()) {
					released = true
					assertNode(t, filepath.Join(drives, "rootfs"), 0, 0) // already, not after
				}
			}
			must(t, c.release(fx.local))
			if !released {
				t.Fatal("the device was never released")
			}
			assertNode(t, filepath.Join(drives, "rootfs"), 0, 0)
			assertNode(t, filepath.Join(drives, "seed"), nobody, 0o600)
			assertNode(t, filepath.Join(jroot, "planted"), nobody, 0o600)
		})
	}
}

// A jail's nodes are revoked before its loops are detached, including the
// jailer's own (/dev/kvm) and ones whose directory the owner renamed, but
// never a node the owner put in its own directories.
func TestRemoveJailRevokesOnlyRootsNodesFirst(t *testing.T) {
	requireRoot(t)
	fx := newJailFixture(t)
	jroot := filepath.Join(fx.policy.ChrootBase, "firecracker", "vm-0123", "root")
	for _, d := range []string{"renamed-drives", "dev/net", "mine"} {
		must(t, os.MkdirAll(filepath.Join(jroot, d), 0o755))
	}
	kvm := filepath.Join(jroot, "dev", "kvm")
	must(t, unix.Mknod(kvm, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 232))))
	drive := filepath.Join(jroot, "renamed-drives", "rootfs")
	must(t, unix.Mknod(drive, unix.S_IFBLK|0o600, int(unix.Mkdev(loopMajor, 5))))
	mine := filepath.Join(jroot, "mine", "x")
	must(t, unix.Mknod(mine, unix.S_IFBLK|0o600, int(unix.Mkdev(loopMajor, 6))))
	for _, p := range []string{kvm, drive, mine, filepath.Join(jroot, "mine"), jroot} {
		must(t, os.Lchown(p, nobody, nobody))
	}
	// Hard links keep the inodes alive past the jail's removal.
	keep := t.TempDir()
	for _, p := range []string{kvm, drive, mine} {
		must(t, os.Link(p, filepath.Join(keep, filepath.Base(p))))
	}
	// Both loops are banger's, as sysfs and the backend tell it.
	sys := t.TempDir()
	fx.local.policy.SysDevBlock = sys
	for _, n := range []string{"5", "6"} {
		must(t, os.Symlink("../../devices/virtual/block/loop"+n, filepath.Join(sys, "7:"+n)))
		fx.fake.setLoop("/dev/loop"+n, filepath.Join(fx.state, "vms", "abc", "rootfs.ext4"))
	}
	fx.fake.beforeCall = func(call string) {
		if call == "loop.detach {/dev/loop5}" {
			assertNode(t, filepath.Join(keep, "rootfs"), 0, 0) // already, not after
		}
	}
	must(t, Do(context.Background(), fx.local, OpRemoveJail, VMRef{VMID: "vm-0123"}))
	if calls := fx.fake.Calls(); !slices.Equal(calls, []string{"loop.detach {/dev/loop5}"}) {
		t.Errorf("backend calls %q, want only the jail's own loop detached", calls)
	}
	assertNode(t, filepath.Join(keep, "kvm"), 0, 0)
	assertNode(t, filepath.Join(keep, "rootfs"), 0, 0)
	assertNode(t, filepath.Join(keep, "x"), nobody, 0o600)
	if _, err := os.Lstat(jroot); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left: %v", err)
	}
}

func assertNode(t *testing.T, path string, uid int, perm uint32) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(path, &st))
	if int(st.Uid) != uid || st.Mode&0o7777 != perm {
		t.Errorf("%s is uid %d mode %#o, want uid %d mode %#o", path, st.Uid, st.Mode&0o7777, uid, perm)
	}
}
