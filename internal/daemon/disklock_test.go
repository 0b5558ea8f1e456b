package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func tempDisk(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDiskLockLivesAsLongAsTheVMM: the lock handed to a child (as the VMM
// gets it) outlives our copy, refuses a second locker with the holder's
// name, and is gone with the child.
func TestDiskLockLivesAsLongAsTheVMM(t *testing.T) {
	disk := tempDisk(t)
	lock, err := lockDisk(disk)
	if err != nil {
		t.Fatal(err)
	}
	vmm := exec.Command("sleep", "60")
	vmm.ExtraFiles = []*os.File{lock}
	if err := vmm.Start(); err != nil {
		t.Skipf("cannot run sleep: %v", err)
	}
	t.Cleanup(func() { _ = vmm.Process.Kill(); _ = vmm.Wait() })
	if err := lock.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = lockDisk(disk)
	if !errors.Is(err, errDiskInUse) {
		t.Fatalf("second lock while the VMM runs: %v, want errDiskInUse", err)
	}
	if want := fmt.Sprintf("locked by pid %d (sleep)", vmm.Process.Pid); !strings.Contains(err.Error(), want) {
		t.Fatalf("the refusal does not name the holder (%q): %v", want, err)
	}

	if err := vmm.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = vmm.Wait()
	again, err := lockDisk(disk)
	if err != nil {
		t.Fatalf("lock after the VMM is gone: %v", err)
	}
	_ = again.Close()
}

// TestQEMUOpensADiskBangerLocked: QEMU locks bytes of the images it opens
// itself; banger's lock must not collide with them, or every QEMU boot would
// fail with "Failed to lock byte 100".
func TestQEMUOpensADiskBangerLocked(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed")
	}
	disk := tempDisk(t)
	lock, err := lockDisk(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	cmd := exec.Command(qemu, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
		"-drive", "file="+disk+",format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
		"-monitor", "stdio")
	cmd.ExtraFiles = []*os.File{lock}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The monitor prompt comes once the machine, its disk included, is up.
	r := bufio.NewReader(stdout)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "(qemu)") {
		b, err := r.ReadByte()
		if err != nil {
			_ = cmd.Wait()
			t.Fatalf("qemu did not come up with the locked disk: %v\n%s", err, stderr.String())
		}
		seen.WriteByte(b)
	}
	_, _ = io.WriteString(stdin, "quit\n")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, stderr.String())
	}
}
