package disk

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFreeBytesOnTmpfs measures a file system of known size, so the numbers
// are exact (a temp dir on the shared disk moves with other writers).
func TestFreeBytesOnTmpfs(t *testing.T) {
	needRoot(t)
	mnt := t.TempDir()
	if err := unix.Mount("banger-test", mnt, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })

	free, err := FreeBytes(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if free != 16<<20 {
		t.Errorf("an empty 16 MiB tmpfs has %d bytes free, want %d", free, 16<<20)
	}
	if err := os.WriteFile(filepath.Join(mnt, "data"), make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if free, err = FreeBytes(mnt); err != nil || free != 12<<20 {
		t.Errorf("after writing 4 MiB: %d bytes free (err %v), want %d", free, err, 12<<20)
	}
	if _, err := FreeBytes(filepath.Join(mnt, "missing")); err == nil {
		t.Error("FreeBytes of a missing path succeeded")
	}
}
