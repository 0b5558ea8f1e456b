package privileged

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// What the root helper runs or works in as root must be root's alone: these
// checks walk a path to / so that no component can be swapped by the owner.

// TrustedBinary checks that a binary the helper runs as root is a regular,
// executable file that only root (or the helper's own uid, in tests) can
// change, along its path and along the path it resolves to.
func TrustedBinary(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s is not an absolute path", path)
	}
	if err := trustedChain(path); err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", path, err)
	}
	if err := trustedChain(real); err != nil {
		return err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable regular file", real)
	}
	return nil
}

// trustedChain checks path and every directory above it: owned by root or
// the helper's uid, and writable by no one else (a sticky directory, like
// /tmp, is fine: others cannot replace what they do not own there).
func trustedChain(path string) error {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := trustedOwner(p, fi); err != nil {
			return err
		}
		if p == "/" {
			return nil
		}
	}
}

func trustedOwner(p string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no ownership information", p)
	}
	if int(st.Uid) != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d: everything the root helper runs or works in must be root's", p, st.Uid)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil // a root-owned symlink cannot be changed by others
	}
	stickyDir := fi.IsDir() && fi.Mode()&os.ModeSticky != 0
	if fi.Mode().Perm()&0o022 != 0 && !stickyDir {
		return fmt.Errorf("%s is writable by group or others (%v): everything the root helper runs or works in must be writable by root only", p, fi.Mode().Perm())
	}
	return nil
}

// trustedDir makes dir (0755, root's) if missing, then checks it is a real
// directory the owner cannot change.
func trustedDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return trustedOwner(dir, fi)
}
