package firecracker

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
)

func TestStageIntoJailLinksFilesAndMovesSockets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := vmm.LaunchSpec{
		VMID: "vm1", KernelPath: write("vmlinux", "kernel"), InitrdPath: write("initrd", "initrd"),
		RootDrive:   vmm.Drive{ID: "rootfs", Path: write("disk.ext4", "disk")},
		ExtraDrives: []vmm.Drive{{ID: "data", Path: write("data.img", "data"), ReadOnly: true}},
		Agent:       vmm.AgentChannel{UDSPath: filepath.Join(dir, "run", "vsock.sock"), Port: 1024},
		VMMLogPath:  filepath.Join(dir, "vmm.log"),
	}
	l := layout{jailRoot: filepath.Join(dir, "jail", "firecracker", "vm1", "root")}
	got, err := stageIntoJail(spec, l)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{got.KernelPath, got.InitrdPath, got.RootDrive.Path, got.ExtraDrives[0].Path, got.Agent.UDSPath, got.VMMLogPath} {
		if _, err := l.inside(p); err != nil {
			t.Errorf("%s not inside the jail: %v", p, err)
		}
	}
	// The disk is the same inode: the guest's writes land in banger's file.
	var a, b syscall.Stat_t
	_ = syscall.Stat(spec.RootDrive.Path, &a)
	_ = syscall.Stat(got.RootDrive.Path, &b)
	if a.Ino != b.Ino {
		t.Fatal("root drive was copied, not linked")
	}
	if spec.ExtraDrives[0].Path == got.ExtraDrives[0].Path {
		t.Fatal("the caller's spec was modified")
	}
	// Staging twice (a restart) replaces the links.
	if _, err := stageIntoJail(spec, l); err != nil {
		t.Fatalf("second staging: %v", err)
	}
	// Without a jail nothing changes.
	same, err := stageIntoJail(spec, layout{})
	if err != nil || same.RootDrive.Path != spec.RootDrive.Path {
		t.Fatalf("unjailed staging changed the spec: %v", err)
	}
}

func TestStageIntoJailAcrossFileSystemsSaysWhatToDo(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm to act as a second file system")
	}
	var tmp, shm syscall.Statfs_t
	dir := t.TempDir()
	if syscall.Statfs(dir, &tmp) != nil || syscall.Statfs("/dev/shm", &shm) != nil || tmp.Fsid == shm.Fsid {
		t.Skip("temp dir and /dev/shm are on the same file system")
	}
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	jail, err := os.MkdirTemp("/dev/shm", "bgjail")
	if err != nil {
		t.Skip("cannot write /dev/shm")
	}
	defer func() { _ = os.RemoveAll(jail) }()
	_, err = stageIntoJail(vmm.LaunchSpec{KernelPath: kernel}, layout{jailRoot: filepath.Join(jail, "root")})
	if err == nil || !strings.Contains(err.Error(), "another file system") {
		t.Fatalf("cross-device staging: %v", err)
	}
}
