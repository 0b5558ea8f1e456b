package vmmproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm/vmmproc/logcaptest"
)

// floodEnv makes the test binary a console flooder (see TestMain).
const floodEnv = "VMMPROC_TEST_FLOOD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(capsEnv); dir != "" {
		if err := spawnReportingCaps(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if path := os.Getenv(floodEnv); path != "" {
		if err := flood(path, floodBytes); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	floodBytes = 200 << 20
	lineLen    = len("line 000000000\n")
	floodLines = floodBytes / lineLen
)

func floodLine(i int) string { return fmt.Sprintf("line %09d\n", i) }

// flood appends numbered lines to path as fast as it can, in 64 KiB writes
// with O_APPEND, the way a VMM appends a guest's console. The line number
// is counted up in place (no formatting per line), so the writer is fast
// even in a -race binary.
func flood(path string, total int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	line := []byte(floodLine(0))
	const digits = len("line ")
	buf := make([]byte, 0, 64<<10+lineLen)
	for range total / lineLen {
		buf = append(buf, line...)
		if len(buf) >= 64<<10 {
			if _, err := f.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		for i := lineLen - 2; i >= digits; i-- { // count up, carrying
			if line[i] < '9' {
				line[i]++
				break
			}
			line[i] = '0'
		}
	}
	_, err = f.Write(buf)
	return err
}

func fsType(t *testing.T, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return s.Type
}

// capDirs are the directories the capping is tried in: the test's temp
// dir (ext4 here: collapse) and /dev/shm (tmpfs: punched holes), the file
// systems a state or runtime dir lives on.
func capDirs(t *testing.T) map[string]string {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() && fsType(t, "/dev/shm") == unix.TMPFS_MAGIC {
		shm, err := os.MkdirTemp("/dev/shm", "logcap")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	} else {
		t.Log("no tmpfs at /dev/shm: the punch-hole path is not tried")
	}
	return dirs
}

// TestCapLogBoundsAFloodedConsole floods a console log from another
// process with 200 MB and checks the file stayed bounded while it ran and
// ends under the cap with the newest lines at its end.
func TestCapLogBoundsAFloodedConsole(t *testing.T) {
	const limit = 4 << 20
	noInotify := func(string, <-chan struct{}) (func() (bool, error), func(), error) {
		return nil, nil, errors.New("inotify_init1: too many open files")
	}
	type capRun struct {
		dir   string
		watch watchFunc
	}
	runs := map[string]capRun{}
	for name, dir := range capDirs(t) {
		runs[name] = capRun{dir, writesTo}
	}
	runs["tempdir, inotify unavailable (polling)"] = capRun{t.TempDir(), noInotify}
	for name, run := range runs {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(run.dir, "serial.log")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			done, capped := make(chan struct{}), make(chan struct{})
			go func() {
				if err := capLog(done, path, limit, slog.New(slog.DiscardHandler), run.watch); err != nil {
					t.Errorf("capLog: %v", err)
				}
				close(capped)
			}()

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), floodEnv+"="+path)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var peak int64
		sample:
			for {
				select {
				case err := <-exited:
					if err != nil {
						t.Fatalf("flooder: %v", err)
					}
					break sample
				case <-time.After(2 * time.Millisecond):
					used, _ := logcaptest.Use(t, path)
					peak = max(peak, used)
				}
			}
			close(done)
			<-capped

			final, what := logcaptest.Use(t, path)
			t.Logf("%s: peak %d, final %d (%s)", name, peak, final, what)
			if final > limit {
				t.Errorf("after the flood the log's %s is %d, over the cap of %d", what, final, limit)
			}
			// The trimmer checks between writes, so the file overshoots by
			// what the writer manages meanwhile; it must still be far from
			// the 200 MB an uncapped log reaches.
			if peak > floodBytes/4 {
				t.Errorf("during the flood the log's %s reached %d: it was not trimmed while written", what, peak)
			}
			checkNewestTail(t, path)
		})
	}
}

// checkNewestTail reads the file's last 64 KiB and checks they are the
// flood's last lines, in order.
func checkNewestTail(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	const window = 64 << 10
	if st.Size() < window {
		t.Fatalf("the log kept only %d bytes", st.Size())
	}
	if _, err := f.Seek(st.Size()-window, 0); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Scan() // a partial first line
	var nums []int
	for sc.Scan() {
		n, err := strconv.Atoi(string(bytes.TrimPrefix(sc.Bytes(), []byte("line "))))
		if err != nil {
			t.Fatalf("tail holds %q, not a flood line", sc.Text())
		}
		nums = append(nums, n)
	}
	if len(nums) == 0 || nums[len(nums)-1] != floodLines-1 {
		t.Fatalf("the log does not end with the newest line %d: %v…", floodLines-1, nums[max(0, len(nums)-3):])
	}
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			t.Fatalf("the tail skips from line %d to %d", nums[i-1], nums[i])
		}
	}
}

// TestCapLogTrimsAtOnceALogThatGrewUnwatched is the daemon restart: the
// VMM wrote while no daemon watched, and the next one trims on adoption.
func TestCapLogTrimsAtOnceALogThatGrewUnwatched(t *testing.T) {
	const limit = 1 << 20
	for name, dir := range capDirs(t) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "serial.log")
			if err := os.WriteFile(path, bytes.Repeat([]byte("old console output\n"), 5*limit/19), 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			close(done) // the VMM exits right away: CapLog still trims once
			CapLog(done, path, limit, nil)
			if b, what := logcaptest.Use(t, path); b > limit {
				t.Fatalf("the log's %s is %d, over the cap of %d", what, b, limit)
			}
		})
	}
}

// TestReadTailWhileTheLogIsTrimmed reads the end of a log that is being
// flooded and collapsed at the same time: every read must return the full
// window, never a short or empty tail (a trim
// between the size check and the read would give one).
func TestReadTailWhileTheLogIsTrimmed(t *testing.T) {
	dir := t.TempDir()
	if fsType(t, dir) != unix.EXT4_SUPER_MAGIC && fsType(t, dir) != unix.XFS_SUPER_MAGIC {
		t.Skip("the temp dir's file system does not collapse ranges, so trims never shrink the file")
	}
	path := filepath.Join(dir, "serial.log")
	if err := os.WriteFile(path, []byte(strings.Repeat(floodLine(0), 1<<20/lineLen)), 0o600); err != nil {
		t.Fatal(err)
	}
	done, capped := make(chan struct{}), make(chan struct{})
	go func() { CapLog(done, path, 1<<20, nil); close(capped) }()
	defer func() { close(done); <-capped }()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floodEnv+"="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	const window = 64 << 10
	for reads := 0; ; reads++ {
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("flooder: %v", err)
			}
			t.Logf("%d reads", reads)
			return
		default:
		}
		b, err := ReadTail(path, window)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != window {
			t.Fatalf("read %d: got %d bytes of the tail, want %d", reads, len(b), window)
		}
	}
}
