package privileged

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProcess stands in for a started jailer.
type fakeProcess struct {
	pid    int
	done   chan struct{}
	once   sync.Once
	killed bool
}

func (p *fakeProcess) PID() int              { return p.pid }
func (p *fakeProcess) Done() <-chan struct{} { return p.done }
func (p *fakeProcess) Kill() error {
	p.once.Do(func() { p.killed = true; close(p.done) })
	return nil
}

func (f *fakeBackend) StartJailer(_ context.Context, argv []string, console *os.File) (JailProcess, error) {
	if err := f.record("StartJailer %s", strings.Join(argv, " ")); err != nil {
		return nil, err
	}
	p := &fakeProcess{pid: 4242, done: make(chan struct{})}
	f.mu.Lock()
	f.started = append(f.started, p)
	f.mu.Unlock()
	return p, nil
}

// jailFixture is a testTree whose Local may launch jailers: two executable
// stand-in binaries and a jail base beside the state dir.
type jailFixture struct {
	*testTree
	policy JailerPolicy
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	tr := newTree(t, false)
	bin := filepath.Join(tr.root, "bin")
	must(t, os.Mkdir(bin, 0o755))
	p := JailerPolicy{
		Jailer:      filepath.Join(bin, "jailer"),
		Firecracker: filepath.Join(bin, "firecracker"),
		ChrootBase:  filepath.Join(tr.root, "jail"),
	}
	for _, b := range []string{p.Jailer, p.Firecracker} {
		must(t, os.WriteFile(b, []byte("#!/bin/sh\nexit 1\n"), 0o755))
	}
	// t.TempDir is 0700 but may inherit a group-writable umask elsewhere;
	// the chain check wants nothing writable but by the owner.
	must(t, os.Chmod(tr.root, 0o755))
	tr.local.policy.Jailer = &p
	return &jailFixture{testTree: tr, policy: p}
}

// launch builds a request from files in the VM's state dir.
func (fx *jailFixture) request(t *testing.T) JailerLaunch {
	t.Helper()
	vmDir := filepath.Join(fx.state, "vms", "abc")
	return JailerLaunch{
		VMID:    "vm-0123",
		Console: ownedFile(t, vmDir, "serial.log", os.O_WRONLY|os.O_APPEND),
		Kernel:  ownedFile(t, fx.state, "vmlinux", os.O_RDONLY),
		Initrd:  ownedFile(t, fx.state, "initrd.img", os.O_RDONLY),
		Drives: []JailDrive{
			{ID: "rootfs", File: ownedFile(t, vmDir, "rootfs.ext4", os.O_RDWR)},
			{ID: "seed", ReadOnly: true, File: ownedFile(t, vmDir, "seed.img", os.O_RDONLY)},
		},
		VMMLog: true,
	}
}

