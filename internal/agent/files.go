package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/unixmode"
	"golang.org/x/sys/unix"
)

// TreeSender walks a local tree and sends it as entries. It is used by the
// agent for get and by the host for put.
type TreeSender struct {
	// FollowRoot sends what a symlink root points to instead of the link,
	// as cp does for a path named on its command line.
	FollowRoot bool
	// MaxBytes aborts the copy once file data would exceed it; 0 means no
	// limit.
	MaxBytes int64
	// Progress, if set, is called with each chunk's size as it is sent.
	Progress func(n int)

	// stop, when it reports true, ends the walk early: the receiver has
	// already refused the copy.
	stop func() bool
}

// errStopped ends a send the receiver refused; the refusal is the error the
// caller reports.
var errStopped = errors.New("copy refused by the receiver")

func (ts TreeSender) stopped() bool { return ts.stop != nil && ts.stop() }

// sendTree sends root and, for a directory, everything below it, then an
// end frame. Symlinks below the root are sent as links; sockets, devices and
// FIFOs are skipped and counted. A failure is also sent to the peer as an
// abort frame, so it stops waiting.
func (ts TreeSender) sendTree(fw *frameWriter, root string) (CopyResult, error) {
	res, err := ts.walk(fw, root)
	if err != nil {
		_ = fw.writeJSON(frameAbort, endMsg{Error: err.Error()})
		return res, err
	}
	if err := fw.writeJSON(frameEnd, endMsg{Skipped: res.Skipped}); err != nil {
		return res, err
	}
	return res, nil
}

func (ts TreeSender) walk(fw *frameWriter, root string) (CopyResult, error) {
	res := CopyResult{Path: root}
	stat := os.Lstat
	if ts.FollowRoot {
		stat = os.Stat
	}
	st, err := stat(root)
	if err != nil {
		return res, err
	}
	send := func(rel, full string, info fs.FileInfo) error {
		if ts.stopped() {
			return errStopped
		}
		e, ok, err := entryFor(rel, full, info)
		if err != nil || !ok {
			if !ok && err == nil {
				res.Skipped++
			}
			return err
		}
		if e.Type == EntryFile && ts.MaxBytes > 0 && res.Bytes+e.Size > ts.MaxBytes {
			return fmt.Errorf("%w: copy exceeds the limit of %d bytes at %s (%d bytes)", errTooLarge, ts.MaxBytes, full, e.Size)
		}
		if err := fw.writeJSON(frameEntry, e); err != nil {
			return err
		}
		switch e.Type {
		case EntryFile:
			res.Files++
			n, err := ts.sendFile(fw, full, e.Size)
			res.Bytes += n
			return err
		case EntryDir:
			res.Dirs++
		case EntrySymlink:
			res.Links++
		}
		return nil
	}
	if err := send("", root, st); err != nil {
		return res, err
	}
	if !st.IsDir() {
		return res, nil
	}
	err = filepath.WalkDir(root, func(full string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if full == root {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, full)
		if err != nil {
			return err
		}
		return send(filepath.ToSlash(rel), full, info)
	})
	return res, err
}

// entryFor describes info; ok is false for a type that is not copied.
func entryFor(rel, full string, info fs.FileInfo) (Entry, bool, error) {
	e := Entry{Path: rel, Mode: unixmode.FromFileMode(info.Mode()), ModTime: info.ModTime().UnixNano(), UID: -1, GID: -1}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = int(st.Uid), int(st.Gid)
	}
	switch {
	case info.Mode().IsRegular():
		e.Type, e.Size = EntryFile, info.Size()
	case info.IsDir():
		e.Type = EntryDir
	case info.Mode()&fs.ModeSymlink != 0:
		link, err := os.Readlink(full)
		if err != nil {
			return e, false, err
		}
		e.Type, e.Link = EntrySymlink, link
	default:
		return e, false, nil
	}
	return e, true, nil
}

// sendFile sends exactly size bytes of path as data frames; a file that
// changed size meanwhile fails the copy rather than send a torn file.
func (ts TreeSender) sendFile(fw *frameWriter, path string, size int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	limited := io.LimitReader(f, size)
	r := limited
	if ts.stop != nil {
		r = readerFunc(func(p []byte) (int, error) {
			if ts.stopped() {
				return 0, errStopped
			}
			return limited.Read(p)
		})
	}
	n, err := fw.readChunks(frameData, r, ts.Progress)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", path, err)
	}
	if n != size {
		return n, fmt.Errorf("%s changed size while being copied (%d of %d bytes)", path, n, size)
	}
	return n, nil
}

