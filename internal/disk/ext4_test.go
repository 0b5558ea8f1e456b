package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestReadExt4(t *testing.T) {
	img := makeExt4(t, 64<<20)
	info, err := ReadExt4(img)
	if err != nil {
		t.Fatal(err)
	}
	if info.FSBytes != 64<<20 || info.FileBytes != 64<<20 || info.Label != "banger-root" {
		t.Fatalf("info %+v", info)
	}

	dir := t.TempDir()
	notExt4 := filepath.Join(dir, "zeros")
	if err := os.WriteFile(notExt4, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(dir, "tiny")
	if err := os.WriteFile(tiny, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(img)
	truncated := filepath.Join(dir, "truncated.ext4")
	if err := os.WriteFile(truncated, data[:32<<20], 0o644); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]string{
		filepath.Join(dir, "missing"): "does not exist",
		notExt4:                       "not an ext4 file system image",
		tiny:                          "not an ext4 file system image",
		truncated:                     "is truncated",
	} {
		_, err := ReadExt4(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadExt4(%s) = %v, want %q", filepath.Base(path), err, want)
		}
	}
}

func TestMakeExt4Errors(t *testing.T) {
	ctx := context.Background()
	r := &systemtest.Runner{}
	existing := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(existing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec Ext4Spec
		want string
	}{
		{Ext4Spec{Path: existing, SizeBytes: 64 << 20}, "already exists"},
		{Ext4Spec{Path: existing + "2", SizeBytes: 1 << 20}, "too small"},
		{Ext4Spec{Path: existing + "3", SizeBytes: 64 << 20, Label: strings.Repeat("l", 17)}, "longer than 16"},
	} {
		if err := MakeExt4(ctx, r, tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MakeExt4(%+v) = %v, want %q", tc.spec, err, tc.want)
		}
	}
	if len(r.Lines()) != 0 {
		t.Fatalf("ran %v", r.Lines())
	}
	// A failing mkfs removes what it may have started.
	failing := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if err := os.WriteFile(c.Args[len(c.Args)-2], []byte("partial"), 0o644); err != nil {
			return system.Output{}, err
		}
		return systemtest.Exit(1, "mkfs.ext4: Could not allocate block in ext2 filesystem")
	}}
	out := filepath.Join(t.TempDir(), "new.ext4")
	err := MakeExt4(ctx, failing, Ext4Spec{SourceDir: t.TempDir(), Path: out, SizeBytes: 64 << 20})
	if err == nil || !strings.Contains(err.Error(), "Could not allocate block") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("partial image left behind")
	}
}

func TestResizeForReal(t *testing.T) {
	needCmd(t, "resize2fs", "e2fsck")
	img := makeExt4(t, 64<<20)
	ctx := context.Background()
	if err := Resize(ctx, system.ExecRunner{}, img, 32<<20); err == nil || !strings.Contains(err.Error(), "smaller than the image") {
		t.Fatalf("shrink: %v", err)
	}
	if err := Resize(ctx, system.ExecRunner{}, img, 256<<20); err != nil {
		t.Fatal(err)
	}
	info, err := ReadExt4(img)
	if err != nil {
		t.Fatal(err)
	}
	if info.FSBytes != 256<<20 {
		t.Fatalf("file system is %d bytes after resize, want 256 MiB", info.FSBytes)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck after resize: %v\n%s", err, out)
	}
	// Same size: nothing to run.
	r := &systemtest.Runner{}
	if err := Resize(ctx, r, img, 256<<20); err != nil || len(r.Lines()) != 0 {
		t.Fatalf("no-op resize: %v, ran %v", err, r.Lines())
	}
}

