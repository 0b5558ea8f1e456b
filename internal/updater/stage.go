package updater

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// The three binaries a release tarball holds, by entry name.
const (
	BangerBinary     = "banger"
	BangerdBinary    = "bangerd"
	VsockAgentBinary = "banger-vsock-agent"
)

// MaxBinarySize caps each staged binary. banger's binaries are tens of
// MiB; the cap stops a hostile or broken tarball from filling the disk.
const MaxBinarySize = 256 << 20

// maxTrailer bounds what may follow the tar end marker inside the gzip
// stream (tar pads archives to a record size with zeros).
const maxTrailer = 1 << 20

// ErrBadTarball marks every reason StageTarball refuses a tarball.
var ErrBadTarball = errors.New("release tarball refused")

// StagedRelease records where StageTarball put the release's binaries.
type StagedRelease struct {
	Dir        string `json:"dir"`
	Banger     string `json:"banger"`
	Bangerd    string `json:"bangerd"`
	VsockAgent string `json:"vsock_agent"`
}

// DefaultStagingDir is where `banger update` downloads and unpacks a
// release under the install root root ("" or "/" for the real system).
// Root unpacks and later runs verified binaries from here, so every
// directory on the way must be root's alone. That rules out banger's state
// and cache dirs (/var/lib/banger, /var/cache/banger), which systemd hands
// to the owner: the owner could swap a staged binary between verification
// and the swap.
func DefaultStagingDir(root string) string {
	return filepath.Join(rootOr(root), "var", "cache", "banger-update")
}

// EnsureStagingDir creates dir (0700) if needed and checks that nobody but
// this user can change it or any directory above it: dir must be a real
// directory owned by this user, and each ancestor owned by this user or
// root and not writable by others (unless sticky, like /tmp, where others
// cannot rename what is not theirs). It tightens dir's own mode if needed.
func EnsureStagingDir(dir string) error {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create staging directory %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create staging directory %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("staging directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("staging directory %s is not a directory (a symlink or file stands there); remove it and retry", dir)
	}
	if uid, ok := ownerOf(st); ok && uid != os.Geteuid() {
		return fmt.Errorf("staging directory %s belongs to uid %d, not to uid %d running the update; remove it and retry", dir, uid, os.Geteuid())
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := checkAncestor(p); err != nil {
			return fmt.Errorf("staging directory %s is not safe: %w", dir, err)
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("staging directory %s: %w", dir, err)
		}
	}
	return nil
}

func checkAncestor(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if uid, ok := ownerOf(st); ok && uid != 0 && uid != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, who could replace what is staged under it", p, uid)
	}
	if st.Mode().Perm()&0o022 != 0 && st.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%s is writable by other users (mode %v)", p, st.Mode().Perm())
	}
	return nil
}

func ownerOf(st fs.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}

// PrepareCleanStaging empties dir, removing whatever an earlier,
// interrupted update left, while keeping dir itself (and so a lock held
// on it).
func PrepareCleanStaging(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean staging directory: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("clean staging directory: %w", err)
		}
	}
	return nil
}

// StageTarball unpacks a release tarball into dir, which it creates and
// which must not exist yet. The archive must hold exactly banger, bangerd
// and banger-vsock-agent, once each, as non-empty regular files of at most
// MaxBinarySize, at the top level; anything else (an extra file, a
// directory, a link or device, an absolute or ../ name, a truncated or
// trailing-garbage stream) is refused with ErrBadTarball. Files are written
// 0755 whatever the header says. On error dir is removed.
func StageTarball(tarball, dir string) (StagedRelease, error) {
	return stageTarball(tarball, dir, MaxBinarySize)
}