// TreeReceiver writes a received tree under a local destination.
//
// By default the sender is untrusted (the host receiving from a guest) and
// the tree is written the way `cp -r` writes a copy: each mode is the
// sender's permission bits less Umask, setuid, setgid and sticky bits are
// dropped unless KeepSpecial, and a directory that already exists keeps its
// mode and owner. Trusted (the agent receiving from the host) applies modes
// exactly as sent.
type TreeReceiver struct {
	// Owner decides each written entry's owner: it returns uid and gid, or
	// -1 to leave that id as the writing process makes it.
	Owner func(Entry) (uid, gid int)
	// Trusted applies the sender's modes verbatim, special bits included,
	// existing directories too.
	Trusted bool
	// Umask is cleared from every mode an untrusted sender asks for: the
	// receiving process's umask (ProcessUmask).
	Umask fs.FileMode
	// KeepSpecial keeps setuid, setgid and sticky bits from an untrusted
	// sender.
	KeepSpecial bool
	// MaxBytes refuses file data beyond it; 0 means no limit.
	MaxBytes int64
	// MaxEntries refuses a copy of more entries (files, directories and
	// symlinks) than this; 0 means no limit.
	MaxEntries int
	// CheckSpace refuses a file that would leave less than SpaceReserve
	// bytes free on the target file system, before writing it and again
	// every spaceCheckEvery bytes while writing it.
	CheckSpace   bool
	SpaceReserve int64
	// IdleTimeout abandons the copy when the sender has sent nothing for
	// this long (for a stream with read deadlines); 0 waits forever.
	IdleTimeout time.Duration
	// Progress, if set, is called with each chunk's size as it is written.
	Progress func(n int)
}

// spaceCheckEvery is how much file data is written between free-space
// checks, so a copy stops before the disk fills even when other writers
// are eating the space it checked for.
const spaceCheckEvery = 16 << 20

// Limits a TreeReceiver enforces, as LimitError.Limit says.
const (
	LimitBytes   = "bytes"
	LimitEntries = "entries"
	LimitSpace   = "space"
)

// LimitError is a copy stopped by one of the receiver's limits; Limit says
// which, so a caller can say how to raise it.
type LimitError struct {
	Limit string
	Msg   string
}

func (e *LimitError) Error() string { return e.Msg }

// Unwrap lets the agent answer a limit with CodeTooLarge.
func (e *LimitError) Unwrap() error { return errTooLarge }

// ErrCopyStalled is returned when a sender went quiet for longer than the
// receiver's IdleTimeout.
var ErrCopyStalled = errors.New("copy stalled")

// modeFor is the mode entry e is written with.
func (tr TreeReceiver) modeFor(e Entry) fs.FileMode {
	if tr.Trusted {
		return unixmode.ToFileMode(e.Mode)
	}
	keep := uint32(0o777)
	if tr.KeepSpecial {
		keep = 0o7777
	}
	return unixmode.ToFileMode(e.Mode & keep &^ uint32(tr.Umask.Perm()))
}

// ProcessUmask reads the process umask without changing it (umask(2) can
// only be read by setting it, which races with every other goroutine that
// creates files). Where /proc does not say (Linux before 4.7), it answers
// the strictest umask, 077.
func ProcessUmask(procStatus string) fs.FileMode {
	data, err := os.ReadFile(procStatus)
	if err != nil {
		return 0o077
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			var m uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%o", &m); err == nil {
				return fs.FileMode(m & 0o777)
			}
		}
	}
	return 0o077
}

// receiveTree reads entries until the end frame and writes them: the root
// entry at dest, the rest below it. Entry paths are checked (relative, no
// "..", parent received as a directory earlier in this copy), so a peer
// cannot make the receiver write outside dest or through a symlink it sent.
func (tr TreeReceiver) receiveTree(fr *frameReader, dest string) (CopyResult, error) {
	_, err := os.Lstat(dest)
	createdRoot := errors.Is(err, os.ErrNotExist)
	res, err := tr.receive(fr, dest)
	if err != nil && createdRoot {
		// Everything under a root this copy created is the copy's own:
		// a failed copy leaves nothing half-written behind.
		_ = os.RemoveAll(dest)
	}
	return res, err
}

