package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// exitWait bounds how long a test waits for banger to exit after it was
// told to; it only catches a hang (the bug), it does not measure speed.
const exitWait = 20 * time.Second

// startedExec is a `banger vm exec` running in the background.
type startedExec struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (h *host) startExec(t *testing.T, cmd *exec.Cmd) *startedExec {
	t.Helper()
	s := &startedExec{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default: // the hang under test: end the banger this test started
			_ = cmd.Process.Kill()
			<-s.exited
		}
	})
	return s
}

// waitExit returns banger's exit code, failing the test if it does not
// exit within exitWait.
func (s *startedExec) waitExit(t *testing.T, what string) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(exitWait):
		t.Fatalf("banger vm exec did not exit within %s after %s", exitWait, what)
		return 0
	}
}

// guestProcessGone reports whether no process runs with marker as its
// last argument (the fake guest runs commands on this host).
func guestProcessGone(marker string) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && bytes.HasSuffix(cmd, []byte("\x00"+marker+"\x00")) && !isZombieName(p.Name()) {
			return false
		}
	}
	return true
}

func isZombieName(pid string) bool {
	var n int
	if _, err := fmt.Sscan(pid, &n); err != nil {
		return true
	}
	return isZombie(n)
}

// TestExecSecondInterruptEndsSession: a guest command that ignores SIGINT
// no longer holds banger forever; the second ^C ends the session, banger
// exits 130 with a note, and the command is killed.
func TestExecSecondInterruptEndsSession(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	marker := fmt.Sprint(900000 + os.Getpid()%99999)
	cmd := exec.Command(bins.Banger, "vm", "exec", "dev", "--", "sh", "-c", "trap '' INT; echo ready; exec sleep "+marker)
	cmd.Env = h.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("guest command did not start: %q %v", line, err)
	}
	s := h.startExec(t, cmd)

	// The first ^C is passed on, and the command ignores it.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
		t.Fatalf("the first ^C ended banger (exit %d): %s", cmd.ProcessState.ExitCode(), stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := s.waitExit(t, "a second ^C"); code != 130 {
		t.Fatalf("exit %d after a second ^C, want 130; stderr: %s", code, stderr.String())
	}
	if got := strings.TrimSpace(stderr.String()); strings.Count(got, "\n") != 0 || !strings.Contains(got, `second SIGINT: stopped waiting for the command in vm "dev"`) {
		t.Fatalf("stderr should be one line saying what happened: %q", got)
	}
	eventually(t, 10*time.Second, "the guest command to be killed", func() bool { return guestProcessGone(marker) })
	h.must("vm", "delete", "--force", "dev")
}

// ptyOutput collects what banger writes to its terminal.
type ptyOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *ptyOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(b)
}

func (o *ptyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// TestExecTildeDotEndsTTYSession: in a -t session at a terminal, ~. at the
// start of a line ends the session (exit 255) even though the guest command
// never exits; ~. mid-line and ~~ reach the guest as typed text.
func TestExecTildeDotEndsTTYSession(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	marker := fmt.Sprint(800000 + os.Getpid()%99999)
	script := `echo ready; read a; echo "got:$a"; read b; echo "got:$b"; exec sleep ` + marker
	cmd := exec.Command(bins.Banger, "vm", "exec", "-t", "dev", "--", "sh", "-c", script)
	cmd.Env = h.env
	ptmx, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	s := h.startExec(t, cmd)
	var out ptyOutput
	go func() { _, _ = io.Copy(&out, ptmx) }()
	waitFor := func(want string) {
		t.Helper()
		eventually(t, 15*time.Second, fmt.Sprintf("%q on the terminal (have %q)", want, out.String()), func() bool {
			return strings.Contains(out.String(), want)
		})
	}
	typeText := func(s string) {
		t.Helper()
		if _, err := ptmx.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("ready")
	typeText("a~.b\r")
	waitFor("got:a~.b")
	typeText("~~x\r")
	waitFor("got:~x")
	typeText("~.")
	if code := s.waitExit(t, "~."); code != 255 {
		t.Fatalf("exit %d after ~., want 255; terminal: %q", code, out.String())
	}
	waitFor(`~. ended the session with vm "dev"`)
	eventually(t, 10*time.Second, "the guest command to be killed", func() bool { return guestProcessGone(marker) })
	h.must("vm", "delete", "--force", "dev")
}
