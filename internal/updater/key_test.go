package updater

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

func TestEmbeddedKeyIsPlaceholderInTests(t *testing.T) {
	// go test links no -X stamp: the build must refuse to update.
	if !IsPlaceholderKey(EmbeddedPublicKey()) {
		t.Fatalf("embedded key = %q, want the placeholder in an unstamped build", EmbeddedPublicKey())
	}
	if _, err := ParsePublicKey(EmbeddedPublicKey()); !errors.Is(err, ErrPlaceholderKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestParsePublicKeyAndVerify(t *testing.T) {
	k := u.NewKey(t)
	data := []byte("abc  banger_0.2.0_linux_amd64.tar.gz\n")
	sig := k.Sign(t, data)
	for name, form := range map[string]string{"base64 DER": k.Public, "PEM": k.PublicPEM, "PEM with spaces": "\n" + k.PublicPEM + "\n"} {
		pub, err := ParsePublicKey(form)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := VerifySignature(pub, data, append(sig, '\n')); err != nil {
			t.Fatalf("%s: verify: %v", name, err)
		}
		if err := VerifySignature(pub, append(data, ' '), sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("%s: modified data verified: %v", name, err)
		}
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	derEd, _ := x509.MarshalPKIXPublicKey(edPub)
	for _, tc := range []struct{ name, key, want string }{
		{"empty", "", "built without the release signing key"},
		{"placeholder", PlaceholderPublicKey, "built without the release signing key"},
		{"garbage", "not-a-key!", "neither PEM nor base64"},
		{"P-384", base64.StdEncoding.EncodeToString(der384), "want an ECDSA P-256 key"},
		{"ed25519", base64.StdEncoding.EncodeToString(derEd), "want an ECDSA P-256 key"},
		{"private PEM", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})), `PEM block is "EC PRIVATE KEY"`},
	} {
		if _, err := ParsePublicKey(tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
		ok   bool
	}{
		{"v0.2.0", "v0.1.0", 1, true},
		{"0.1.0", "v0.1.0", 0, true},
		{"v0.10.0", "v0.9.9", 1, true},
		{"v1.0.0-rc.1", "v1.0.0", -1, true},
		{"v1.0.0-rc.2", "v1.0.0-rc.10", -1, true},
		{"v1.0.0-alpha", "v1.0.0-1", 1, true},
		{"v1.0.0-rc.1", "v1.0.0-rc.1.1", -1, true},
		{"v0.1.0-3-gabcdef0-dirty", "v0.1.0", -1, true},
		{"dev", "v0.1.0", 0, false},
		{"v0.1", "v0.1.0", 0, false},
	} {
		got, ok := compareVersions(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("compare(%s, %s) = %d, %v; want %d, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []string{"", "latest", "v1.2.3/../x", "v1.2.3+build", "v01.2.3", "v1.2.3-", "v1.2.3%2f"} {
		if _, ok := NormalizeVersion(bad); ok {
			t.Errorf("NormalizeVersion(%q) accepted", bad)
		}
	}
	if got := TarballName("v0.2.0", "arm64"); got != "banger_0.2.0_linux_arm64.tar.gz" {
		t.Errorf("TarballName = %q", got)
	}
}

func TestParseManifest(t *testing.T) {
	good := `{"schema": 1, "future_field": true,
	  "channels": {"stable": "v0.2.0", "bad": "../x"},
	  "releases": {"v0.2.0": {"published_at": "2026-05-01T12:00:00Z", "min_compatible_version": "0.1.0",
	                          "tarballs": {"amd64": "banger_0.2.0_linux_amd64.tar.gz"}}}}`
	m, err := ParseManifest([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	rel, err := m.Resolve("https://r.example/", "stable", "", "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if rel.Version != "v0.2.0" || rel.Channel != "stable" || rel.MinCompatibleVersion != "v0.1.0" || rel.URL != "https://r.example/v0.2.0" ||
		rel.FileURL("SHA256SUMS") != "https://r.example/v0.2.0/SHA256SUMS" || rel.PublishedAt.Year() != 2026 {
		t.Fatalf("release = %+v", rel)
	}
	if _, err := m.Resolve("https://r.example", "bad", "", "amd64"); err == nil || !strings.Contains(err.Error(), "not a release version") {
		t.Fatalf("a channel naming a path must be refused: %v", err)
	}
	for _, bad := range []struct{ in, want string }{
		{`{"schema": 2}`, "schema 2"},
		{`{`, "not valid JSON"},
		{`[]`, "not valid JSON"},
	} {
		if _, err := ParseManifest([]byte(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err = %v", bad.in, err)
		}
	}
}
