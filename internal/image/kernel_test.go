package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

func TestExtractVmlinuxFromDebianKernel(t *testing.T) {
	k := realKernel(t)
	info, err := InspectKernel(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatBzImage || info.Compression != CompressXZ {
		t.Fatalf("Debian vmlinuz inspected as %+v, want an xz bzImage", info)
	}
	dst := filepath.Join(t.TempDir(), "vmlinux")
	start := time.Now()
	info, err = ExtractVmlinux(k.Vmlinuz, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extracted %s in %s", k.Release, time.Since(start).Round(time.Millisecond))
	if !info.PVH {
		t.Fatal("extracted vmlinux has no PVH entry note")
	}
	f, err := elf.Open(dst)
	if err != nil {
		t.Fatalf("result is not ELF: %v", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("vmlinux is %v %v, want an x86-64 executable", f.Machine, f.Type)
	}
	again, err := InspectKernel(dst)
	if err != nil || again.Format != FormatELF || !again.PVH {
		t.Fatalf("inspect extracted vmlinux: %+v, %v", again, err)
	}
	// Extracting an ELF is a copy.
	copyDst := filepath.Join(t.TempDir(), "vmlinux")
	if info, err := ExtractVmlinux(dst, copyDst); err != nil || info.Format != FormatELF || !info.PVH {
		t.Fatalf("extract from ELF: %+v, %v", info, err)
	}

	// Cut the real bzImage short: the error must say it is truncated.
	data, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "vmlinuz-cut")
	if err := os.WriteFile(cut, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ExtractVmlinux(cut, filepath.Join(t.TempDir(), "out"))
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated Debian kernel: err = %v, want a truncation error", err)
	}
}

// TestExtractEachCompression wraps a small ELF in a bzImage with every
// payload compression banger supports and checks the round trip.
func TestExtractEachCompression(t *testing.T) {
	vmlinux := testELF(true, 256<<10)
	cli := func(name string, args ...string) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			needCmd(t, name)
			cmd := exec.Command(name, args...)
			cmd.Stdin = bytes.NewReader(vmlinux)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return out
		}
	}
	cases := []struct {
		name     string
		want     Compression
		compress func(t *testing.T) []byte
	}{
		{"gzip", CompressGzip, func(t *testing.T) []byte {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			if _, err := w.Write(vmlinux); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}},
		{"zstd", CompressZstd, func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := zstd.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(vmlinux); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}},
		{"xz-lzma2-crc64", CompressXZ, func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := xz.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			finishWriter(t, w, vmlinux)
			return b.Bytes()
		}},
		// What the kernel build does: `xz --check=crc32 --x86 --lzma2`.
		{"xz-x86-bcj-crc32", CompressXZ, cli("xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB", "-c")},
		{"xz-sha256", CompressXZ, cli("xz", "--check=sha256", "-c")},
		{"lzma", CompressLZMA, func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := lzma.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			finishWriter(t, w, vmlinux)
			return b.Bytes()
		}},
		{"bzip2", CompressBzip2, cli("bzip2", "-9", "-c")},
		{"lz4-legacy", CompressLZ4, cli("lz4", "-l", "-9", "-c")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(src, fakeBzImage(withSize(tc.compress(t), len(vmlinux))), 0o644); err != nil {
				t.Fatal(err)
			}
			info, err := InspectKernel(src)
			if err != nil || info.Format != FormatBzImage || info.Compression != tc.want {
				t.Fatalf("inspect: %+v, %v", info, err)
			}
			dst := filepath.Join(dir, "vmlinux")
			info, err = ExtractVmlinux(src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if !info.PVH {
				t.Error("PVH note not found")
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, vmlinux) {
				t.Fatalf("extracted %d bytes differ from the original %d", len(got), len(vmlinux))
			}
		})
	}
}

func TestKernelWithoutPVHNote(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "vmlinux")
	writeFile(t, src, testELF(false, 1024))
	info, err := InspectKernel(src)
	if err != nil || info.Format != FormatELF || info.PVH {
		t.Fatalf("inspect: %+v, %v", info, err)
	}
}

func TestBadKernelInputs(t *testing.T) {
	good := func() []byte {
		var b bytes.Buffer
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		finishWriter(t, w, testELF(true, 64<<10))
		return fakeBzImage(withSize(b.Bytes(), len(testELF(true, 64<<10))))
	}()
	corrupt := append([]byte{}, good...)
	corrupt[len(corrupt)-100] ^= 0xff
	notELF := func() []byte {
		var b bytes.Buffer
		finishWriter(t, gzip.NewWriter(&b), bytes.Repeat([]byte("not an elf "), 100))
		return fakeBzImage(withSize(b.Bytes(), 1100))
	}()
	oldProto := append([]byte{}, good...)
	oldProto[0x206], oldProto[0x207] = 0x04, 0x02

	cases := []struct {
		name string
		data []byte // nil: file missing
		want string
	}{
		{"missing", nil, "does not exist"},
		{"empty", []byte{}, "neither an ELF vmlinux nor a bzImage"},
		{"text", []byte(strings.Repeat("hello kernel\n", 100)), "neither an ELF vmlinux nor a bzImage"},
		{"header only", good[:0x220], "truncated"},
		{"payload cut", good[:len(good)-500], "truncated"},
		{"corrupt payload", corrupt, "corrupt"},
		{"payload not ELF", notELF, "not an ELF vmlinux"},
		{"old boot protocol", oldProto, "too old"},
		{"broken ELF", []byte("\x7fELF\x02\x01\x01garbage"), "not a valid ELF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "kernel")
			if tc.data != nil {
				writeFile(t, src, tc.data)
			}
			dst := filepath.Join(dir, "vmlinux")
			_, err := ExtractVmlinux(src, dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
				t.Error("a failed extraction left an output file")
			}
		})
	}
}

// finishWriter writes data through a compressor and closes it.
func finishWriter(t testing.TB, w io.WriteCloser, data []byte) {
	t.Helper()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
