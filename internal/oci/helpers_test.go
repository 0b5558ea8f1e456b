package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// needCmd skips tests whose external tool is missing.
func needCmd(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s on PATH (%v)", n, err)
		}
	}
}

// ent is one tar entry of a test layer; body is a regular file's content.
type ent struct {
	tar.Header
	body string
}

func dir(name string, mode int64) ent {
	return ent{Header: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}
func file(name, body string, mode int64) ent {
	return ent{Header: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body))}, body: body}
}
func symlink(name, target string) ent {
	return ent{Header: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}
func hardlink(name, target string) ent {
	return ent{Header: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// tarBytes writes entries as a PAX tar.
func tarBytes(t testing.TB, entries []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compress encodes a tar as mt.
func compress(t testing.TB, raw []byte, mt types.MediaType) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch mt {
	case types.OCILayer, types.DockerLayer:
		w := gzip.NewWriter(&buf)
		_, _ = w.Write(raw)
		_ = w.Close()
	case types.OCILayerZStd:
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(raw)
		_ = w.Close()
	default:
		return raw
	}
	return buf.Bytes()
}

// layerFile writes a layer blob into dir and describes it.
func layerFile(t testing.TB, dir string, blob []byte, mt types.MediaType) Layer {
	t.Helper()
	sum := sha256.Sum256(blob)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	p := filepath.Join(dir, h.Hex)
	if err := os.WriteFile(p, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	return Layer{Digest: h, MediaType: mt, Path: p, Size: int64(len(blob))}
}

func layerOf(t testing.TB, dir string, mt types.MediaType, entries ...ent) Layer {
	return layerFile(t, dir, compress(t, tarBytes(t, entries), mt), mt)
}

// debugfs runs one request against an ext4 image.
func debugfs(t testing.TB, img, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %q: %v\n%s", request, err, out)
	}
	return string(out)
}

// statField returns "Mode:  04755"-style fields of debugfs stat output.
func statOf(t testing.TB, img, path string) string {
	t.Helper()
	s := debugfs(t, img, `stat "`+path+`"`)
	if strings.Contains(s, "File not found") {
		return ""
	}
	return s
}
