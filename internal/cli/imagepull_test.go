package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// TestImagePullCommands: pull and the container forms of import put the
// right request on the wire (absolute paths, the tag kept, --size parsed,
// the invoking user's Docker credential for that registry), and bad flag
// mixes are refused before the daemon is asked.
func TestImagePullCommands(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	dockerCfg := `{"auths":{"reg.example:5000":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) + `"}}}`
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(dockerCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recorder{reqs: map[string][]string{}}
	app, stdout, stderr := fakeDaemon(t, func(srv *api.Server) {
		recorded[api.ImagePullRequest](srv, r, api.MethodImagePull, api.Image{Name: "x", Origin: &api.ImageOrigin{Digest: "sha256:ab"}})
		recorded[struct{}](srv, r, api.MethodImagePrune, api.ImagePruneResult{Blobs: 2, Bytes: 3 << 20})
	})
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) int { return Run(context.Background(), app, args) }

	if code := run("image", "pull", "reg.example:5000/team/app:1", "--size", "+1G", "--platform", "linux/arm64"); code != 0 {
		t.Fatalf("pull: exit %d: %s", code, stderr)
	}
	if code := run("image", "pull", "other.example/app:1"); code != 0 {
		t.Fatalf("pull: exit %d: %s", code, stderr)
	}
	if code := run("image", "import", "app", "--oci-layout", "rel/layout:v1", "--boot-from", "base"); code != 0 {
		t.Fatalf("import --oci-layout: exit %d: %s", code, stderr)
	}
	sent := r.sent(api.MethodImagePull)
	if len(sent) != 3 {
		t.Fatalf("sent %q", sent)
	}
	var first, second, imp api.ImagePullRequest
	for i, v := range []*api.ImagePullRequest{&first, &second, &imp} {
		if err := json.Unmarshal([]byte(sent[i]), v); err != nil {
			t.Fatal(err)
		}
	}
	if first.SizeBytes != 1<<30 || first.Platform != "linux/arm64" || first.Auth == nil || first.Auth.Username != "alice" || first.Auth.Password != "s3cret" {
		t.Errorf("first pull sent %s: want 1G, linux/arm64 and alice's credential", sent[0])
	}
	if second.Auth != nil {
		t.Errorf("a registry without a login got a credential: %s", sent[1])
	}
	if imp.OCILayout != filepath.Join(wd, "rel/layout")+":v1" || imp.Name != "app" || imp.BootFrom != "base" {
		t.Errorf("import sent %s", sent[2])
	}
	if !strings.Contains(stdout.String(), "sha256:ab") {
		t.Errorf("stdout %q lacks the digest", stdout)
	}

	for _, args := range [][]string{
		{"image", "import", "app", "--oci-layout", "d", "--rootfs", "r.ext4"},
		{"image", "import", "app"},
		{"image", "import", "app", "--oci-layout", "d", "--docker-archive", "a.tar"},
	} {
		if code := run(args...); code == 0 {
			t.Errorf("%q was accepted", args)
		}
	}
	if len(r.sent(api.MethodImagePull)) != 3 {
		t.Error("a refused command reached the daemon")
	}
	stdout.Reset()
	if code := run("image", "prune"); code != 0 || !strings.Contains(stdout.String(), "removed 2 blobs") {
		t.Errorf("prune: exit %d, %q", code, stdout)
	}
}
