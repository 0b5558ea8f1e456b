package oci

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/system"
)

// SizeFor is the ext4 size for the tree plus extra bytes of room: content,
// a block and an inode's share per entry, a fifth for ext4's own metadata
// and 64 MiB of slack, rounded up to a MiB.
func (t *Tree) SizeFor(extra int64) int64 {
	perEntry := int64(t.Entries) * (4096 + 256)
	size := (t.Bytes+perEntry)*6/5 + 64<<20 + extra
	// mkfs.ext4's default makes one inode per 16 KiB.
	size = max(size, int64(t.Entries)*16384*6/5)
	return (size + 1<<20 - 1) &^ (1<<20 - 1)
}

// WriteExt4 makes the ext4 image at path from the tree with mkfs.ext4 -d,
// then applies with debugfs what the unprivileged copy could not carry:
// owners other than the extracting user's, exact modes, device nodes,
// fifos and xattrs. Neither step mounts anything or needs root.
func (t *Tree) WriteExt4(ctx context.Context, r system.Runner, path string, size int64) error {
	if err := t.Finish(); err != nil {
		return err
	}
	if err := disk.MakeExt4(ctx, r, disk.Ext4Spec{SourceDir: t.Dir, Path: path, SizeBytes: size, Label: "banger-root"}); err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(path), ".fixups-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	script := filepath.Join(work, "script")
	n, err := t.writeFixups(script, work)
	if err != nil || n == 0 {
		return err
	}
	out, err := system.RunChecked(ctx, r, system.Command{Path: "debugfs", Args: []string{"-w", "-f", script, path}})
	if err != nil {
		return fmt.Errorf("set owners, modes and device nodes with debugfs: %w", err)
	}
	// debugfs exits 0 whatever its requests did; its complaints are the
	// stderr lines after its version banner.
	for _, line := range strings.Split(string(out.Stderr), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "debugfs ") {
			return fmt.Errorf("set owners, modes and device nodes with debugfs: %s", line)
		}
	}
	return nil
}

// writeFixups writes the debugfs requests for every entry whose ext4
// inode, as mkfs copied it, differs from the image's entry. xattr values
// go to files in valueDir (debugfs reads binary values from a file).
// It returns how many requests it wrote.
func (t *Tree) writeFixups(script, valueDir string) (int, error) {
	f, err := os.Create(script)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriter(f)
	count, values := 0, 0
	emit := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		count++
	}
	err = t.walkPre(t.root, func(n *node) error {
		p := "/" + strings.TrimPrefix(n.rel(), ".")
		needs := n.uid != t.uid || n.gid != t.gid || diskPerm(n) != n.perm || len(n.xattrs) > 0 || isSpecial(n)
		if !needs || (n.typ == tar.TypeSymlink && n.uid == t.uid && n.gid == t.gid && len(n.xattrs) == 0) {
			return nil
		}
		q, err := debugfsQuote(p)
		if err != nil {
			return err
		}
		if isSpecial(n) {
			// debugfs's mknod takes a name in its current directory.
			parent, err := debugfsQuote("/" + strings.TrimPrefix(n.parent.rel(), "."))
			if err != nil {
				return err
			}
			base, _ := debugfsQuote(n.name) // its characters are checked in q
			emit("cd %s", parent)
			switch n.typ {
			case tar.TypeChar:
				emit("mknod %s c %d %d", base, n.devMajor, n.devMinor)
			case tar.TypeBlock:
				emit("mknod %s b %d %d", base, n.devMajor, n.devMinor)
			default:
				emit("mknod %s p", base)
			}
			emit("cd /")
		}
		if n.uid != t.uid || isSpecial(n) {
			emit("sif %s uid %d", q, n.uid)
		}
		if n.gid != t.gid || isSpecial(n) {
			emit("sif %s gid %d", q, n.gid)
		}
		if n.typ != tar.TypeSymlink && (diskPerm(n) != n.perm || isSpecial(n)) {
			emit("sif %s mode 0%o", q, typeBits(n.typ)|n.perm)
		}
		for _, name := range sortedKeys(n.xattrs) {
			qn, err := debugfsQuote(name)
			if err != nil {
				return err
			}
			values++
			vf := filepath.Join(valueDir, strconv.Itoa(values))
			if err := os.WriteFile(vf, []byte(n.xattrs[name]), 0o600); err != nil {
				return err
			}
			qv, err := debugfsQuote(vf)
			if err != nil {
				return err
			}
			emit("ea_set -f %s %s %s", qv, q, qn)
		}
		return nil
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return count, err
}

func isSpecial(n *node) bool {
	return n.typ == tar.TypeChar || n.typ == tar.TypeBlock || n.typ == tar.TypeFifo
}

// typeBits are the S_IFMT bits of an inode of tar type typ.
func typeBits(typ byte) int64 {
	switch typ {
	case tar.TypeDir:
		return 0o040000
	case tar.TypeChar:
		return 0o020000
	case tar.TypeBlock:
		return 0o060000
	case tar.TypeFifo:
		return 0o010000
	case tar.TypeSymlink:
		return 0o120000
	}
	return 0o100000
}

// debugfsQuote quotes a path for a debugfs request. debugfs's parser has
// no escape character, so a name with a double quote or a control
// character cannot be named to it and the image is refused.
func debugfsQuote(s string) (string, error) {
	for _, c := range s {
		if c == '"' || c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%q has a double quote or control character in its name, which banger cannot set the owner or mode of without root", s)
		}
	}
	return `"` + s + `"`, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
