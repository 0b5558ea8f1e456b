package mcp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// hostRoot is the one host directory copy_in and copy_out reach: paths an
// agent gives are taken relative to it, and one that leads out of it, by
// ".." or through a symlink, is refused.
type hostRoot struct {
	// dir is absolute with its symlinks resolved.
	dir string
}

func newHostRoot(dir string) (hostRoot, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return hostRoot{}, fmt.Errorf("mcp: no --root given and the working directory is unknown: %w", err)
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return hostRoot{}, fmt.Errorf("mcp: root %q: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return hostRoot{}, fmt.Errorf("mcp: root %q: %w", dir, err)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return hostRoot{}, fmt.Errorf("mcp: root %q is not a directory", dir)
	}
	return hostRoot{dir: real}, nil
}

// contains reports whether p (absolute, clean) is the root or under it.
func (r hostRoot) contains(p string) bool {
	rel, err := filepath.Rel(r.dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// join is the absolute, clean host path p names (relative to the root, or
// absolute), refused if it is outside the root before symlinks.
func (r hostRoot) join(p string) (string, error) {
	if p == "" {
		return "", invalid("no host path given; give one relative to %s", r.dir)
	}
	full := p
	if !filepath.IsAbs(p) {
		full = filepath.Join(r.dir, p)
	}
	full = filepath.Clean(full)
	if !r.contains(full) {
		return "", r.outside(p)
	}
	return full, nil
}

func (r hostRoot) outside(p string) error {
	return invalid("host path %q is outside %s, the only host directory this MCP server reaches", p, r.dir).
		WithHint("give a path inside it, or start `banger mcp --root DIR` with another directory")
}

// existing resolves p, which must exist, through its symlinks and refuses
// it unless it ends inside the root.
func (r hostRoot) existing(p string) (string, error) {
	full, err := r.join(p)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(full)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", invalid("host path %q does not exist", p)
		}
		return "", fmt.Errorf("host path %q: %w", p, err)
	}
	if !r.contains(real) {
		return "", r.outside(p)
	}
	return real, nil
}

// destination resolves p as a place to create something: an existing
// directory means "inside it, under base"; otherwise its parent must
// exist inside the root (after symlinks) and p itself must not exist, so a
// copy never writes through a planted symlink or over a file.
func (r hostRoot) destination(p, base string) (string, error) {
	full, err := r.join(p)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(full); err == nil {
		st, serr := os.Stat(real)
		if serr != nil || !st.IsDir() {
			return "", invalid("host path %q already exists; give a new path or a directory to copy into", p)
		}
		if !r.contains(real) {
			return "", r.outside(p)
		}
		if base == "" || base == "." || base == "/" || strings.ContainsRune(base, filepath.Separator) || base == ".." {
			return "", invalid("host path %q is a directory; give the new file's path", p)
		}
		full = filepath.Join(real, base)
		if _, err := os.Lstat(full); err == nil {
			return "", invalid("host path %q already exists; give a new path", filepath.Join(p, base))
		}
		return full, nil
	}
	if _, err := os.Lstat(full); err == nil {
		// A dangling symlink: writing would create its target, anywhere.
		return "", invalid("host path %q is a symlink to nowhere; give another path", p)
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(full))
	if err != nil {
		return "", invalid("the directory of host path %q does not exist", p)
	}
	if !r.contains(parent) {
		return "", r.outside(p)
	}
	return filepath.Join(parent, filepath.Base(full)), nil
}