func TestLaunchJailerStagesIntoAFreshJailAndStarts(t *testing.T) {
	fx := newJailFixture(t)
	ctx := context.Background()
	req := fx.request(t)
	// A leftover from an earlier run, including an owner's symlink, must be
	// replaced, not reused.
	stale := filepath.Join(fx.policy.ChrootBase, "firecracker", "vm-0123", "root")
	must(t, os.MkdirAll(stale, 0o755))
	must(t, os.Symlink("/etc", filepath.Join(stale, "kernel")))

	got, err := Call(ctx, fx.local, OpLaunchJailer, req)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	root := filepath.Join(fx.policy.ChrootBase, "firecracker", "vm-0123", "root")
	want := JailedVMM{
		PID: 4242, Root: root, APISocket: root + "/api.socket",
		Kernel: root + "/kernel", Initrd: root + "/initrd",
		Drives: map[string]string{"rootfs": root + "/drives/rootfs", "seed": root + "/drives/seed"},
		VMMLog: root + "/firecracker.log",
	}
	if got.PID != want.PID || got.Root != want.Root || got.APISocket != want.APISocket || got.Kernel != want.Kernel ||
		got.Initrd != want.Initrd || got.VMMLog != want.VMMLog || len(got.Drives) != 2 ||
		got.Drives["rootfs"] != want.Drives["rootfs"] || got.Drives["seed"] != want.Drives["seed"] {
		t.Fatalf("result\n got %+v\nwant %+v", got, want)
	}
	// Staged files are the very inodes the caller passed, not copies.
	for path, f := range map[string]*os.File{got.Kernel: req.Kernel, got.Initrd: req.Initrd,
		got.Drives["rootfs"]: req.Drives[0].File, got.Drives["seed"]: req.Drives[1].File} {
		if inodeAt(t, path) != inodeOf(t, f) {
			t.Errorf("%s is not the file the caller passed", path)
		}
	}
	fi, err := os.Stat(got.VMMLog)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 0 {
		t.Fatalf("VMM log: %v %v", fi, err)
	}
	for _, d := range []string{fx.policy.ChrootBase, filepath.Dir(root), root} {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %v %v; want a 0755 directory", d, fi, err)
		}
	}
	wantArgv := "StartJailer " + strings.Join([]string{fx.policy.Jailer, "--id", "vm-0123", "--exec-file", fx.policy.Firecracker,
		"--uid", strconv.Itoa(fx.owner.UID), "--gid", strconv.Itoa(fx.owner.GID),
		"--chroot-base-dir", fx.policy.ChrootBase, "--", "--api-sock", "/api.socket"}, " ")
	if calls := fx.fake.Calls(); !slices.Equal(calls, []string{wantArgv}) {
		t.Fatalf("backend calls\n got %q\nwant %q", calls, wantArgv)
	}

	// One jailed VMM per VM at a time.
	if _, err := Call(ctx, fx.local, OpLaunchJailer, fx.request(t)); err == nil || !strings.Contains(err.Error(), "already has a jailed firecracker running (pid 4242)") {
		t.Fatalf("second launch while running: %v", err)
	}
	// RemoveJail stops what the helper started and removes the jail.
	must(t, Do(ctx, fx.local, OpRemoveJail, VMRef{VMID: "vm-0123"}))
	if !fx.fake.started[0].killed {
		t.Fatal("RemoveJail did not stop the running jailer")
	}
	if _, err := os.Lstat(filepath.Dir(root)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left behind: %v", err)
	}
	// The original files survive their jail.
	if _, err := os.Stat(filepath.Join(fx.state, "vms", "abc", "rootfs.ext4")); err != nil {
		t.Fatalf("removing the jail touched the VM's disk: %v", err)
	}
	must(t, Do(ctx, fx.local, OpRemoveJail, VMRef{VMID: "vm-0123"})) // missing: not an error
}

func TestRemoveJailRefusesALiveUntrackedJail(t *testing.T) {
	fx := newJailFixture(t)
	// A jail whose Firecracker this helper did not start (it restarted)
	// and whose API socket still answers.
	root := filepath.Join(fx.policy.ChrootBase, "firecracker", "vm-live", "root")
	must(t, os.MkdirAll(root, 0o755))
	ln, err := listenUnix(filepath.Join(root, "api.socket"))
	must(t, err)
	defer func() { _ = ln.Close() }()
	if err := Do(context.Background(), fx.local, OpRemoveJail, VMRef{VMID: "vm-live"}); err == nil || !strings.Contains(err.Error(), "in use by a running firecracker") {
		t.Fatalf("removing a live jail: %v", err)
	}
	// Nor does a new launch for that VM replace it.
	req := fx.request(t)
	req.VMID = "vm-live"
	if _, err := Call(context.Background(), fx.local, OpLaunchJailer, req); err == nil || !strings.Contains(err.Error(), "in use by a running firecracker") {
		t.Fatalf("launching over a live jail: %v", err)
	}
	if calls := fx.fake.Calls(); len(calls) > 0 {
		t.Fatalf("a launch over a live jail reached the backend: %q", calls)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatal("live jail removed")
	}
}

