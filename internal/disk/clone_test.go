package disk

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCloneKeepsContentAndHolesAndGrows(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "image.ext4")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// 64 MiB file with data at the start, the middle and the end.
	const size = 64 << 20
	chunks := map[int64][]byte{0: bytes.Repeat([]byte("A"), 4096), 32 << 20: bytes.Repeat([]byte("B"), 8192), size - 4096: bytes.Repeat([]byte("C"), 4096)}
	for off, b := range chunks {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	dst := filepath.Join(dir, "vm.ext4")
	m, err := Clone(src, dst, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	if m != Reflink && m != SparseCopy {
		t.Fatalf("method %q", m)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 128<<20 {
		t.Fatalf("size %d, want grown to 128 MiB", len(got))
	}
	for off, b := range chunks {
		if !bytes.Equal(got[off:off+int64(len(b))], b) {
			t.Fatalf("content at %d differs", off)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	// Allocated blocks (512-byte units) must be far below the apparent size.
	if st.Blocks*512 > 8<<20 {
		t.Fatalf("clone is not sparse: %d bytes allocated", st.Blocks*512)
	}
}

func TestCloneRefusesExistingAndCleansUpOnError(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "img")
	if err := os.WriteFile(src, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "vm")
	if err := os.WriteFile(dst, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(src, dst, 0); err == nil {
		t.Fatal("overwrote an existing disk")
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Fatal("existing file was touched")
	}
	if _, err := Clone(filepath.Join(dir, "missing"), filepath.Join(dir, "new"), 0); err == nil {
		t.Fatal("cloned a missing image")
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Fatal("failed clone left a file")
	}
}
