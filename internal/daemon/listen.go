package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrAlreadyRunning means another daemon holds the lock for this layout.
var ErrAlreadyRunning = errors.New("another bangerd is already running")

// instanceLock is the exclusive flock a live daemon holds. The kernel drops
// it when the process dies, however it dies, which is what lets the next
// daemon tell a socket left by a crash from one a live daemon serves.
type instanceLock struct {
	f *os.File
}

func acquireLock(path string) (*instanceLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create runtime dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := readPID(f)
			if pid > 0 {
				return nil, fmt.Errorf("%w (pid %d); stop it with `banger daemon stop`", ErrAlreadyRunning, pid)
			}
			return nil, fmt.Errorf("%w; stop it with `banger daemon stop`", ErrAlreadyRunning)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &instanceLock{f: f}, nil
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid
}

func (l *instanceLock) release() {
	_ = l.f.Truncate(0)
	_ = l.f.Close()
}

// listenSocket listens on path with mode 0600. The caller holds the instance
// lock, so a socket file already there was left by a dead daemon and is
// removed.
func listenSocket(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	// The umask makes the socket private from the moment it exists; a chmod
	// afterwards would leave a window where others could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}
