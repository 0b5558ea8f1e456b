package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func opener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// TestCachePut: a blob is stored only when its length and digest match;
// a short (truncated), long or wrong blob leaves nothing behind.
func TestCachePut(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	blob := []byte("layer bytes")
	h := hashOf(blob)
	for _, tc := range []struct {
		name string
		data []byte
		size int64
		want string
	}{
		{"truncated", blob[:4], int64(len(blob)), "is truncated: it has 4 of its 11 bytes"},
		{"too long", append(bytes.Clone(blob), 'x'), int64(len(blob)), "longer than the 11 bytes"},
		{"wrong", []byte("layer bytez"), int64(len(blob)), "does not match its digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Put(context.Background(), h, tc.size, opener(tc.data), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if c.Has(h, -1) {
				t.Fatal("a bad blob was cached")
			}
			if ents, _ := os.ReadDir(filepath.Join(c.Dir, "tmp")); len(ents) != 0 {
				t.Fatalf("partial download left behind: %v", ents)
			}
		})
	}
	p, err := c.Put(context.Background(), h, int64(len(blob)), opener(blob), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, blob) {
		t.Fatalf("cached %q", got)
	}
	// A cached blob is not fetched again.
	if _, err := c.Put(context.Background(), h, int64(len(blob)), func() (io.ReadCloser, error) {
		t.Fatal("fetched a cached blob")
		return nil, nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(context.Background(), v1.Hash{Algorithm: "sha256", Hex: "../../etc"}, 1, opener(blob), nil); err == nil {
		t.Fatal("a digest naming a path was accepted")
	}
}

// TestCachePrune keeps the named blobs and removes the rest.
func TestCachePrune(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	a, b := []byte("a blob"), []byte("b blob")
	for _, x := range [][]byte{a, b} {
		if _, err := c.Put(context.Background(), hashOf(x), int64(len(x)), opener(x), nil); err != nil {
			t.Fatal(err)
		}
	}
	n, bytes, err := c.Prune(map[string]bool{hashOf(a).String(): true})
	if err != nil || n != 1 || bytes != int64(len(b)) {
		t.Fatalf("prune = %d, %d, %v; want 1 blob of %d bytes", n, bytes, err, len(b))
	}
	if !c.Has(hashOf(a), -1) || c.Has(hashOf(b), -1) {
		t.Fatal("prune removed the wrong blob")
	}
}
