package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
)

// needRoot skips tests that need root, saying so.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// needCmd skips tests whose external tool is missing.
func needCmd(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s on PATH (%v)", n, err)
		}
	}
}

// testCacheDir is where downloaded test inputs (the Debian kernel, the
// debootstrap .debs) are kept between runs: $BANGER_TEST_CACHE, else
// os.UserCacheDir()/banger-test.
func testCacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("no cache dir for downloaded test inputs: %v (set BANGER_TEST_CACHE)", err)
	}
	return filepath.Join(d, "banger-test")
}

var (
	debianKernelOnce sync.Once
	debianKernel     DebianKernel
	debianKernelErr  error
	debianKernelTime time.Duration
)

// realKernel fetches (once per test binary, cached on disk per package
// version) Debian's linux-image-amd64, or skips with the reason.
func realKernel(t testing.TB) DebianKernel {
	t.Helper()
	needRoot(t)
	needCmd(t, "apt-get", "apt-cache", "dpkg-deb", "depmod")
	debianKernelOnce.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		k := DebianKernels{Runner: system.ExecRunner{}, CacheDir: filepath.Join(testCacheDir(t), "kernels")}
		debianKernel, debianKernelErr = k.Fetch(ctx, DefaultKernelPackage)
		debianKernelTime = time.Since(start)
	})
	if debianKernelErr != nil {
		t.Skipf("Debian kernel package is not fetchable here: %v", debianKernelErr)
	}
	t.Logf("Debian kernel %s %s (%s) ready in %s", debianKernel.Package, debianKernel.Version, debianKernel.Release, debianKernelTime.Round(time.Millisecond))
	return debianKernel
}

// mirrorReachable skips unless the Debian mirror answers for suite.
func mirrorReachable(t testing.TB, mirror, suite string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Head(strings.TrimSuffix(mirror, "/") + "/dists/" + suite + "/Release")
	if err != nil {
		t.Skipf("Debian mirror %s is not reachable: %v", mirror, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Skipf("Debian mirror %s answers %s for %s", mirror, resp.Status, suite)
	}
}

// testELF returns a minimal static x86-64 ELF executable image; with pvh it
// carries a Xen PHYS32_ENTRY note in a PT_NOTE segment, like a vmlinux
// built with CONFIG_PVH. filler pads it out so compressors have work.
func testELF(pvh bool, filler int) []byte {
	le := binary.LittleEndian
	var note []byte
	if pvh {
		note = make([]byte, 12+4+4)
		le.PutUint32(note[0:], 4) // namesz "Xen\0"
		le.PutUint32(note[4:], 4) // descsz
		le.PutUint32(note[8:], xenElfNotePhys32Entry)
		copy(note[12:], "Xen\x00")
		le.PutUint32(note[16:], 0x1000000)
	} else {
		note = make([]byte, 12+4+4)
		le.PutUint32(note[0:], 4)
		le.PutUint32(note[4:], 4)
		le.PutUint32(note[8:], 3) // NT_GNU_BUILD_ID-ish, not PVH
		copy(note[12:], "GNU\x00")
	}
	const ehsize, phsize = 64, 56
	h := make([]byte, ehsize+phsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], 62)   // EM_X86_64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[32:], ehsize) // phoff
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phsize)
	le.PutUint16(h[56:], 1) // phnum
	ph := h[ehsize:]
	le.PutUint32(ph[0:], 4)                     // PT_NOTE
	le.PutUint64(ph[8:], uint64(ehsize+phsize)) // offset
	le.PutUint64(ph[32:], uint64(len(note)))    // filesz
	le.PutUint64(ph[40:], uint64(len(note)))    // memsz
	le.PutUint64(ph[48:], 4)                    // align
	out := append(h, note...)
	// Something that looks like code: calls (E8) with small offsets mixed
	// with text, so BCJ filtering has branches to convert.
	var fill bytes.Buffer
	for i := 0; fill.Len() < filler; i++ {
		fill.WriteString("banger kernel test filler ")
		fill.Write([]byte{0xe8, byte(i), byte(i >> 8), 0, 0})
	}
	return append(out, fill.Bytes()[:filler]...)
}

// fakeBzImage wraps a compressed payload (which must already end with the
// 4-byte uncompressed size) in a minimal bzImage setup header.
func fakeBzImage(payload []byte) []byte {
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	const payloadOffset = 0x100
	binary.LittleEndian.PutUint32(img[0x248:], payloadOffset)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, make([]byte, payloadOffset)...)
	return append(img, payload...)
}

func withSize(compressed []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(compressed, uint32(size))
}
