package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/system"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func needCmd(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s on PATH (%v)", n, err)
		}
	}
}

// needLoops skips unless loop devices can really be attached here.
func needLoops(t testing.TB) {
	t.Helper()
	needRoot(t)
	if err := HostLoops().Available(); err != nil {
		t.Skip(err.Error())
	}
}

// fakeDM is an in-memory DMRunner that validates like the real one.
type fakeDM struct {
	unavailable error
	devices     map[string][]DMTarget
	order       []string
	failCreate  string
}

func newFakeDM() *fakeDM { return &fakeDM{devices: map[string][]DMTarget{}} }

func (f *fakeDM) Available() error { return f.unavailable }

func (f *fakeDM) Create(_ context.Context, name string, table []DMTarget) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ValidateTable(table); err != nil {
		return err
	}
	if name == f.failCreate {
		return errors.New("dmsetup create failed (fake)")
	}
	if _, ok := f.devices[name]; ok {
		return fmt.Errorf("%s exists", name)
	}
	f.devices[name] = table
	f.order = append(f.order, "create "+name)
	return nil
}

func (f *fakeDM) Remove(_ context.Context, name string) error {
	if _, ok := f.devices[name]; !ok {
		return fmt.Errorf("%s does not exist", name)
	}
	// Like the kernel: a device another table uses is busy.
	for other, table := range f.devices {
		for _, t := range table {
			for _, a := range t.Args {
				if a == "/dev/mapper/"+name {
					return fmt.Errorf("%s is in use by %s", name, other)
				}
			}
		}
	}
	delete(f.devices, name)
	f.order = append(f.order, "remove "+name)
	return nil
}

func (f *fakeDM) List(context.Context) ([]string, error) {
	var out []string
	for n := range f.devices {
		out = append(out, n)
	}
	return out, nil
}

// makeExt4 builds a small real ext4 image holding a file, or skips.
func makeExt4(t testing.TB, size int64) string {
	t.Helper()
	needCmd(t, "mkfs.ext4")
	dir := t.TempDir()
	src := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("banger\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "rootfs.ext4")
	if err := MakeExt4(context.Background(), system.ExecRunner{}, Ext4Spec{SourceDir: src, Path: img, SizeBytes: size, Label: "banger-root"}); err != nil {
		t.Fatal(err)
	}
	return img
}

// reflinkDir returns a directory on a file system that supports FICLONE:
// the temp dir when it does, else a loop-mounted XFS (root, mkfs.xfs), else
// it skips.
func reflinkDir(t testing.TB, size int64) string {
	t.Helper()
	if ProbeReflink(t.TempDir()) == nil {
		return t.TempDir()
	}
	needLoops(t)
	needCmd(t, "mkfs.xfs")
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.xfs: %v %s", err, out)
	}
	loops := HostLoops()
	l, err := loops.Attach(img, LoopOptions{Name: "banger-test-xfs"})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(l.Device, mnt, "xfs", 0, ""); err != nil {
		_ = loops.Detach(l.Device)
		t.Skipf("mount xfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
		if err := loops.Detach(l.Device); err != nil {
			t.Errorf("detach: %v", err)
		}
	})
	if err := ProbeReflink(mnt); err != nil {
		t.Skipf("loop-mounted XFS cannot reflink: %v", err)
	}
	return mnt
}
