package oci

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/banger-dev/banger/internal/unixmode"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Limits bound what unpacking an image may produce, against decompression
// bombs: a layer whose bytes or entries go past them is refused.
type Limits struct {
	// MaxBytes bounds the decompressed bytes of all layers together.
	MaxBytes int64
	// MaxEntries bounds the tar entries of all layers together.
	MaxEntries int
}

// DefaultLimits allows 40 times the compressed size (real layers inflate
// 2-5×; text-heavy ones rarely past 10×), at least 1 GiB and at most
// 64 GiB, and two million entries.
func DefaultLimits(compressed int64) Limits {
	return Limits{MaxBytes: min(max(40*compressed, 1<<30), 64<<30), MaxEntries: 2_000_000}
}

// ErrTooLarge marks a layer refused by Limits.
var ErrTooLarge = errors.New("refusing it as a likely decompression bomb")

// node is one file in the flattened tree: what its tar entry said, which
// may differ from what an unprivileged extraction put on disk.
type node struct {
	name     string
	parent   *node
	children map[string]*node // directories only
	typ      byte             // tar.TypeDir, TypeReg, TypeSymlink, TypeChar, TypeBlock, TypeFifo
	perm     int64            // the 07777 bits
	uid, gid int
	xattrs   map[string]string
	devMajor int64
	devMinor int64
	// layer is the layer that last wrote the entry; whiteouts and opaque
	// directories hide only lower layers' entries.
	layer int
	// onDisk is the permission the extraction gave the file on disk.
	onDisk int64
}

func (n *node) rel() string {
	if n.parent == nil {
		return "."
	}
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// Tree is a flattened image on disk (Dir) with the metadata the disk
// copy may lack: ownership (the extraction runs as the daemon's user),
// device nodes and xattrs. Files are created through an os.Root opened on
// Dir, and the in-memory tree refuses any entry whose path goes through a
// symlink or climbs out with "..": nothing is ever followed on the host.
type Tree struct {
	Dir string
	// Bytes is the regular files' content; Entries counts every entry.
	Bytes   int64
	Entries int

	root     *node
	fs       *os.Root
	uid, gid int // the owner of what the extraction writes
	lim      Limits
	used     int64 // decompressed bytes read so far
}

// NewTree makes an empty tree in dir, which must not exist. uid and gid
// are the owner files get on disk (the caller's euid and egid).
func NewTree(dir string, uid, gid int, lim Limits) (*Tree, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the rootfs tree: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	root := &node{typ: tar.TypeDir, perm: 0o755, children: map[string]*node{}, onDisk: 0o700}
	return &Tree{Dir: dir, root: root, fs: r, uid: uid, gid: gid, lim: lim}, nil
}

// Close releases the tree's directory handle (the files stay).
func (t *Tree) Close() error { return t.fs.Close() }

// Flatten applies the layers in order into a new tree at dir.
func Flatten(ctx context.Context, layers []Layer, dir string, uid, gid int, lim Limits) (*Tree, error) {
	t, err := NewTree(dir, uid, gid, lim)
	if err != nil {
		return nil, err
	}
	for i, l := range layers {
		if err := t.applyLayer(ctx, i+1, l); err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, l.Digest, err)
		}
	}
	return t, nil
}

// decompressorFor maps a layer media type to its decompressor, refusing
// what banger cannot unpack.
func decompressorFor(mt types.MediaType) (func(io.Reader) (io.ReadCloser, error), error) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		return func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }, nil
	case types.OCILayerZStd:
		return func(r io.Reader) (io.ReadCloser, error) {
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		}, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(r), nil }, nil
	}
	return nil, fmt.Errorf("its media type %q is not one banger unpacks (tar, tar+gzip or tar+zstd layers)", mt)
}

func (t *Tree) applyLayer(ctx context.Context, layer int, l Layer) error {
	decompress, err := decompressorFor(l.MediaType)
	if err != nil {
		return err
	}
	f, err := os.Open(l.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	dr, err := decompress(f)
	if err != nil {
		return fmt.Errorf("it is not a valid %s stream: %w", l.MediaType, err)
	}
	defer dr.Close()
	tr := tar.NewReader(&boundedReader{t: t, r: &ctxReader{ctx: ctx, r: dr}})
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return t.readError(err)
		}
		if err := t.Apply(layer, hdr, tr); err != nil {
			return t.readError(err)
		}
	}
}

// readError turns the bound's error into the sentence users see.
func (t *Tree) readError(err error) error {
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("it is truncated or corrupt: %w", err)
	}
	return err
}

// boundedReader counts decompressed bytes against the tree's limit.
type boundedReader struct {
	t *Tree
	r io.Reader
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.t.used += int64(n)
	if b.t.used > b.t.lim.MaxBytes {
		return n, fmt.Errorf("the image unpacks to more than %d MiB, %w", b.t.lim.MaxBytes>>20, ErrTooLarge)
	}
	return n, err
}