func (tr TreeReceiver) receive(fr *frameReader, dest string) (CopyResult, error) {
	res := CopyResult{Path: dest}
	dirs := map[string]bool{}
	var pendingDirs []Entry // directory modes are applied last, so a 0555 dir still gets its children
	first := true
	entries := 0
	for {
		typ, payload, err := fr.next()
		if err != nil {
			return res, fmt.Errorf("copy stream: %w", unexpectedEOF(err))
		}
		switch typ {
		case frameEnd, frameAbort:
			var end endMsg
			if len(payload) > 0 {
				if err := jsonUnmarshal(payload, &end); err != nil {
					return res, err
				}
			}
			if typ == frameAbort {
				if end.Error == "" {
					end.Error = "the sender gave up"
				}
				return res, &RemoteError{Op: "copy", Code: CodeFailed, Message: end.Error}
			}
			if first {
				return res, fmt.Errorf("%w: copy stream ended without any entry", errInvalid)
			}
			res.Skipped = end.Skipped
			for i := len(pendingDirs) - 1; i >= 0; i-- {
				e := pendingDirs[i]
				p := joinRel(dest, e.Path)
				if err := os.Chmod(p, tr.modeFor(e)); err != nil {
					return res, err
				}
				if e.ModTime != 0 {
					t := time.Unix(0, e.ModTime)
					_ = os.Chtimes(p, t, t)
				}
			}
			return res, nil
		case frameEntry:
		default:
			return res, fmt.Errorf("%w: unexpected frame type %d in a copy", errInvalid, typ)
		}
		var e Entry
		if err := jsonUnmarshal(payload, &e); err != nil {
			return res, err
		}
		if err := checkEntryPath(e.Path, first, dirs); err != nil {
			return res, err
		}
		if err := checkOwner(e); err != nil {
			return res, err
		}
		first = false
		entries++
		if tr.MaxEntries > 0 && entries > tr.MaxEntries {
			return res, &LimitError{Limit: LimitEntries, Msg: fmt.Sprintf("the copy has more than %d entries (files, directories and symlinks)", tr.MaxEntries)}
		}
		target := joinRel(dest, e.Path)
		switch e.Type {
		case EntryDir:
			created, err := tr.makeDir(target, e)
			if err != nil {
				return res, err
			}
			dirs[e.Path] = true
			if created || tr.Trusted {
				pendingDirs = append(pendingDirs, e)
			}
			res.Dirs++
		case EntryFile:
			if e.Size < 0 {
				return res, fmt.Errorf("%w: negative size for %s", errInvalid, target)
			}
			if tr.MaxBytes > 0 && res.Bytes+e.Size > tr.MaxBytes {
				return res, &LimitError{Limit: LimitBytes, Msg: fmt.Sprintf("%s is %d bytes; the copy may write at most %d more", target, e.Size, tr.MaxBytes-res.Bytes)}
			}
			n, err := tr.writeFile(fr, target, e)
			res.Bytes += n
			if err != nil {
				return res, err
			}
			res.Files++
		case EntrySymlink:
			if err := tr.makeSymlink(target, e); err != nil {
				return res, err
			}
			res.Links++
		default:
			return res, fmt.Errorf("%w: unknown entry type %q for %s", errInvalid, e.Type, target)
		}
	}
}

// unexpectedEOF marks a stream that ended before the copy's end frame.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: malformed copy frame %q: %v", errInvalid, truncate(b), err)
	}
	return nil
}

func joinRel(dest, rel string) string {
	if rel == "" {
		return dest
	}
	return filepath.Join(dest, filepath.FromSlash(rel))
}

// checkEntryPath refuses any path that could land outside the destination.
func checkEntryPath(rel string, first bool, dirs map[string]bool) error {
	if first {
		if rel != "" {
			return fmt.Errorf("%w: the first entry of a copy must be its root, got %q", errInvalid, rel)
		}
		return nil
	}
	if rel == "" || strings.HasPrefix(rel, "/") || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") || strings.Contains(rel, "\x00") {
		return fmt.Errorf("%w: unsafe path %q in a copy", errInvalid, rel)
	}
	parent := path.Dir(rel)
	if parent == "." {
		parent = ""
	}
	if !dirs[parent] {
		return fmt.Errorf("%w: %q arrived before its directory", errInvalid, rel)
	}
	return nil
}

func (tr TreeReceiver) owner(e Entry) (int, int) {
	if tr.Owner == nil {
		return -1, -1
	}
	return tr.Owner(e)
}

// makeDir creates directory target, or reuses an existing one, and says
// whether it created it. An untrusted sender cannot change the mode or owner
// of a directory that was already there.
func (tr TreeReceiver) makeDir(target string, e Entry) (bool, error) {
	st, err := os.Lstat(target)
	switch {
	case err == nil && !st.IsDir():
		return false, fmt.Errorf("cannot overwrite non-directory %s with a directory", target)
	case err == nil && !tr.Trusted:
		return false, nil
	case errors.Is(err, os.ErrNotExist):
		// Writable until all children are in; the real mode comes at the end.
		if err := os.Mkdir(target, 0o700); err != nil {
			return false, err
		}
	case err != nil:
		return false, err
	default:
		if err := os.Chmod(target, unixmode.ToFileMode(e.Mode)|0o700); err != nil {
			return false, err
		}
	}
	if uid, gid := tr.owner(e); uid >= 0 || gid >= 0 {
		if err := os.Lchown(target, uid, gid); err != nil {
			return false, fmt.Errorf("chown %s: %w", target, err)
		}
	}
	return errors.Is(err, os.ErrNotExist), nil
}