// editSuperblock lets edit change img's superblock in place.
func editSuperblock(t *testing.T, img string, edit func(sb []byte)) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, superblockOffset); err != nil {
		t.Fatal(err)
	}
	edit(sb)
	// With metadata_csum, e2fsprogs checks the superblock's CRC32C (stored
	// without the final inversion Go's Checksum applies).
	const roCompatMetadataCsum = 0x400
	if binary.LittleEndian.Uint32(sb[0x64:])&roCompatMetadataCsum != 0 {
		binary.LittleEndian.PutUint32(sb[0x3FC:], ^crc32.Checksum(sb[:0x3FC], crc32.MakeTable(crc32.Castagnoli)))
	}
	if _, err := f.WriteAt(sb, superblockOffset); err != nil {
		t.Fatal(err)
	}
}

// markMountedSinceCheck makes img look like a disk a guest has used:
// mounted (s_mtime) after its last check (s_lastcheck).
func markMountedSinceCheck(t *testing.T, img string) {
	t.Helper()
	editSuperblock(t, img, func(sb []byte) {
		le := binary.LittleEndian
		le.PutUint32(sb[0x2C:], le.Uint32(sb[0x40:])+1)
	})
}

// A file system nobody mounted since mkfs is grown without a check: the
// e2fsck would be a wasted process per create.
func TestResizeSkipsTheCheckOfACleanImage(t *testing.T) {
	img := makeExt4(t, 64<<20)
	if info, err := ReadExt4(img); err != nil || !info.CheckedClean {
		t.Fatalf("fresh image: %+v, %v; want CheckedClean", info, err)
	}
	r := &systemtest.Runner{}
	if err := Resize(context.Background(), r, img, 128<<20); err != nil {
		t.Fatal(err)
	}
	if want := []string{"resize2fs " + img + " 131072K"}; !slices.Equal(r.Lines(), want) {
		t.Fatalf("ran %q, want %q", r.Lines(), want)
	}
}

// What resize2fs would refuse without `e2fsck -f` is not CheckedClean.
func TestCheckedCleanFollowsResize2fs(t *testing.T) {
	le := binary.LittleEndian
	for _, tt := range []struct {
		name string
		edit func(sb []byte)
	}{
		{"mounted since checked", func(sb []byte) { le.PutUint32(sb[0x2C:], le.Uint32(sb[0x40:])+1) }},
		{"mounted since checked (64-bit time)", func(sb []byte) { sb[0x275] = 1 }},
		{"not cleanly unmounted", func(sb []byte) { sb[0x3A] &^= stateValid }},
		{"errors recorded", func(sb []byte) { sb[0x3A] |= stateErrors }},
		{"journal to replay", func(sb []byte) { sb[0x60] |= incompatRecover }},
		{"free blocks above the total", func(sb []byte) { le.PutUint32(sb[0x0C:], le.Uint32(sb[0x04:])+1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img := makeExt4(t, 64<<20)
			editSuperblock(t, img, tt.edit)
			info, err := ReadExt4(img)
			if err != nil {
				t.Fatal(err)
			}
			if info.CheckedClean {
				t.Fatal("CheckedClean, want a check before resize")
			}
		})
	}
}

// A used disk is checked, then grown, with the real tools (resize2fs
// refuses it without the check).
func TestResizeChecksAUsedDiskForReal(t *testing.T) {
	needCmd(t, "resize2fs", "e2fsck")
	img := makeExt4(t, 64<<20)
	markMountedSinceCheck(t, img)
	if out, err := exec.Command("resize2fs", img, "131072K").CombinedOutput(); err == nil || !strings.Contains(string(out), "e2fsck -f") {
		t.Fatalf("resize2fs without a check: %v\n%s; want it to ask for e2fsck -f", err, out)
	}
	if err := Resize(context.Background(), system.ExecRunner{}, img, 128<<20); err != nil {
		t.Fatal(err)
	}
	if info, err := ReadExt4(img); err != nil || info.FSBytes != 128<<20 {
		t.Fatalf("after resize: %+v, %v", info, err)
	}
}

func TestResizeRunsCheckThenResize(t *testing.T) {
	img := makeExt4(t, 64<<20)
	markMountedSinceCheck(t, img)
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if c.Path == "e2fsck" {
			return systemtest.Exit(1, "") // "errors corrected" is fine
		}
		return system.Output{}, nil
	}}
	if err := Resize(context.Background(), r, img, 128<<20); err != nil {
		t.Fatal(err)
	}
	want := []string{"e2fsck -f -p " + img, "resize2fs " + img + " 131072K"}
	if strings.Join(r.Lines(), "\n") != strings.Join(want, "\n") {
		t.Fatalf("ran %q, want %q", r.Lines(), want)
	}
	failing := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(4, "UNEXPECTED INCONSISTENCY")
	}}
	if err := Resize(context.Background(), failing, img, 256<<20); err == nil || !strings.Contains(err.Error(), "UNEXPECTED INCONSISTENCY") {
		t.Fatalf("failing fsck: %v", err)
	}
}

