package system

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// BackupSuffix is appended to a replaced file's name to form its backup.
const BackupSuffix = ".previous"

// Replacement records one AtomicReplace, so the caller can undo it
// (RestoreBackup) or make it permanent (RemoveBackup).
type Replacement struct {
	// Target is the path that now holds the new content.
	Target string `json:"target"`
	// Backup is Target+BackupSuffix: a hard link to the file Target held
	// before. It is empty when Target did not exist before the replace.
	Backup string `json:"backup,omitempty"`
}

// HadPrevious reports whether a file stood at Target before the replace.
func (r Replacement) HadPrevious() bool { return r.Backup != "" }

// AtomicReplace puts the content of src at target with mode, such that every
// reader sees either the old file or the complete new one, and the old one
// survives as target+".previous" until RemoveBackup.
//
// The steps: copy src to a temporary file in target's directory (so the final
// rename never crosses file systems) and fsync it; hard-link the current
// target to the backup name (no copy, and the running binary's inode is
// untouched); rename the temporary file over target; fsync the directory so
// the rename survives a crash. Any failure undoes the steps already taken,
// so an error leaves target and its directory as they were (a stale backup
// from an earlier, never-cleaned replace is the one thing overwritten).
func AtomicReplace(target, src string, mode fs.FileMode) (Replacement, error) {
	r := Replacement{Target: target}
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, fmt.Errorf("replace %s: create its directory: %w", target, err)
	}
	st, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A fresh target: nothing to back up.
	case err != nil:
		return r, fmt.Errorf("replace %s: %w", target, err)
	case !st.Mode().IsRegular():
		// Replacing a symlink or device would silently change what the name
		// means; a person should look at it first.
		return r, fmt.Errorf("replace %s: it is a %s, not a regular file; move it aside and retry", target, describeMode(st.Mode()))
	}

	tmp, err := copyToTemp(dir, filepath.Base(target), src, mode)
	if err != nil {
		return r, fmt.Errorf("replace %s: %w", target, err)
	}
	cleanupTmp := true
	defer func() {
		if cleanupTmp {
			_ = os.Remove(tmp)
		}
	}()

	if st != nil {
		backup := target + BackupSuffix
		if err := os.Remove(backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return r, fmt.Errorf("replace %s: remove stale backup %s: %w", target, backup, err)
		}
		if err := os.Link(target, backup); err != nil {
			return r, fmt.Errorf("replace %s: keep backup %s: %w", target, backup, err)
		}
		r.Backup = backup
	}
	if err := os.Rename(tmp, target); err != nil {
		if r.Backup != "" {
			_ = os.Remove(r.Backup)
		}
		return Replacement{Target: target}, fmt.Errorf("replace %s: %w", target, err)
	}
	cleanupTmp = false
	if err := SyncDir(dir); err != nil {
		// Keep the promise that an error means "nothing changed": a rename
		// that may not survive a crash is undone rather than reported as done.
		if rerr := RestoreBackup(r); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return Replacement{Target: target}, fmt.Errorf("replace %s: %w", target, err)
	}
	return r, nil
}

// RestoreBackup undoes r: the backup goes back to Target (one atomic
// rename), or, when there was no previous file, Target is removed.
func RestoreBackup(r Replacement) error {
	if !r.HadPrevious() {
		if err := os.Remove(r.Target); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s (it did not exist before the update): %w", r.Target, err)
		}
		return SyncDir(filepath.Dir(r.Target))
	}
	if err := os.Rename(r.Backup, r.Target); err != nil {
		return fmt.Errorf("restore %s from %s (fix by hand: mv %s %s): %w", r.Target, r.Backup, r.Backup, r.Target, err)
	}
	return SyncDir(filepath.Dir(r.Target))
}

// RemoveBackup deletes r's backup, making the replace permanent.
func RemoveBackup(r Replacement) error {
	if !r.HadPrevious() {
		return nil
	}
	if err := os.Remove(r.Backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove backup %s: %w", r.Backup, err)
	}
	return nil
}

// copyToTemp copies src into a new hidden file in dir, sets mode exactly
// (umask does not apply to chmod) and fsyncs it.
func copyToTemp(dir, base, src string, mode fs.FileMode) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open new content: %w", err)
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, "."+base+".new-*")
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	name := out.Name()
	fail := func(step string, err error) (string, error) {
		out.Close()
		_ = os.Remove(name)
		return "", fmt.Errorf("%s %s: %w", step, name, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		return fail("write", err)
	}
	if err := out.Chmod(mode); err != nil {
		return fail("chmod", err)
	}
	if err := out.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := out.Close(); err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("close %s: %w", name, err)
	}
	return name, nil
}

// WriteFileAtomic writes data to path with perm so that readers see either
// the old content or all of the new: temporary file in the same directory,
// fsync, rename, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: create its directory: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames and links in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}