func listenUnix(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

func TestLaunchJailerHostile(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, fx *jailFixture, r *JailerLaunch)
		want   string
	}{
		{"traversal id", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.VMID = "../../etc" }, "may contain only"},
		{"slash id", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.VMID = "a/b" }, "may contain only"},
		{"shell id", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.VMID = "$(id)" }, "may contain only"},
		{"long id", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.VMID = strings.Repeat("a", 65) }, "1 to 64"},
		{"id read as a jailer option", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.VMID = "--help" }, "must start with a letter or digit"},
		{"drive id read as an option", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.Drives[0].ID = "-x" }, "must start with a letter or digit"},
		{"no drives", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.Drives = nil }, "1 to 4 drives"},
		{"duplicate drive", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.Drives[1].ID = "rootfs" }, "appears twice"},
		{"traversal drive id", func(_ *testing.T, _ *jailFixture, r *JailerLaunch) { r.Drives[0].ID = "../x" }, "may contain only"},
		{"read-only descriptor for a writable drive", func(t *testing.T, fx *jailFixture, r *JailerLaunch) {
			r.Drives[0].File = ownedFile(t, fx.state, "ro.img", os.O_RDONLY)
		}, "open it read-write"},
		{"O_PATH kernel", func(t *testing.T, fx *jailFixture, r *JailerLaunch) {
			r.Kernel = ownedFile(t, fx.state, "opath", unix.O_PATH)
		}, "O_PATH"},
		{"directory as kernel", func(t *testing.T, fx *jailFixture, r *JailerLaunch) {
			f, err := os.Open(fx.state)
			must(t, err)
			t.Cleanup(func() { _ = f.Close() })
			r.Kernel = f
		}, "not a regular file or block device"},
		{"character device as drive", func(t *testing.T, _ *jailFixture, r *JailerLaunch) {
			f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			must(t, err)
			t.Cleanup(func() { _ = f.Close() })
			r.Drives[0].File = f
		}, "not a regular file or block device"},
		{"set-uid kernel", func(t *testing.T, fx *jailFixture, r *JailerLaunch) {
			p := filepath.Join(fx.state, "suid")
			must(t, os.WriteFile(p, nil, 0o600))
			must(t, os.Chmod(p, 0o600|os.ModeSetuid))
			f, err := os.Open(p)
			must(t, err)
			t.Cleanup(func() { _ = f.Close() })
			r.Kernel = f
		}, "set-uid"},
		{"read-only console", func(t *testing.T, fx *jailFixture, r *JailerLaunch) {
			r.Console = ownedFile(t, fx.state, "console", os.O_RDONLY)
		}, "open for writing"},
		{"group-writable jailer", func(t *testing.T, fx *jailFixture, _ *JailerLaunch) {
			must(t, os.Chmod(fx.policy.Jailer, 0o775))
		}, "writable by group or others"},
		{"jailer through a symlink into a group-writable dir", func(t *testing.T, fx *jailFixture, _ *JailerLaunch) {
			evil := filepath.Join(fx.root, "evil")
			must(t, os.Mkdir(evil, 0o777))
			must(t, os.Chmod(evil, 0o777))
			must(t, os.WriteFile(filepath.Join(evil, "jailer"), []byte("#!/bin/sh\n"), 0o755))
			must(t, os.Remove(fx.policy.Jailer))
			must(t, os.Symlink(filepath.Join(evil, "jailer"), fx.policy.Jailer))
		}, "writable by group or others"},
		{"jail base planted as a symlink", func(t *testing.T, fx *jailFixture, _ *JailerLaunch) {
			must(t, os.Symlink("/", fx.policy.ChrootBase))
		}, "is not a directory"},
		{"exec dir planted as a symlink", func(t *testing.T, fx *jailFixture, _ *JailerLaunch) {
			must(t, os.Mkdir(fx.policy.ChrootBase, 0o755))
			must(t, os.Symlink("/", filepath.Join(fx.policy.ChrootBase, "firecracker")))
		}, "is not a directory"},
		{"group-writable jail base", func(t *testing.T, fx *jailFixture, _ *JailerLaunch) {
			must(t, os.Mkdir(fx.policy.ChrootBase, 0o775))
			must(t, os.Chmod(fx.policy.ChrootBase, 0o775))
		}, "writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newJailFixture(t)
			req := fx.request(t)
			tc.mutate(t, fx, &req)
			_, err := Call(ctx, fx.local, OpLaunchJailer, req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if calls := fx.fake.Calls(); len(calls) > 0 {
				t.Fatalf("a refused launch reached the backend: %q", calls)
			}
			// A refused launch leaves no jail behind.
			if _, err := os.Lstat(filepath.Join(fx.policy.ChrootBase, "firecracker", req.VMID)); err == nil && ValidJailID(req.VMID) == nil {
				t.Fatal("a refused launch left its jail behind")
			}
		})
	}
}

