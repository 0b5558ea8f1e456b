package updater

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

const publishScript = "../../scripts/publish-banger-release.sh"

func runScript(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{publishScript}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPublishScriptRefusesPlaceholderKey needs neither cosign nor a
// build: the key is checked before anything else.
func TestPublishScriptRefusesPlaceholderKey(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	placeholder := filepath.Join(dir, "placeholder.pub")
	if err := os.WriteFile(placeholder, []byte(PlaceholderPublicKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	wrongCurve := filepath.Join(dir, "p384.pub")
	if err := os.WriteFile(wrongCurve, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	k := u.NewKey(t)
	good := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(good, []byte(k.PublicPEM), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no key", []string{"BANGER_RELEASE_PUBKEY="}, []string{"--dry-run", "v0.2.0"}, "BANGER_RELEASE_PUBKEY is not set: refusing"},
		{"placeholder key", []string{"BANGER_RELEASE_PUBKEY=" + placeholder}, []string{"--dry-run", "v0.2.0"}, "holds the placeholder key"},
		{"missing key file", []string{"BANGER_RELEASE_PUBKEY=" + filepath.Join(dir, "nope")}, []string{"--dry-run", "v0.2.0"}, "not a readable file"},
		{"wrong curve", []string{"BANGER_RELEASE_PUBKEY=" + wrongCurve}, []string{"--dry-run", "v0.2.0"}, "not an ECDSA P-256 key"},
		{"no signing key", []string{"BANGER_RELEASE_PUBKEY=" + good, "BANGER_RELEASE_KEY="}, []string{"--dry-run", "v0.2.0"}, "BANGER_RELEASE_KEY is not set"},
		{"bad version", []string{"BANGER_RELEASE_PUBKEY=" + good}, []string{"--dry-run", "v1.2"}, "not a release version"},
		{"no version", nil, []string{"--dry-run"}, "missing VERSION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.name, "curve") || strings.Contains(tc.name, "signing") {
				if _, err := exec.LookPath("openssl"); err != nil {
					t.Skip("openssl is not installed")
				}
			}
			out, err := runScript(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("err = %v, output:\n%s\nwant %q", err, out, tc.want)
			}
		})
	}
}

// pinnedCosign returns the cosign binary the script would accept, or skips.
func pinnedCosign(t *testing.T) string {
	t.Helper()
	script, err := os.ReadFile(publishScript)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^COSIGN_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("the script pins no COSIGN_VERSION")
	}
	pinned := string(m[1])
	bin := os.Getenv("COSIGN")
	if bin == "" {
		bin = "cosign"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("cosign is not installed (go install github.com/sigstore/cosign/v2/cmd/cosign@%s, or set COSIGN); the Go signer in the other tests covers verification", pinned)
	}
	out, _ := exec.Command(path, "version").CombinedOutput()
	if !regexp.MustCompile(`GitVersion:\s+` + regexp.QuoteMeta(pinned) + `\b`).Match(out) {
		t.Skipf("%s is not cosign %s, the version the script is pinned to", path, pinned)
	}
	for _, tool := range []string{"jq", "openssl", "go", "tar", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	return path
}

// execExceptSystemctl runs real binaries and pretends systemd restarted
// the units: there is no systemd here, and the test must not touch the
// host's services anyway.
type execExceptSystemctl struct{ system.ExecRunner }

func (r execExceptSystemctl) Run(ctx context.Context, c system.Command) (system.Output, error) {
	if c.Path == "systemctl" {
		return system.Output{}, nil
	}
	return r.ExecRunner.Run(ctx, c)
}

// TestPublishDryRunThenUpdate is the whole pipeline for real: the script
// builds and signs a release with cosign and a throwaway key, and the
// updater installs it from a local HTTPS server over an install of the
// same binaries, running the real staged bangerd and the real doctor.
func TestPublishDryRunThenUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries; skipped with -short")
	}
	cosign := pinnedCosign(t)
	keys := t.TempDir()
	gen := exec.Command(cosign, "generate-key-pair")
	gen.Dir = keys
	gen.Env = append(os.Environ(), "COSIGN_PASSWORD=test-password")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "release")
	start := time.Now()
	log, err := runScript(t, []string{
		"COSIGN=" + cosign, "COSIGN_PASSWORD=test-password",
		"BANGER_RELEASE_PUBKEY=" + filepath.Join(keys, "cosign.pub"),
		"BANGER_RELEASE_KEY=" + filepath.Join(keys, "cosign.key"),
		"BANGER_RELEASE_RCLONE_REMOTE=", "BANGER_RELEASE_BUCKET=",
	}, "--dry-run", "--allow-dirty", "--out", out, "--arch", "amd64", "v0.2.0")
	if err != nil {
		t.Fatalf("script: %v\n%s", err, log)
	}
	t.Logf("script took %s", time.Since(start).Round(time.Second))
	if !strings.Contains(log, "nothing uploaded") {
		t.Fatalf("output:\n%s", log)
	}
	sig, _ := os.ReadFile(filepath.Join(out, "v0.2.0", "SHA256SUMS.sig"))
	sums, _ := os.ReadFile(filepath.Join(out, "v0.2.0", "SHA256SUMS"))
	pemKey, _ := os.ReadFile(filepath.Join(keys, "cosign.pub"))
	pub, err := ParsePublicKey(string(pemKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(pub, sums, sig); err != nil {
		t.Fatalf("cosign's signature does not verify in Go: %v", err)
	}

	// The old install: the same real binaries plus a trailer (ELF ignores
	// it), so a replaced file is told apart from the original.
	root := t.TempDir()
	tarball := filepath.Join(out, "v0.2.0", TarballName("v0.2.0", "amd64"))
	staged, err := StageTarball(tarball, filepath.Join(t.TempDir(), "old"))
	if err != nil {
		t.Fatal(err)
	}
	tg := DefaultInstallTargets(root)
	for src, dst := range map[string]string{staged.Banger: tg.Banger, staged.Bangerd: tg.Bangerd, staged.VsockAgent: tg.VsockAgent} {
		data, _ := os.ReadFile(src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, append(data, []byte("\nOLD INSTALL\n")...), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	meta := installmeta.Meta{Version: "v0.1.0", Commit: "old", BuiltAt: "2026-01-01T00:00:00Z", OwnerUser: "dev", OwnerUID: 1000, OwnerGID: 1000, InstalledAt: time.Now().UTC()}
	if err := installmeta.Write(paths.System(root).InstallMetaPath(), meta); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewTLSServer(http.FileServer(http.Dir(out)))
	defer srv.Close()
	var progress strings.Builder
	opts := Options{
		BaseURL: srv.URL, PublicKey: string(pemKey), Arch: "amd64", Root: root,
		Fetcher:  download.New(download.Options{Client: srv.Client()}),
		Runner:   execExceptSystemctl{},
		Units:    []string{"banger-root-helper.service", "bangerd.service"},
		Running:  buildinfo.Info{Version: "v0.1.0"},
		Progress: &progress,
		Sleep:    func(context.Context, time.Duration) error { return nil },
	}
	plan, err := Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Apply(context.Background(), opts, plan)
	if err != nil {
		t.Fatalf("update: %v\nprogress:\n%s", err, progress.String())
	}
	if res.To.Version != "v0.2.0" || !strings.HasPrefix(res.SchemaCheck, "migrations needed") {
		t.Fatalf("result = %+v", res)
	}
	for src, dst := range map[string]string{staged.Banger: tg.Banger, staged.Bangerd: tg.Bangerd, staged.VsockAgent: tg.VsockAgent} {
		want, _ := os.ReadFile(src)
		got, _ := os.ReadFile(dst)
		if string(got) != string(want) {
			t.Errorf("%s was not replaced by the release's binary", dst)
		}
	}
	m, err := installmeta.Read(paths.System(root).InstallMetaPath())
	if err != nil || m.Version != "v0.2.0" || m.OwnerUser != "dev" {
		t.Fatalf("install.toml = %+v, %v", m, err)
	}
	t.Logf("progress:\n%s", progress.String())
}