func stageTarball(tarball, dir string, maxSize int64) (_ StagedRelease, err error) {
	f, err := os.Open(tarball)
	if err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: %w", err)
	}
	defer f.Close()
	if err := os.Mkdir(dir, 0o700); err != nil {
		return StagedRelease{}, fmt.Errorf("stage release: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	name := filepath.Base(tarball)
	if err := extract(bufio.NewReader(f), dir, maxSize); err != nil {
		return StagedRelease{}, fmt.Errorf("%w: %s: %w", ErrBadTarball, name, err)
	}
	return StagedRelease{
		Dir:        dir,
		Banger:     filepath.Join(dir, BangerBinary),
		Bangerd:    filepath.Join(dir, BangerdBinary),
		VsockAgent: filepath.Join(dir, VsockAgentBinary),
	}, nil
}

func extract(br *bufio.Reader, dir string, maxSize int64) error {
	gz, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("not a gzip stream: %w", err)
	}
	// One gzip member only: a second would be data nobody looks at.
	gz.Multistream(false)
	want := map[string]bool{BangerBinary: false, BangerdBinary: false, VsockAgentBinary: false}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := checkEntry(hdr, want, maxSize); err != nil {
			return err
		}
		want[hdr.Name] = true
		if err := writeEntry(tr, filepath.Join(dir, hdr.Name), hdr.Size); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	var missing []string
	for _, n := range []string{BangerBinary, BangerdBinary, VsockAgentBinary} {
		if !want[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	// Read the rest of the gzip member: tar's zero padding is all that may
	// remain, and reaching the end verifies the gzip checksum, which is what
	// catches a tarball cut short after its last entry.
	n, err := io.Copy(zeroOnly{}, io.LimitReader(gz, maxTrailer+1))
	if err != nil {
		return fmt.Errorf("read archive end: %w", err)
	}
	if n > maxTrailer {
		return errors.New("more than 1 MiB of padding after the archive end")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errors.New("unexpected data after the gzip stream")
	}
	return nil
}

func checkEntry(hdr *tar.Header, want map[string]bool, maxSize int64) error {
	n := hdr.Name
	switch {
	case path.IsAbs(n) || filepath.IsAbs(n):
		return fmt.Errorf("entry %q has an absolute path", n)
	case hasDotDot(n):
		return fmt.Errorf("entry %q escapes the archive through a .. element", n)
	}
	if hdr.Typeflag != tar.TypeReg {
		return fmt.Errorf("entry %q is a %s, not a regular file", n, typeName(hdr.Typeflag))
	}
	seen, known := want[n]
	switch {
	case !known:
		return fmt.Errorf("unexpected entry %q (a release holds exactly %s, %s and %s)", n, BangerBinary, BangerdBinary, VsockAgentBinary)
	case seen:
		return fmt.Errorf("entry %q appears twice", n)
	case hdr.Size <= 0:
		return fmt.Errorf("entry %q is empty", n)
	case hdr.Size > maxSize:
		return fmt.Errorf("entry %q is %d bytes, more than the %d allowed", n, hdr.Size, maxSize)
	}
	return nil
}

func hasDotDot(name string) bool {
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return true
		}
	}
	return false
}

// writeEntry copies exactly size bytes into a new file at dst, mode 0755.
func writeEntry(r io.Reader, dst string, size int64) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("got %d of %d bytes", n, size)
	}
	if err == nil {
		// Chmod, not the create mode: the umask must not decide whether a
		// binary is executable, and the header's mode is not trusted.
		err = out.Chmod(0o755)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func typeName(t byte) string {
	switch t {
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "named pipe"
	case tar.TypeXGlobalHeader:
		return "global PAX header"
	case tar.TypeGNUSparse:
		return "sparse file"
	}
	return fmt.Sprintf("entry of type %q", t)
}

// zeroOnly accepts only zero bytes: tar's end-of-archive padding.
type zeroOnly struct{}

func (zeroOnly) Write(p []byte) (int, error) {
	for _, b := range p {
		if b != 0 {
			return 0, errors.New("unexpected data after the archive end")
		}
	}
	return len(p), nil
}

func rootOr(root string) string {
	if root == "" {
		return "/"
	}
	return root
}