// TestCloneResizedSparse clones a real ext4 image by the best file method
// here, grows it, and checks the base is untouched after the clone is
// written to.
func TestCloneResizedSparse(t *testing.T) {
	needCmd(t, "resize2fs", "e2fsck")
	img := makeExt4(t, 64<<20)
	before, _ := os.ReadFile(img)
	dst := filepath.Join(t.TempDir(), "vm.ext4")
	m, err := CloneResized(context.Background(), system.ExecRunner{}, img, dst, 512<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cloned by %s", m)
	info, err := ReadExt4(dst)
	if err != nil || info.FSBytes != 512<<20 {
		t.Fatalf("clone: %+v, %v", info, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 64<<20 {
		t.Fatalf("512 MiB clone allocates %d bytes: not sparse", st.Blocks*512)
	}
	after, _ := os.ReadFile(img)
	if !bytes.Equal(before, after) {
		t.Fatal("base image changed by clone + resize")
	}
	if _, err := CloneResized(context.Background(), system.ExecRunner{}, img, filepath.Join(t.TempDir(), "small"), 16<<20); err == nil ||
		!strings.Contains(err.Error(), "smaller than the image") {
		t.Fatalf("smaller disk: %v", err)
	}
	notImg := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(notImg, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CloneResized(context.Background(), system.ExecRunner{}, notImg, filepath.Join(t.TempDir(), "y"), 1<<30); err == nil ||
		!strings.Contains(err.Error(), "not an ext4") {
		t.Fatalf("wrong magic: %v", err)
	}
}

// TestCloneMethodsBaseUntouched runs Clone on a file system without
// reflink (sparse copy) and, when one can be had, on one with it (reflink),
// writes into each clone and checks the base keeps its bytes.
func TestCloneMethodsBaseUntouched(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want Method
	}{
		{"sparse-copy", func(t *testing.T) string {
			d := t.TempDir()
			if ProbeReflink(d) == nil {
				t.Skip("temp dir supports reflink; sparse path covered by the fallback tests")
			}
			return d
		}, SparseCopy},
		{"reflink", func(t *testing.T) string { return reflinkDir(t, 512<<20) }, Reflink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			base := filepath.Join(dir, "base.img")
			f, err := os.Create(base)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(32 << 20); err != nil {
				t.Fatal(err)
			}
			fillAt(t, f, 0xAB, 1<<20, 0)
			fillAt(t, f, 0xCD, 1<<20, 16<<20)
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			orig, _ := os.ReadFile(base)
			dst := filepath.Join(dir, "vm.img")
			m, err := Clone(base, dst, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Fatalf("method %s, want %s", m, tc.want)
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got[:len(orig)], orig) || len(got) != 64<<20 {
				t.Fatal("clone content differs")
			}
			w, err := os.OpenFile(dst, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fillAt(t, w, 0xEF, 1<<20, 0)
			fillAt(t, w, 0xEF, 4096, 16<<20+4096)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			now, _ := os.ReadFile(base)
			if !bytes.Equal(now, orig) {
				t.Fatal("writing the clone changed the base")
			}
		})
	}
}

// fillAt writes n bytes of b into f at off.
func fillAt(t *testing.T, f *os.File, b byte, n int, off int64) {
	t.Helper()
	if _, err := f.WriteAt(bytes.Repeat([]byte{b}, n), off); err != nil {
		t.Fatal(err)
	}
}
