// Package logcaptest helps the drivers' tests (and vmmproc's own) flood a
// console log and check that vmmproc.CapLog held it.
package logcaptest

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Use returns what CapLog bounds of the file at path, and says which: on
// file systems that collapse ranges (ext4, xfs) both its apparent size and
// its allocated blocks (the larger is returned), elsewhere only the
// allocated blocks (the head becomes a hole, the apparent size grows).
func Use(t testing.TB, path string) (int64, string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		t.Fatal(err)
	}
	allocated := st.Blocks * 512
	switch fs.Type {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC:
		return max(allocated, st.Size), "apparent size and allocated blocks"
	default:
		return allocated, "allocated blocks"
	}
}

// Tail returns the last n bytes of the file at path.
func Tail(t testing.TB, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, min(n, st.Size()))
	k, _ := f.ReadAt(buf, st.Size()-int64(len(buf)))
	return string(buf[:k])
}

// Flood writes total bytes of console lines to w as fast as it takes them,
// as a hostile guest's console would, then the line end.
func Flood(w io.Writer, total int, end string) error {
	chunk := []byte(strings.Repeat("fake guest: flooding the console\n", 2048))
	for n := 0; n < total; n += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, end+"\n")
	return err
}

// AwaitCapped waits until the console log at path is held to limit (Use)
// and its last 200 bytes hold the flood's end line (Flood): the newest
// output survived the trimming (a fake VMM may print a line after it). The 30 s guard only keeps a broken cap from
// hanging the test.
func AwaitCapped(t testing.TB, path string, limit int64, end string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		used, what := Use(t, path)
		tail := Tail(t, path, 200)
		if used <= limit && strings.Contains(tail, end+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the serial log's %s is %d (cap %d) and it ends with %q", what, used, limit, tail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