// entryPath splits a tar entry name into clean components, refusing ".."
// and NUL. "" and "." components vanish; the root is no components.
func entryPath(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("entry %q has a NUL byte in its name", name)
	}
	var out []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("entry %q climbs out of the image root with \"..\"", name)
		}
		out = append(out, p)
	}
	return out, nil
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Apply adds one tar entry from layer (1-based; later layers win),
// reading a regular file's content from r.
func (t *Tree) Apply(layer int, hdr *tar.Header, r io.Reader) error {
	t.Entries++
	if t.lim.MaxEntries > 0 && t.Entries > t.lim.MaxEntries {
		return fmt.Errorf("the image has more than %d entries, %w", t.lim.MaxEntries, ErrTooLarge)
	}
	parts, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if hdr.Typeflag == tar.TypeDir {
			t.setMeta(t.root, hdr, layer)
		}
		return nil
	}
	dirParts, base := parts[:len(parts)-1], parts[len(parts)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return t.whiteout(layer, hdr.Name, dirParts, base)
	}
	parent, err := t.mkdirs(hdr.Name, dirParts, layer)
	if err != nil {
		return err
	}
	if old := parent.children[base]; old != nil {
		if old.typ == tar.TypeDir && hdr.Typeflag == tar.TypeDir {
			t.setMeta(old, hdr, layer)
			return nil
		}
		if err := t.remove(old); err != nil {
			return err
		}
	}
	n := &node{name: base, parent: parent}
	if err := t.create(n, hdr, r); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeLink {
		t.setMeta(n, hdr, layer)
	}
	n.layer = layer
	parent.children[base] = n
	return nil
}

// whiteout applies ".wh.NAME" (delete NAME from lower layers) and
// ".wh..wh..opq" (hide the directory's lower-layer contents).
func (t *Tree) whiteout(layer int, name string, dirParts []string, base string) error {
	dir, err := t.lookup(name, dirParts)
	if err != nil || dir == nil || dir.typ != tar.TypeDir {
		return err // nothing below to hide
	}
	if base == opaqueMarker {
		for _, c := range sortedChildren(dir) {
			if c.layer < layer {
				if err := t.remove(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if c := dir.children[strings.TrimPrefix(base, whiteoutPrefix)]; c != nil && c.layer < layer {
		return t.remove(c)
	}
	return nil
}

// lookup walks to the node at parts, nil when absent; it refuses paths
// through symlinks like mkdirs does.
func (t *Tree) lookup(name string, parts []string) (*node, error) {
	cur := t.root
	for i, p := range parts {
		next := cur.children[p]
		if next == nil {
			return nil, nil
		}
		if i < len(parts)-1 && next.typ != tar.TypeDir {
			return nil, throughNonDir(name, next)
		}
		cur = next
	}
	return cur, nil
}

func throughNonDir(name string, n *node) error {
	if n.typ == tar.TypeSymlink {
		return fmt.Errorf("entry %q goes through the symlink /%s, which banger does not follow while unpacking", name, n.rel())
	}
	return fmt.Errorf("entry %q needs /%s to be a directory, but it is a file", name, n.rel())
}

// mkdirs returns the directory at parts, creating missing directories
// (root-owned, 0755: tars may omit parents).
func (t *Tree) mkdirs(name string, parts []string, layer int) (*node, error) {
	cur := t.root
	for _, p := range parts {
		next := cur.children[p]
		if next == nil {
			next = &node{name: p, parent: cur, typ: tar.TypeDir, perm: 0o755, children: map[string]*node{}, layer: layer}
			if err := t.fs.Mkdir(next.rel(), 0o700); err != nil {
				return nil, fmt.Errorf("create /%s: %w", next.rel(), err)
			}
			next.onDisk = 0o700
			cur.children[p] = next
		} else if next.typ != tar.TypeDir {
			return nil, throughNonDir(name, next)
		}
		cur = next
	}
	return cur, nil
}

// remove deletes n and what is below it, on disk and in the tree.
func (t *Tree) remove(n *node) error {
	if err := t.fs.RemoveAll(n.rel()); err != nil {
		return fmt.Errorf("remove /%s: %w", n.rel(), err)
	}
	delete(n.parent.children, n.name)
	return nil
}

// create puts n's file on disk. Device nodes and fifos stay in the tree
// only (an unprivileged process cannot make them); WriteExt4 adds them.
func (t *Tree) create(n *node, hdr *tar.Header, r io.Reader) error {
	rel := n.rel()
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.typ, n.children = tar.TypeDir, map[string]*node{}
		if err := t.fs.Mkdir(rel, 0o700); err != nil {
			return fmt.Errorf("create /%s: %w", rel, err)
		}
		n.onDisk = 0o700
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still use '\x00'
		n.typ = tar.TypeReg
		if hdr.Size < 0 || hdr.Size > t.lim.MaxBytes-t.used {
			return fmt.Errorf("entry %q claims %d bytes, more than the image may unpack to, %w", hdr.Name, hdr.Size, ErrTooLarge)
		}
		f, err := t.fs.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("create /%s: %w", rel, err)
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write /%s: %w", rel, err)
		}
		n.onDisk = 0o600
		t.Bytes += hdr.Size
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("symlink entry %q has no target", hdr.Name)
		}
		n.typ = tar.TypeSymlink
		if err := t.fs.Symlink(hdr.Linkname, rel); err != nil {
			return fmt.Errorf("create symlink /%s: %w", rel, err)
		}
	case tar.TypeLink:
		return t.hardlink(n, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		n.typ, n.devMajor, n.devMinor = hdr.Typeflag, hdr.Devmajor, hdr.Devminor
	default:
		return fmt.Errorf("entry %q has tar type %q, which banger does not unpack", hdr.Name, string(hdr.Typeflag))
	}
	return nil
}

// hardlink links n to an earlier regular file or symlink of the tree; the
// link shares the target's inode, so it takes the target's metadata.
func (t *Tree) hardlink(n *node, hdr *tar.Header) error {
	parts, err := entryPath(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("hard link %q: %w", hdr.Name, err)
	}
	target, err := t.lookup(hdr.Name, parts)
	if err != nil {
		return err
	}
	if target == nil || len(parts) == 0 {
		return fmt.Errorf("hard link %q points at %q, which the image does not hold", hdr.Name, hdr.Linkname)
	}
	if target.typ != tar.TypeReg && target.typ != tar.TypeSymlink {
		return fmt.Errorf("hard link %q points at %q, which is not a regular file", hdr.Name, hdr.Linkname)
	}
	if err := t.fs.Link(target.rel(), n.rel()); err != nil {
		return fmt.Errorf("link /%s: %w", n.rel(), err)
	}
	n.typ, n.perm, n.uid, n.gid, n.xattrs, n.onDisk = target.typ, target.perm, target.uid, target.gid, target.xattrs, target.onDisk
	return nil
}

// setMeta records an entry's ownership, mode and xattrs.
func (t *Tree) setMeta(n *node, hdr *tar.Header, layer int) {
	n.perm, n.uid, n.gid, n.layer = hdr.Mode&0o7777, hdr.Uid, hdr.Gid, layer
	n.xattrs = nil
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if n.xattrs == nil {
				n.xattrs = map[string]string{}
			}
			n.xattrs[name] = v
		}
	}
}