func TestLaunchJailerRefusesOtherOwnersFiles(t *testing.T) {
	requireRoot(t)
	fx := newJailFixture(t)
	req := fx.request(t)
	must(t, os.Chown(filepath.Join(fx.state, "vmlinux"), 65534, 65534))
	if _, err := Call(context.Background(), fx.local, OpLaunchJailer, req); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("another user's kernel: %v", err)
	}
	// A jailer in a directory another user owns.
	must(t, os.Chown(filepath.Dir(fx.policy.Jailer), 65534, 65534))
	if _, err := Call(context.Background(), fx.local, OpLaunchJailer, fx.request(t)); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("jailer in another user's dir: %v", err)
	}
}

func TestRemoveJailBeforeAnyJail(t *testing.T) {
	fx := newJailFixture(t)
	if err := Do(context.Background(), fx.local, OpRemoveJail, VMRef{VMID: "vm-0123"}); err != nil {
		t.Fatalf("removing a jail that was never made: %v", err)
	}
}

func TestLaunchJailerWithoutPolicy(t *testing.T) {
	fx := newJailFixture(t)
	req := fx.request(t)
	fx.local.policy.Jailer = nil
	if _, err := Call(context.Background(), fx.local, OpLaunchJailer, req); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("launch without a jailer policy: %v", err)
	}
	if err := Do(context.Background(), fx.local, OpRemoveJail, VMRef{VMID: "vm-0123"}); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("remove without a jailer policy: %v", err)
	}
}

