// Package ocireg runs a real OCI registry for tests: Debian's
// docker-registry (distribution 2.8) on 127.0.0.1, with its own config and
// storage in a temporary directory, optionally behind htpasswd auth. Tests
// push to it with skopeo and pull from it with banger, so image pulls are
// proven against a registry banger did not write.
package ocireg

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
)

// Registry is one running registry.
type Registry struct {
	Host    string // 127.0.0.1:PORT
	Storage string // its filesystem storage root (tests corrupt blobs there)
}

// The credentials of a registry started with auth.
const (
	User     = "user"
	Password = "pass"
)

// Start runs docker-registry on a free loopback port and waits until it
// answers; with withAuth, clients must log in as User/Password. It skips tb
// when docker-registry is not installed, and kills the process (by PID) at
// cleanup.
func Start(tb testing.TB, withAuth bool) Registry {
	tb.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		tb.Skipf("needs docker-registry (apt-get install docker-registry): %v", err)
	}
	dir := tb.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	host := l.Addr().String()
	_ = l.Close()
	storage := filepath.Join(dir, "data")
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", storage, host)
	if withAuth {
		hash, err := bcrypt.GenerateFromPassword([]byte(Password), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(User+":"+string(hash)+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: banger-test\n    path: %s\n", htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command("docker-registry", "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			return Registry{Host: host, Storage: storage}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("docker-registry did not come up on %s: %v\n%s", host, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WriteLayout writes, in a new temporary directory, an OCI layout holding
// one linux/amd64 image (tag tag) of layer l with process config c, and
// returns the directory.
func WriteLayout(t testing.TB, l v1.Layer, tag string, c v1.Config) string {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = c
	img, err = mutate.ConfigFile(mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON), cf)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci-layout")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}
