package privileged

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// resolver opens paths beneath a directory without following symlinks or
// crossing mounts. The result is an O_PATH descriptor: acting on it (fchownat
// with AT_EMPTY_PATH, chmod through /proc/self/fd) cannot be redirected by a
// rename racing the check, which a path string could.
type resolver struct {
	// noOpenat2 forces the component-by-component walk; tests use it to cover
	// the fallback for kernels before 5.6.
	noOpenat2 bool
}

// openBeneath resolves target, an absolute path that must lie strictly
// beneath root, and returns an O_PATH descriptor for it.
func (r resolver) openBeneath(root, target string) (*os.File, error) {
	rel, err := relBeneath(root, target)
	if err != nil {
		return nil, err
	}
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	defer func() { _ = unix.Close(rootFD) }()

	var fd int
	if r.noOpenat2 {
		fd, err = walkBeneath(rootFD, rel)
	} else {
		fd, err = openat2Beneath(rootFD, rel)
		if errors.Is(err, unix.ENOSYS) {
			fd, err = walkBeneath(rootFD, rel)
		}
	}
	if err != nil {
		return nil, resolveError(target, root, err)
	}
	return os.NewFile(uintptr(fd), target), nil
}

// relBeneath returns target relative to root, refusing anything that is not
// strictly beneath it lexically.
func relBeneath(root, target string) (string, error) {
	if err := validPathShape(target); err != nil {
		return "", err
	}
	root = filepath.Clean(root)
	rel, ok := strings.CutPrefix(target, root+"/")
	if root == "/" {
		rel, ok = strings.CutPrefix(target, "/")
	}
	if !ok || rel == "" {
		return "", invalid("path %q is not inside banger's directory %s", target, root)
	}
	return rel, nil
}

func openat2Beneath(rootFD int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
			unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	var err error
	// EAGAIN means a concurrent rename raced the lookup; the kernel asks us
	// to retry rather than risk a wrong answer.
	for range 8 {
		var fd int
		fd, err = unix.Openat2(rootFD, rel, &how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return -1, err
		}
	}
	return -1, err
}

// walkBeneath opens rel one component at a time with O_NOFOLLOW, refusing
// symlinks and mount crossings, for kernels without openat2.
func walkBeneath(rootFD int, rel string) (int, error) {
	var rootSt unix.Stat_t
	if err := unix.Fstat(rootFD, &rootSt); err != nil {
		return -1, err
	}
	cur, err := unix.Dup(rootFD)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		if c == "" || c == "." || c == ".." {
			_ = unix.Close(cur)
			return -1, unix.EXDEV
		}
		next, err := unix.Openat(cur, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		_ = unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
		var st unix.Stat_t
		if err := unix.Fstat(cur, &st); err != nil {
			_ = unix.Close(cur)
			return -1, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			_ = unix.Close(cur)
			return -1, unix.ELOOP
		}
		if st.Dev != rootSt.Dev {
			_ = unix.Close(cur)
			return -1, unix.EXDEV
		}
		if i < len(parts)-1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			_ = unix.Close(cur)
			return -1, unix.ENOTDIR
		}
	}
	return cur, nil
}

func resolveError(target, root string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return invalid("path %q goes through a symlink; banger's paths never do", target)
	case errors.Is(err, unix.EXDEV):
		return invalid("path %q leaves %s", target, root)
	case errors.Is(err, unix.ENOENT):
		return invalid("path %q does not exist", target)
	case errors.Is(err, unix.ENOTDIR):
		return invalid("path %q goes through something that is not a directory", target)
	}
	return fmt.Errorf("resolve %s: %w", target, err)
}
