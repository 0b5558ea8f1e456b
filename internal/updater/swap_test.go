package updater

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stagedFixture writes a staged release and an installed one under dir.
func stagedFixture(t *testing.T, dir string, targets InstallTargets) StagedRelease {
	t.Helper()
	s := StagedRelease{
		Dir:        filepath.Join(dir, "staged"),
		Banger:     filepath.Join(dir, "staged", BangerBinary),
		Bangerd:    filepath.Join(dir, "staged", BangerdBinary),
		VsockAgent: filepath.Join(dir, "staged", VsockAgentBinary),
	}
	for path, content := range map[string]string{
		s.Banger: "new banger", s.Bangerd: "new bangerd", s.VsockAgent: "new agent",
		targets.Banger: "old banger", targets.Bangerd: "old bangerd", targets.VsockAgent: "old agent",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func content(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSwapThenRollback(t *testing.T) {
	root := t.TempDir()
	tg := DefaultInstallTargets(root)
	s := stagedFixture(t, root, tg)

	res, err := Swap(s, tg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replaced) != 3 {
		t.Fatalf("swapped %d", len(res.Replaced))
	}
	// The order is part of the contract: agent, daemon, CLI.
	for i, want := range []string{tg.VsockAgent, tg.Bangerd, tg.Banger} {
		if res.Replaced[i].Target != want || res.Replaced[i].Backup != want+".previous" {
			t.Fatalf("replacement %d = %+v, want %s", i, res.Replaced[i], want)
		}
	}
	for path, want := range map[string]string{tg.Banger: "new banger", tg.Bangerd: "new bangerd", tg.VsockAgent: "new agent",
		tg.Banger + ".previous": "old banger", tg.Bangerd + ".previous": "old bangerd", tg.VsockAgent + ".previous": "old agent"} {
		if got := content(t, path); got != want {
			t.Fatalf("%s = %q, want %q", path, got, want)
		}
	}

	if err := Rollback(res); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{tg.Banger: "old banger", tg.Bangerd: "old bangerd", tg.VsockAgent: "old agent"} {
		if got := content(t, path); got != want {
			t.Fatalf("after rollback %s = %q, want %q", path, got, want)
		}
		if _, err := os.Lstat(path + ".previous"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s.previous left after rollback", path)
		}
	}
}

func TestSwapThenCleanup(t *testing.T) {
	root := t.TempDir()
	tg := DefaultInstallTargets(root)
	res, err := Swap(stagedFixture(t, root, tg), tg)
	if err != nil {
		t.Fatal(err)
	}
	if err := CleanupBackups(res); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tg.Banger, tg.Bangerd, tg.VsockAgent} {
		if _, err := os.Lstat(p + ".previous"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s.previous survived cleanup", p)
		}
		if !strings.HasPrefix(content(t, p), "new") {
			t.Fatalf("%s lost its new content", p)
		}
	}
}

func TestSwapPartialFailureRollsBackTwo(t *testing.T) {
	root := t.TempDir()
	tg := DefaultInstallTargets(root)
	s := stagedFixture(t, root, tg)
	// The third target (banger) sits under a parent that is a regular
	// file, so its replace fails after agent and bangerd were swapped.
	blocker := filepath.Join(root, "blocked")
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	tg.Banger = filepath.Join(blocker, "banger")

	res, err := Swap(s, tg)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 replaced") || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
	if len(res.Replaced) != 2 {
		t.Fatalf("replaced %d targets, want 2", len(res.Replaced))
	}
	if got := content(t, tg.Bangerd); got != "new bangerd" {
		t.Fatalf("bangerd = %q before rollback", got)
	}
	if err := Rollback(res); err != nil {
		t.Fatal(err)
	}
	if content(t, tg.VsockAgent) != "old agent" || content(t, tg.Bangerd) != "old bangerd" {
		t.Fatal("rollback did not restore the two swapped targets")
	}
	if content(t, blocker) != "not a directory" {
		t.Fatal("the blocking file was touched")
	}
}

func TestSwapFreshTargetRollbackRemovesIt(t *testing.T) {
	root := t.TempDir()
	tg := DefaultInstallTargets(root)
	s := stagedFixture(t, root, tg)
	if err := os.RemoveAll(filepath.Dir(tg.VsockAgent)); err != nil {
		t.Fatal(err)
	}
	res, err := Swap(s, tg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced[0].HadPrevious() {
		t.Fatalf("agent had no previous file: %+v", res.Replaced[0])
	}
	if err := Rollback(res); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tg.VsockAgent); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a target that did not exist before must be removed by rollback")
	}
}

func TestRollbackReportsWhatToFix(t *testing.T) {
	root := t.TempDir()
	tg := DefaultInstallTargets(root)
	res, err := Swap(stagedFixture(t, root, tg), tg)
	if err != nil {
		t.Fatal(err)
	}
	// Someone removed bangerd's backup: rollback must still restore the
	// other two and say precisely what it could not do.
	if err := os.Remove(tg.Bangerd + ".previous"); err != nil {
		t.Fatal(err)
	}
	err = Rollback(res)
	if err == nil {
		t.Fatal("rollback reported success with a backup missing")
	}
	want := "fix by hand: mv " + tg.Bangerd + ".previous " + tg.Bangerd
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
	if content(t, tg.Banger) != "old banger" || content(t, tg.VsockAgent) != "old agent" {
		t.Fatal("rollback stopped at the first failure")
	}
}