// diskPerm is what a file gets on disk: its own mode, plus the owner bits
// the extracting user needs to read it (and a directory's to enter it)
// when mkfs.ext4 copies the tree. The fixups restore the exact mode.
func diskPerm(n *node) int64 {
	switch n.typ {
	case tar.TypeDir:
		return n.perm | 0o700
	case tar.TypeReg:
		return n.perm | 0o600
	}
	return n.perm
}

// Finish gives directories and files their modes on disk, deepest first
// so a read-only directory is set after its contents are written.
func (t *Tree) Finish() error {
	return t.walkPost(t.root, func(n *node) error {
		if n.typ != tar.TypeDir && n.typ != tar.TypeReg {
			return nil
		}
		perm := diskPerm(n)
		if perm == n.onDisk {
			return nil
		}
		if err := t.fs.Chmod(n.rel(), unixmode.ToFileMode(uint32(perm))); err != nil {
			return fmt.Errorf("set the mode of /%s: %w", n.rel(), err)
		}
		n.onDisk = perm
		// Hard links share the inode: all of them now have this mode.
		return nil
	})
}

func (t *Tree) walkPost(n *node, fn func(*node) error) error {
	for _, c := range sortedChildren(n) {
		if err := t.walkPost(c, fn); err != nil {
			return err
		}
	}
	return fn(n)
}

func (t *Tree) walkPre(n *node, fn func(*node) error) error {
	if err := fn(n); err != nil {
		return err
	}
	for _, c := range sortedChildren(n) {
		if err := t.walkPre(c, fn); err != nil {
			return err
		}
	}
	return nil
}

func sortedChildren(n *node) []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// AddFile puts content at abs (an absolute path in the image) as a
// root-owned regular file with perm, as a layer above the image's own.
func (t *Tree) AddFile(abs string, content io.Reader, size int64, perm int64) error {
	hdr := &tar.Header{Name: abs, Typeflag: tar.TypeReg, Size: size, Mode: perm}
	return t.Apply(1<<30, hdr, io.LimitReader(content, size))
}

// AddSymlink puts a symlink at abs pointing at target, above the image.
func (t *Tree) AddSymlink(abs, target string) error {
	return t.Apply(1<<30, &tar.Header{Name: abs, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, nil)
}

// Lookup reports the type of the entry at abs ('0' regular, '2' symlink,
// '5' directory, ...), or 0 when the image has none; symlinks are not
// followed.
func (t *Tree) Lookup(abs string) byte {
	parts, err := entryPath(abs)
	if err != nil {
		return 0
	}
	n, err := t.lookup(abs, parts)
	if err != nil || n == nil {
		return 0
	}
	return n.typ
}

// Readlink returns the target of the symlink at abs, "" when it is none.
func (t *Tree) Readlink(abs string) string {
	if t.Lookup(abs) != tar.TypeSymlink {
		return ""
	}
	target, err := t.fs.Readlink(path.Clean(strings.TrimPrefix(abs, "/")))
	if err != nil {
		return ""
	}
	return target
}
