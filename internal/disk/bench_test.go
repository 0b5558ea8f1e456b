package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchImage makes a sparse image of size bytes holding the same 256 MiB
// of data whatever its size (64 chunks of 4 MiB spread evenly), like a built
// rootfs whose file system is made larger than its content.
func benchImage(b *testing.B, dir string, size int64) string {
	b.Helper()
	p := filepath.Join(dir, fmt.Sprintf("image-%dG.img", size>>30))
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 4<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	const chunks = 64
	for i := int64(0); i < chunks; i++ {
		if _, err := f.WriteAt(chunk, i*(size/chunks)); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkClone measures making one VM disk from a 1 GiB and an 8 GiB
// sparse image with each method this host offers: reflink (on a
// loop-mounted XFS when the temp dir cannot) and sparse copy. The fast
// path must not grow with image size. (dm-snapshot disks are made by the
// privileged side, see privileged.SystemBackend.createSnapshot.)
//
//	go test -run '^$' -bench BenchmarkClone -benchtime 5x ./internal/disk
func BenchmarkClone(b *testing.B) {
	sizes := []int64{1 << 30, 8 << 30}
	b.Run("method=sparse-copy", func(b *testing.B) {
		dir := b.TempDir()
		if ProbeReflink(dir) == nil {
			b.Skip("the temp dir reflinks, so Clone would not take the sparse-copy path")
		}
		for _, size := range sizes {
			img := benchImage(b, dir, size)
			b.Run(fmt.Sprintf("image=%dGiB", size>>30), func(b *testing.B) { benchClone(b, img, dir, SparseCopy) })
		}
	})
	b.Run("method=reflink", func(b *testing.B) {
		dir := reflinkDir(b, 20<<30)
		for _, size := range sizes {
			img := benchImage(b, dir, size)
			b.Run(fmt.Sprintf("image=%dGiB", size>>30), func(b *testing.B) { benchClone(b, img, dir, Reflink) })
		}
	})
}

func benchClone(b *testing.B, img, dir string, want Method) {
	for i := 0; b.Loop(); i++ {
		dst := filepath.Join(dir, fmt.Sprintf("vm-%d.img", i))
		m, err := Clone(img, dst, 0)
		if err != nil {
			b.Fatal(err)
		}
		if m != want {
			b.Fatalf("cloned by %s, want %s", m, want)
		}
		b.StopTimer()
		if err := os.Remove(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