func TestNewLocalJailerPolicy(t *testing.T) {
	base := Policy{StateDir: "/var/lib/banger", RuntimeDir: "/run/banger"}
	for _, p := range []JailerPolicy{
		{Jailer: "jailer", Firecracker: "/usr/bin/firecracker", ChrootBase: "/var/lib/banger-jail"},
		{Jailer: "/usr/bin/jailer", Firecracker: "/usr/bin/qemu", ChrootBase: "/var/lib/banger-jail"},
		{Jailer: "/usr/bin/jailer", Firecracker: "/usr/bin/firecracker", ChrootBase: "/var/lib/../banger-jail"},
	} {
		pol := base
		pol.Jailer = &p
		if _, err := NewLocal(pol, &fakeBackend{}); err == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}

func TestHelperPassesJailerDescriptors(t *testing.T) {
	h := startHelper(t, Owner{UID: os.Getuid(), GID: os.Getgid()})
	fx := &jailFixture{testTree: h.tree}
	bin := filepath.Join(h.tree.root, "bin")
	must(t, os.Mkdir(bin, 0o755))
	must(t, os.Chmod(h.tree.root, 0o755))
	fx.policy = JailerPolicy{Jailer: filepath.Join(bin, "jailer"), Firecracker: filepath.Join(bin, "firecracker"), ChrootBase: filepath.Join(h.tree.root, "jail")}
	for _, b := range []string{fx.policy.Jailer, fx.policy.Firecracker} {
		must(t, os.WriteFile(b, []byte("#!/bin/sh\n"), 0o755))
	}
	h.tree.local.policy.Jailer = &fx.policy
	req := fx.request(t)
	req.Initrd = nil
	got, err := Call(context.Background(), NewClient(h.socket), OpLaunchJailer, req)
	if err != nil {
		t.Fatalf("launch over the socket: %v", err)
	}
	if got.Initrd != "" || inodeAt(t, got.Kernel) != inodeOf(t, req.Kernel) || inodeAt(t, got.Drives["seed"]) != inodeOf(t, req.Drives[1].File) {
		t.Fatalf("the helper staged other files than the client passed: %+v", got)
	}
	if err := Do(context.Background(), NewClient(h.socket), OpRemoveJail, VMRef{VMID: "vm-0123"}); err != nil {
		t.Fatalf("remove over the socket: %v", err)
	}
	if err := Do(context.Background(), NewClient(h.socket), OpRemoveJail, VMRef{VMID: "../etc"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("hostile remove: %v", err)
	}
}

func TestJailerArgsDescriptorCount(t *testing.T) {
	for _, tc := range []struct {
		args jailerArgs
		want int
	}{
		{jailerArgs{VMID: "a", Drives: "rootfs:rw"}, 3},
		{jailerArgs{VMID: "a", Drives: "rootfs:rw,seed:ro", Initrd: true}, 5},
		{jailerArgs{VMID: "a", Drives: ""}, -1},
		{jailerArgs{VMID: "a", Drives: "rootfs:rx"}, -1},
		{jailerArgs{VMID: "a", Drives: "a:rw,b:rw,c:rw,d:rw,e:rw"}, -1},
	} {
		if got := tc.args.fileCount(); got != tc.want {
			t.Errorf("%+v: %d descriptors, want %d", tc.args, got, tc.want)
		}
	}
}

// TestStagingWithoutHardLinks covers what happens across mount namespaces
// (a sandboxed daemon and helper), where the kernel refuses hard links: on
// the real host backend, drives go through loop devices over the very same
// files and the kernel and initrd are copied; RemoveJail detaches the loops.
func TestStagingWithoutHardLinks(t *testing.T) {
	requireRoot(t)
	fx := newJailFixture(t)
	backend := HostBackend()
	if err := backend.Loops.Available(); err != nil {
		t.Skip(err)
	}
	l, err := NewLocal(fx.local.policy, backend)
	must(t, err)
	l.noHardLinks = true
	// The stand-in jailer exits at once; staging is what is under test.
	must(t, os.WriteFile(fx.policy.Jailer, []byte("#!/bin/sh\nexit 0\n"), 0o755))
	req := fx.request(t)
	must(t, os.WriteFile(filepath.Join(fx.state, "vmlinux"), []byte("kernel bytes"), 0o600))
	ctx := context.Background()
	got, err := Call(ctx, l, OpLaunchJailer, req)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	t.Cleanup(func() { _ = Do(ctx, l, OpRemoveJail, VMRef{VMID: "vm-0123"}) })

	kernel, err := os.ReadFile(got.Kernel)
	if err != nil || string(kernel) != "kernel bytes" {
		t.Fatalf("copied kernel: %q %v", kernel, err)
	}
	if fi, _ := os.Stat(got.Kernel); fi.Mode().Perm() != 0o400 || inodeAt(t, got.Kernel) == inodeOf(t, req.Kernel) {
		t.Fatalf("kernel in the jail: %v, want a read-only copy", fi.Mode())
	}
	var loops []string
	for id, want := range map[string]*os.File{"rootfs": req.Drives[0].File, "seed": req.Drives[1].File} {
		var st unix.Stat_t
		must(t, unix.Stat(got.Drives[id], &st))
		if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != loopMajor || st.Mode&0o777 != 0o600 {
			t.Fatalf("drive %s in the jail: mode %#o rdev %d:%d", id, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/7:%d", unix.Minor(st.Rdev)))
		must(t, err)
		dev := filepath.Base(link)
		loops = append(loops, dev)
		backing, err := os.ReadFile("/sys/block/" + dev + "/loop/backing_file")
		must(t, err)
		name, _ := os.Readlink(filepath.Join("/proc/self/fd", strconv.Itoa(int(want.Fd()))))
		if strings.TrimSpace(string(backing)) != name {
			t.Fatalf("drive %s is looped over %q, want %q", id, backing, name)
		}
		ro, _ := os.ReadFile("/sys/block/" + dev + "/ro")
		if wantRO := map[string]string{"rootfs": "0", "seed": "1"}[id]; strings.TrimSpace(string(ro)) != wantRO {
			t.Errorf("drive %s read-only flag %q, want %s", id, ro, wantRO)
		}
	}
	must(t, Do(ctx, l, OpRemoveJail, VMRef{VMID: "vm-0123"}))
	for _, dev := range loops {
		if b, err := os.ReadFile("/sys/block/" + dev + "/loop/backing_file"); err == nil {
			t.Errorf("%s still attached to %s after RemoveJail", dev, b)
		}
	}
	if _, err := os.Lstat(filepath.Dir(got.Root)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("jail left: %v", err)
	}
}

func TestStagingRefusesFilesOutsideTheStateDir(t *testing.T) {
	fx := newJailFixture(t)
	req := fx.request(t)
	req.Kernel = ownedFile(t, fx.root, "vmlinux-elsewhere", os.O_RDONLY)
	if _, err := Call(context.Background(), fx.local, OpLaunchJailer, req); err == nil || !strings.Contains(err.Error(), "not a file in banger's state dir") {
		t.Fatalf("kernel outside the state dir: %v", err)
	}
}
