package vmmproc

import (
	"errors"
	"fmt"
	"io"
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
	b, err := ReadTail(path, tailBytes)
	if err != nil {
		return ""
	}
	tail := strings.TrimSpace(string(b))
	if tail == "" {
		return ""
	}
	return fmt.Sprintf("; end of %s: %q", filepath.Base(path), tail)
}

// ReadTail returns the last n bytes of the file at path (fewer if it is
// shorter). A console log may be trimmed (CapLog) between the size check
// and the read, which then comes back short: the read is retried then, so
// the newest output is not lost to the race.
func ReadTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for range 3 {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		off := max(0, st.Size()-n)
		buf := make([]byte, st.Size()-off)
		k, err := f.ReadAt(buf, off)
		if k == len(buf) {
			return buf, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("read the end of %s: it keeps shrinking", path)
}
