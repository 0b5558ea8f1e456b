package vmmproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ReclaimSocket makes path free for bind: absent is fine; a socket nobody
// accepts on (left by a crashed VMM) is removed; a socket someone answers on
// is inUse (the caller's sentinel, so its errors.Is checks keep working);
// any other file is refused rather than deleted.
func ReclaimSocket(path string, inUse error) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s: %w", path, inUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe stale socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// LogTail returns the end of a log file, where a VMM's own start-up errors
// land, formatted for appending to an error ("" when there is nothing).
func LogTail(path string) string {
	const tailBytes = 512
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return ""
	}
	off := max(0, st.Size()-tailBytes)
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	tail := strings.TrimSpace(string(buf[:n]))
	if tail == "" {
		return ""
	}
	return fmt.Sprintf("; end of %s: %q", filepath.Base(path), tail)
}
