package vmmproc

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultConsoleLogMax is the size a VM's serial console log is held to
// when the driver's configuration names none.
const DefaultConsoleLogMax int64 = 16 << 20

// capCheckInterval is the least time between two size checks of a log
// that is being written to: during a flood it bounds the daemon's work to
// a few checks a second, at the price of the overshoot described at CapLog.
const capCheckInterval = 20 * time.Millisecond

// CapLog holds the log file at path (a VM's serial console, appended to by
// its VMM) to about limit bytes until done closes, and returns then.
//
// The guest controls what its console prints, so it can write gigabytes in
// seconds. The VMM keeps writing to a plain file opened with O_APPEND, and
// the daemon trims the file's head in place from outside:
//
//   - where the file system collapses ranges (ext4, xfs), the oldest
//     block-aligned part is cut out with FALLOC_FL_COLLAPSE_RANGE, which
//     bounds both the apparent size and the disk space;
//   - elsewhere (tmpfs, btrfs, …) the head is freed with
//     FALLOC_FL_PUNCH_HOLE, which bounds the space used (st_blocks) while
//     the apparent size keeps growing as a sparse file.
//
// Either way the newest output stays at the end, where `vm logs` and the
// boot-failure tail read it. A trim starts once the file exceeds limit and
// keeps the newest limit/2 bytes, so between checks the file can overshoot
// limit by what the guest writes in about capCheckInterval plus the
// daemon's scheduling delay. Why not a pipe or socket read by the daemon:
// VMMs outlive daemon restarts, and a pipe nobody reads blocks or breaks
// the VMM's console, while this file needs no reader; a log that grew while
// no daemon ran is trimmed as soon as the next daemon adopts the VMM.
//
// Size changes are watched with inotify, so an idle VM costs nothing (the
// file is polled when no inotify instance is left). Errors are logged: a
// console that cannot be capped must not stop a VM.
func CapLog(done <-chan struct{}, path string, limit int64, log *slog.Logger) {
	if path == "" {
		return
	}
	if limit <= 0 {
		limit = DefaultConsoleLogMax
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("log", path)
	if err := capLog(done, path, limit, log, writesTo); err != nil {
		log.Warn("console log is not capped", "err", err)
	}
}

// watchFunc is writesTo; tests replace it.
type watchFunc func(path string, done <-chan struct{}) (changed func() (gone bool, err error), stop func(), err error)

func capLog(done <-chan struct{}, path string, limit int64, log *slog.Logger, watch watchFunc) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	c := &logTrimmer{f: f, limit: limit, keep: limit / 2, collapse: true, log: log}
	changed, stop, err := watch(path, done)
	if err != nil {
		// inotify instances are limited per user
		// (fs.inotify.max_user_instances, often 128): past that, poll.
		log.Info("cannot watch the console log; polling it", "err", err)
		changed, stop = pollChanges(done), func() {}
	}
	defer stop()
	for {
		c.trim()
		select {
		case <-done:
			c.trim() // the VMM's last words
			return nil
		case <-time.After(capCheckInterval):
		}
		gone, err := changed()
		if err != nil || gone {
			select {
			case <-done:
				c.trim()
				return nil
			default:
			}
			return err // nil when the VM's files were removed
		}
	}
}

// pollInterval is how often a log that cannot be watched is checked.
const pollInterval = 100 * time.Millisecond

// pollChanges waits pollInterval (or until done) for each check.
func pollChanges(done <-chan struct{}) func() (bool, error) {
	return func() (bool, error) {
		select {
		case <-done:
		case <-time.After(pollInterval):
		}
		return false, nil
	}
}

// writesTo returns a function that blocks until path is written to (or
// removed: gone), or done closes, and the function that releases the
// watch.
func writesTo(path string, done <-chan struct{}) (changed func() (gone bool, err error), stop func(), err error) {
	events, err := watchWrites(path)
	if err != nil {
		return nil, nil, err
	}
	stopped := make(chan struct{})
	go func() {
		// Closing the inotify file wakes a Read in changed.
		select {
		case <-done:
		case <-stopped:
		}
		events.Close()
	}()
	buf := make([]byte, 4096)
	changed = func() (bool, error) {
		n, err := events.Read(buf)
		if err != nil {
			return false, err
		}
		return fileWentAway(buf[:n]), nil
	}
	return changed, func() { close(stopped) }, nil
}

// watchWrites returns a pollable inotify file reporting writes to path, so
// Read blocks until the file changes and Close wakes it.
func watchWrites(path string) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	return os.NewFile(uintptr(fd), "inotify:"+path), nil
}

// fileWentAway reports whether a batch of inotify events says the watched
// file was deleted or moved (or its watch dropped).
func fileWentAway(b []byte) bool {
	// struct inotify_event: int wd; u32 mask, cookie, len; char name[len].
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		if mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
			return true
		}
		nameLen := int(binary.NativeEndian.Uint32(b[12:16]))
		b = b[min(len(b), unix.SizeofInotifyEvent+nameLen):]
	}
	return false
}

// logTrimmer cuts the head of one log file.
type logTrimmer struct {
	f           *os.File
	limit, keep int64
	// collapse is true until the file system refuses COLLAPSE_RANGE.
	collapse bool
	// punched is how far the head is already a hole (punch mode only).
	punched int64
	log     *slog.Logger
}

func (c *logTrimmer) trim() {
	var st unix.Stat_t
	if err := unix.Fstat(int(c.f.Fd()), &st); err != nil {
		c.log.Warn("stat console log", "err", err)
		return
	}
	if c.collapse {
		if st.Size <= c.limit {
			return
		}
		err := c.collapseHead(st.Size, int64(st.Blksize))
		if err == nil {
			return
		}
		c.collapse = false
		c.log.Info("file system cannot collapse the console log; punching holes instead (its apparent size keeps growing)", "err", err)
	}
	if st.Blocks*512 <= c.limit {
		return
	}
	if err := c.punchHead(st.Size); err != nil {
		c.log.Warn("trim console log", "err", err)
	}
}

// collapseHead removes the oldest whole blocks so about keep bytes remain.
// The VMM appends with O_APPEND, so its next write lands at the new end.
func (c *logTrimmer) collapseHead(size, blockSize int64) error {
	if blockSize <= 0 {
		return errors.New("file system reports no block size")
	}
	n := (size - c.keep) / blockSize * blockSize
	if n <= 0 {
		return nil
	}
	return os.NewSyscallError("fallocate collapse", unix.Fallocate(int(c.f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, n))
}

// punchHead frees the space of everything but the newest keep bytes.
func (c *logTrimmer) punchHead(size int64) error {
	const page = 4096
	end := (size - c.keep) / page * page
	if end <= c.punched {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	if err := unix.Fallocate(int(c.f.Fd()), mode, c.punched, end-c.punched); err != nil {
		return os.NewSyscallError("fallocate punch", err)
	}
	c.punched = end
	return nil
}