// checkOwner refuses ids that are not -1 (unknown) or a valid 32-bit id: a
// negative id would wrap to a real one in chown.
func checkOwner(e Entry) error {
	for _, id := range []int{e.UID, e.GID} {
		if id < -1 || int64(id) >= 1<<32-1 {
			return fmt.Errorf("%w: owner id %d of %q is out of range", errInvalid, id, e.Path)
		}
	}
	return nil
}

func (tr TreeReceiver) writeFile(fr *frameReader, target string, e Entry) (int64, error) {
	if st, err := os.Lstat(target); err == nil && st.IsDir() {
		return 0, fmt.Errorf("cannot overwrite directory %s with a file", target)
	}
	dir := filepath.Dir(target)
	if err := tr.checkSpace(dir, target, e.Size); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(dir, ".banger-copy-*")
	if err != nil {
		return 0, err
	}
	tmp := f.Name()
	committed := false
	defer func() {
		if !committed {
			f.Close()
			_ = os.Remove(tmp)
		}
	}()
	var n, unchecked int64
	for n < e.Size {
		typ, payload, err := fr.next()
		if err != nil {
			return n, fmt.Errorf("copy stream: %w", unexpectedEOF(err))
		}
		if typ == frameAbort {
			var end endMsg
			_ = jsonUnmarshal(payload, &end)
			return n, &RemoteError{Op: "copy", Code: CodeFailed, Message: end.Error}
		}
		if typ != frameData {
			return n, fmt.Errorf("%w: %s: expected %d more bytes, got frame type %d", errInvalid, target, e.Size-n, typ)
		}
		if int64(len(payload)) > e.Size-n {
			return n, fmt.Errorf("%w: %s: more data than its declared %d bytes", errInvalid, target, e.Size)
		}
		if _, err := f.Write(payload); err != nil {
			return n, fmt.Errorf("write %s: %w", target, err)
		}
		n += int64(len(payload))
		if tr.Progress != nil {
			tr.Progress(len(payload))
		}
		if unchecked += int64(len(payload)); unchecked >= spaceCheckEvery {
			unchecked = 0
			if err := tr.checkSpace(dir, target, e.Size-n); err != nil {
				return n, err
			}
		}
	}
	mode := tr.modeFor(e)
	if err := f.Chmod(mode); err != nil {
		return n, err
	}
	if uid, gid := tr.owner(e); uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return n, fmt.Errorf("chown %s: %w", target, err)
		}
		// chown clears setuid/setgid; put them back.
		if mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			if err := f.Chmod(mode); err != nil {
				return n, err
			}
		}
	}
	if err := f.Close(); err != nil {
		return n, fmt.Errorf("write %s: %w", target, err)
	}
	if e.ModTime != 0 {
		t := time.Unix(0, e.ModTime)
		_ = os.Chtimes(tmp, t, t)
	}
	if err := os.Rename(tmp, target); err != nil {
		return n, err
	}
	committed = true
	return n, nil
}

// checkSpace refuses to write need more bytes of target in dir when that
// would leave less than the reserve free. A file system that cannot say is
// not checked.
func (tr TreeReceiver) checkSpace(dir, target string, need int64) error {
	if !tr.CheckSpace {
		return nil
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return nil
	}
	free := int64(sfs.Bavail) * sfs.Bsize
	if need > free-tr.SpaceReserve {
		msg := fmt.Sprintf("not enough space: %s needs %d more bytes but %s has %d free", target, need, dir, free)
		if tr.SpaceReserve > 0 {
			msg += fmt.Sprintf(", and a copy leaves at least %d free", tr.SpaceReserve)
		}
		return &LimitError{Limit: LimitSpace, Msg: msg}
	}
	return nil
}

func (tr TreeReceiver) makeSymlink(target string, e Entry) error {
	if st, err := os.Lstat(target); err == nil && st.IsDir() {
		return fmt.Errorf("cannot overwrite directory %s with a symlink", target)
	}
	tmp := filepath.Join(filepath.Dir(target), fmt.Sprintf(".banger-link-%d", time.Now().UnixNano()))
	if err := os.Symlink(e.Link, tmp); err != nil {
		return err
	}
	if uid, gid := tr.owner(e); uid >= 0 || gid >= 0 {
		if err := os.Lchown(tmp, uid, gid); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("chown %s: %w", target, err)
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
