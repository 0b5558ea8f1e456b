package oci

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"

	"github.com/banger-dev/banger/internal/system"
)

// benchLayers are three gzip layers of 666 files of 8 KiB (16 MiB in all),
// each half random (incompressible) and half text.
func benchLayers(b *testing.B) [][]ent {
	rng := rand.New(rand.NewPCG(1, 2))
	var layers [][]ent
	for l := range 3 {
		es := []ent{dir(fmt.Sprintf("l%d/", l), 0o755)}
		for i := range 2000 / 3 {
			buf := make([]byte, 8<<10)
			for j := 0; j < len(buf)/2; j++ {
				buf[j] = byte(rng.Uint32())
			}
			for j := len(buf) / 2; j < len(buf); j++ {
				buf[j] = "banger oci layer text "[j%22]
			}
			es = append(es, file(fmt.Sprintf("l%d/f%04d", l, i), string(buf), 0o644))
		}
		layers = append(layers, es)
	}
	return layers
}

// BenchmarkPull measures a pull from a real registry on loopback into a
// fresh cache (cold), again into the same cache (cache hit: manifest
// requests only), and unpacking the layers into an ext4 image.
//
//	go test -run '^$' -bench BenchmarkPull -benchtime 5x ./internal/oci/
func BenchmarkPull(b *testing.B) {
	needCmd(b, "docker-registry", "skopeo", "mkfs.ext4", "debugfs")
	reg := startRegistry(b, false)
	layers := benchLayers(b)
	img := testImage(b, "linux/amd64", []compression.Compression{compression.GZip, compression.GZip, compression.GZip}, layers...)
	reg.push(b, writeLayout(b, "v1", img), "v1", "bench/app:v1", "")
	ref := Source{Remote: reg.Host + "/bench/app:v1"}
	opts := FetchOptions{Insecure: true}
	warm := Cache{Dir: b.TempDir()}
	fetched, err := Fetch(context.Background(), ref, opts, warm, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			if _, err := Fetch(context.Background(), ref, opts, Cache{Dir: b.TempDir()}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache-hit", func(b *testing.B) {
		for b.Loop() {
			if _, err := Fetch(context.Background(), ref, opts, warm, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unpack-to-ext4", func(b *testing.B) {
		for b.Loop() {
			work := b.TempDir()
			tree, err := Flatten(context.Background(), fetched.Layers, filepath.Join(work, "rootfs"), os.Geteuid(), os.Getegid(), DefaultLimits(1<<30))
			if err != nil {
				b.Fatal(err)
			}
			if err := tree.WriteExt4(context.Background(), &system.ExecRunner{}, filepath.Join(work, "root.ext4"), tree.SizeFor(0)); err != nil {
				b.Fatal(err)
			}
			_ = tree.Close()
		}
	})
}
