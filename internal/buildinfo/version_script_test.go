package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionScriptStampsOnlyCleanTagsAsReleases runs scripts/version.sh (what
// `make build` stamps) in throwaway repositories: an untagged commit used to be
// stamped with its hash, so a developer's CLI next to a tagged install warned
// "version differs" although both were meant to be quiet about dev builds.
func TestVersionScriptStampsOnlyCleanTagsAsReleases(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: cannot build the throwaway repositories")
	}
	script, err := filepath.Abs("../../scripts/version.sh")
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid", "GIT_CONFIG_NOSYSTEM=1", "HOME="+repo)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command("sh", script, repo).Output()
		if err != nil {
			t.Fatalf("version.sh: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if got := version(); got != DevVersion {
		t.Errorf("outside a repository with commits: got %q, want %q", got, DevVersion)
	}
	git("init", "-q")
	write("1")
	git("add", "f")
	git("commit", "-q", "-m", "one")
	if got := version(); got != DevVersion {
		t.Errorf("untagged commit: got %q, want %q", got, DevVersion)
	}
	git("tag", "v0.3.0")
	if got := version(); got != "v0.3.0" {
		t.Errorf("clean tagged commit: got %q, want v0.3.0", got)
	}
	write("2")
	if got := version(); got != DevVersion {
		t.Errorf("tagged commit with uncommitted changes: got %q, want %q", got, DevVersion)
	}
	git("commit", "-q", "-am", "two")
	if got := version(); got != DevVersion {
		t.Errorf("commit after a tag: got %q, want %q", got, DevVersion)
	}
	if !(Info{Version: version(), Commit: "0123456789abcdef"}).IsDev() {
		t.Error("a build stamped by version.sh after a tag must count as a dev build for drift checks")
	}
}
