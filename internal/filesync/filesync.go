// Package filesync decides which of the owner's files may be copied into a
// VM. The configured paths are locked to the owner's home: a path outside
// it, a ".." that climbs out of it, or a symlink (anywhere in a synced
// tree) that points out of it is refused with a clear error, and nothing of
// that entry is copied. The copying itself is the daemon's, through the
// guest agent.
package filesync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrRefused is wrapped by every refusal, so callers can tell a policy
// decision from an I/O failure.
var ErrRefused = errors.New("refused")

// Entry is one configured path that passed the policy.
type Entry struct {
	// Config is the path as configured ("~/.gitconfig").
	Config string
	// Source is the local file or directory to read: the configured path
	// with a symlink at its end resolved (a dotfile manager's link copies
	// as the file it points to).
	Source string
	// Rel is the configured path relative to the home directory,
	// slash-separated: it lands at the same place under the guest user's
	// home.
	Rel string
}

// Refusal explains why one configured path is not synced.
type Refusal struct {
	Config string
	Reason string
}

func (r *Refusal) Error() string { return fmt.Sprintf("sync %s: %s", r.Config, r.Reason) }

func (r *Refusal) Unwrap() error { return ErrRefused }

// Plan checks each path against the policy. Paths may start with "~/", be
// absolute, or be relative to home. It returns the entries to copy and one
// error per refused path (a *Refusal, or an I/O error reading the tree).
func Plan(home string, paths []string) ([]Entry, []error) {
	var (
		entries []Entry
		errs    []error
	)
	realHome, err := filepath.EvalSymlinks(home)
	if err != nil || !filepath.IsAbs(home) {
		return nil, []error{fmt.Errorf("file sync: home directory %q is not usable: %v", home, err)}
	}
	for _, p := range paths {
		e, err := check(home, realHome, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	return entries, errs
}

func check(home, realHome, configured string) (Entry, error) {
	refuse := func(format string, args ...any) (Entry, error) {
		return Entry{}, &Refusal{Config: configured, Reason: fmt.Sprintf(format, args...)}
	}
	p := strings.TrimSpace(configured)
	switch {
	case p == "":
		return refuse("the path is empty")
	case p == "~" || strings.HasPrefix(p, "~/"):
		p = filepath.Join(home, strings.TrimPrefix(p, "~"))
	case strings.HasPrefix(p, "~"):
		return refuse("only your own home (~/) can be synced, not another user's")
	case !filepath.IsAbs(p):
		p = filepath.Join(home, p)
	}
	// Lexically first: ".." must not climb out, whatever is on disk.
	rel, ok := within(home, filepath.Clean(p))
	if !ok {
		if strings.Contains(configured, "..") {
			return refuse("it climbs out of your home directory %s with \"..\"", home)
		}
		return refuse("it is outside your home directory %s", home)
	}
	if rel == "." {
		return refuse("that is your whole home directory; list the files and directories to sync instead")
	}
	// Then on disk: where the path really leads must stay inside too.
	if _, err := os.Lstat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return refuse("it does not exist")
		}
		return Entry{}, fmt.Errorf("sync %s: %w", configured, err)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return refuse("it is a symlink that leads nowhere (%v)", unwrapPath(err))
	}
	if _, ok := within(realHome, real); !ok {
		return refuse("it leads to %s, outside your home directory", real)
	}
	st, err := os.Stat(real)
	if err != nil {
		return Entry{}, fmt.Errorf("sync %s: %w", configured, err)
	}
	if st.IsDir() {
		if err := checkTree(realHome, real); err != nil {
			return refuse("%v", err)
		}
	} else if !st.Mode().IsRegular() {
		return refuse("it is not a regular file or directory")
	}
	return Entry{Config: configured, Source: real, Rel: filepath.ToSlash(rel)}, nil
}

// checkTree refuses a directory holding a symlink whose target is outside
// home: the link would be copied as a link, but a guest following it would
// reach guest paths the owner never meant to point at, and the rule is
// simpler to trust when it holds at every depth.
func checkTree(realHome, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		resolved := target
		if !filepath.IsAbs(resolved) {
			resolved = filepath.Join(filepath.Dir(p), target)
		}
		if r, err := filepath.EvalSymlinks(resolved); err == nil {
			resolved = r
		}
		if _, ok := within(realHome, filepath.Clean(resolved)); !ok {
			return fmt.Errorf("it contains %s, a symlink to %s outside your home directory", p, target)
		}
		return nil
	})
}

// within reports whether p is base or below it, and p relative to base.
func within(base, p string) (string, bool) {
	rel, err := filepath.Rel(base, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", false
	}
	return rel, true
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
