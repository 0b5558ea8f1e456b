package system

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAtomicReplaceKeepsBackupAndRestores(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "bin", "bangerd")
	src := filepath.Join(dir, "staged")
	writeFile(t, target, "old", 0o755)
	writeFile(t, src, "new", 0o600)

	// A process holding the old file open (a running daemon) must keep
	// reading the old content: the replace is a rename, not a rewrite.
	held, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	r, err := AtomicReplace(target, src, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, target); got != "new" {
		t.Fatalf("target = %q, want new", got)
	}
	if st, _ := os.Stat(target); st.Mode().Perm() != 0o755 {
		t.Fatalf("target mode = %v, want 0755 regardless of the source's 0600", st.Mode().Perm())
	}
	if !r.HadPrevious() || r.Backup != target+".previous" {
		t.Fatalf("replacement = %+v, want a .previous backup", r)
	}
	if got := readFile(t, r.Backup); got != "old" {
		t.Fatalf("backup = %q, want old", got)
	}
	buf := make([]byte, 8)
	n, _ := held.Read(buf)
	if string(buf[:n]) != "old" {
		t.Fatalf("open handle reads %q, want old", buf[:n])
	}
	assertNoTemps(t, filepath.Dir(target))

	if err := RestoreBackup(r); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, target); got != "old" {
		t.Fatalf("after restore target = %q, want old", got)
	}
	if _, err := os.Lstat(r.Backup); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup still present after restore: %v", err)
	}
}

func TestAtomicReplaceFreshTargetAndRemoveBackup(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "lib", "banger", "banger-vsock-agent")
	src := filepath.Join(dir, "staged")
	writeFile(t, src, "agent", 0o644)

	r, err := AtomicReplace(target, src, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if r.HadPrevious() {
		t.Fatalf("fresh target reported a backup: %+v", r)
	}
	if err := RemoveBackup(r); err != nil {
		t.Fatal(err)
	}
	if err := RestoreBackup(r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restoring a fresh target must remove it, got %v", err)
	}
}

func TestAtomicReplaceOverwritesStaleBackup(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "banger")
	src := filepath.Join(dir, "staged")
	writeFile(t, target, "current", 0o755)
	writeFile(t, target+".previous", "ancient", 0o755)
	writeFile(t, src, "new", 0o755)
	r, err := AtomicReplace(target, src, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r.Backup); got != "current" {
		t.Fatalf("backup = %q, want the file just replaced", got)
	}
	if err := RemoveBackup(r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(r.Backup); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backup not removed: %v", err)
	}
}

func TestAtomicReplaceRefusals(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "staged")
	writeFile(t, src, "new", 0o755)

	link := filepath.Join(dir, "link")
	writeFile(t, filepath.Join(dir, "real"), "real", 0o755)
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(dir, "blocker")
	writeFile(t, blocker, "i am a file", 0o644)

	for _, tc := range []struct {
		name, target, src, want string
	}{
		{"symlink target", link, src, "symlink"},
		{"directory target", filepath.Join(dir), src, "directory"},
		{"parent is a file", filepath.Join(blocker, "banger"), src, "not a directory"},
		{"missing source", filepath.Join(dir, "t"), filepath.Join(dir, "nope"), "open new content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := AtomicReplace(tc.target, tc.src, 0o755)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	if got := readFile(t, filepath.Join(dir, "real")); got != "real" {
		t.Fatalf("symlink's target was changed to %q", got)
	}
	assertNoTemps(t, dir)
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "banger", "install.toml")
	if err := WriteFileAtomic(path, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "b" {
		t.Fatalf("content = %q", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v", st.Mode().Perm())
	}
	assertNoTemps(t, filepath.Dir(path))
}

func TestTryLock(t *testing.T) {
	dir := t.TempDir()
	l, err := TryLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryLock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: err = %v, want ErrLocked", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := TryLock(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestExecRunner(t *testing.T) {
	ctx := context.Background()
	out, err := ExecRunner{}.Run(ctx, Command{Path: "sh", Args: []string{"-c", `echo "$BANGER_X"; echo oops >&2; exit 2`}, Env: []string{"BANGER_X=hello"}})
	if err != nil {
		t.Fatal(err)
	}
	if out.ExitCode != 2 || strings.TrimSpace(string(out.Stdout)) != "hello" || strings.TrimSpace(string(out.Stderr)) != "oops" {
		t.Fatalf("output = %+v (stdout %q stderr %q)", out, out.Stdout, out.Stderr)
	}
	if _, err := (ExecRunner{}).Run(ctx, Command{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("running a missing program must be an error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := (ExecRunner{}).Run(cctx, Command{Path: "sleep", Args: []string{"5"}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: err = %v, want context.Canceled", err)
	}
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".new-") || strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
}
