package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func run(t *testing.T, c *Client, req ExecRequest, stdin string) (string, string, ExitStatus) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	st, err := c.Run(testCtx(t), req, strings.NewReader(stdin), &stdout, &stderr)
	if err != nil {
		t.Fatalf("run %q: %v", req.Argv, err)
	}
	return stdout.String(), stderr.String(), st
}

func TestExecExitCodes(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	tests := []struct {
		argv []string
		want ExitStatus
	}{
		{[]string{"true"}, ExitStatus{Code: 0}},
		{[]string{"false"}, ExitStatus{Code: 1}},
		{[]string{"sh", "-c", "exit 42"}, ExitStatus{Code: 42}},
		{[]string{"sh", "-c", "kill -9 $$"}, ExitStatus{Code: -1, Signal: "SIGKILL"}},
	}
	for _, tt := range tests {
		_, _, st := run(t, c, ExecRequest{Argv: tt.argv}, "")
		if st != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.argv, st, tt.want)
		}
	}
	if got := (ExitStatus{Code: -1, Signal: "SIGKILL"}).ShellCode(); got != 137 {
		t.Errorf("ShellCode of SIGKILL = %d, want 137", got)
	}
}

func TestExecStartErrors(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	tests := []struct {
		req      ExecRequest
		wantCode string
		wantMsg  string
	}{
		{ExecRequest{Argv: []string{"no-such-command-xyz"}}, CodeNotFound, "command not found: no-such-command-xyz"},
		{ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, CodeNotFound, "working directory /no/such/dir"},
		{ExecRequest{Argv: []string{"true"}, User: "no-such-user-xyz"}, CodeNoUser, `no such user "no-such-user-xyz"`},
		{ExecRequest{Argv: []string{"/etc/passwd"}}, CodePermission, "not executable"},
	}
	for _, tt := range tests {
		_, err := c.Exec(testCtx(t), tt.req)
		var remote *RemoteError
		if !errors.As(err, &remote) || remote.Code != tt.wantCode || !strings.Contains(remote.Message, tt.wantMsg) {
			t.Errorf("%+v: err = %v, want code %s with %q", tt.req, err, tt.wantCode, tt.wantMsg)
		}
	}
}

func TestExecStdioEnvDir(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	out, errOut, st := run(t, c, ExecRequest{Argv: []string{"sh", "-c", "cat; echo oops >&2; exit 3"}}, "line one\nline two\n")
	if out != "line one\nline two\n" || errOut != "oops\n" || st.Code != 3 {
		t.Fatalf("stdout %q stderr %q status %+v", out, errOut, st)
	}
	dir := t.TempDir()
	out, _, _ = run(t, c, ExecRequest{Argv: []string{"sh", "-c", `echo "$FOO|$PWD|$HOME"`}, Env: []string{"FOO=bar", "HOME=/h"}, Dir: dir}, "")
	if want := "bar|" + dir + "|/h\n"; out != want {
		t.Fatalf("env/dir: %q, want %q", out, want)
	}
}

func TestExecAsUser(t *testing.T) {
	requireRoot(t)
	c := newClient(t, startServer(t, &Server{}))
	out, _, st := run(t, c, ExecRequest{Argv: []string{"id", "-u"}, User: "nobody", Dir: "/"}, "")
	if st.Code != 0 || strings.TrimSpace(out) != "65534" {
		t.Fatalf("id -u as nobody: %q %+v", out, st)
	}
}

// TestExecConcurrentSessions runs many processes at once over one session,
// each with its own input and output, and checks nothing crosses over.
func TestExecConcurrentSessions(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			input := strings.Repeat(fmt.Sprintf("session %d\n", i), 2000)
			var stdout, stderr bytes.Buffer
			st, err := c.Run(testCtx(t), ExecRequest{Argv: []string{"sh", "-c", "cat; echo done-$0 >&2; exit $0", strconv.Itoa(i)}}, strings.NewReader(input), &stdout, &stderr)
			switch {
			case err != nil:
				errs <- err
			case stdout.String() != input:
				errs <- fmt.Errorf("session %d: stdout differs (%d bytes, want %d)", i, stdout.Len(), len(input))
			case stderr.String() != fmt.Sprintf("done-%d\n", i):
				errs <- fmt.Errorf("session %d: stderr %q", i, stderr.String())
			case st.Code != i:
				errs <- fmt.Errorf("session %d: exit %d", i, st.Code)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// seqChecker verifies a stream of "1\n2\n3\n..." as it arrives, so 100 MB
// need not be held in memory, and reports the first gap or corruption.
type seqChecker struct {
	next    int
	partial []byte
	err     error
	bytes   int64
}

func (s *seqChecker) Write(p []byte) (int, error) {
	s.bytes += int64(len(p))
	data := append(s.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if s.err == nil {
			s.next++
			if got := string(data[:i]); got != strconv.Itoa(s.next) {
				s.err = fmt.Errorf("line %d is %q", s.next, got)
			}
		}
		data = data[i+1:]
	}
	s.partial = append(s.partial[:0], data...)
	return len(p), nil
}

func TestExecLargeStdoutWithoutLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping 100 MB transfer in -short mode")
	}
	c := newClient(t, startServer(t, &Server{}))
	const lines = 13_000_000 // seq 1..13e6 is 109 MB
	var check seqChecker
	var stderr bytes.Buffer
	st, err := c.Run(testCtx(t), ExecRequest{Argv: []string{"seq", "1", strconv.Itoa(lines)}}, nil, &check, &stderr)
	if err != nil || st.Code != 0 {
		t.Fatalf("seq: %v %+v %s", err, st, stderr.String())
	}
	if check.err != nil || check.next != lines || len(check.partial) != 0 {
		t.Fatalf("after %d bytes: %d lines, err %v, trailing %q", check.bytes, check.next, check.err, check.partial)
	}
	if check.bytes < 100<<20 {
		t.Fatalf("only %d bytes; the test must move at least 100 MB", check.bytes)
	}
}

func TestExecSignals(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	tests := []struct {
		name   string
		script string
		signal string
		want   ExitStatus
	}{
		{"default action", "echo ready; exec sleep 30", "SIGTERM", ExitStatus{Code: -1, Signal: "SIGTERM"}},
		{"trapped", `trap "exit 7" INT; echo ready; while :; do sleep 0.05; done`, "INT", ExitStatus{Code: 7}},
		{"by number", "echo ready; exec sleep 30", "9", ExitStatus{Code: -1, Signal: "SIGKILL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.Exec(testCtx(t), ExecRequest{Argv: []string{"sh", "-c", tt.script}})
			if err != nil {
				t.Fatal(err)
			}
			ready := newLineWaiter("ready")
			done := make(chan struct{})
			var st ExitStatus
			go func() {
				defer close(done)
				st, err = p.Wait(ready, io.Discard)
			}()
			ready.wait(t)
			if err := p.Signal(tt.signal); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("process did not end after the signal")
			}
			if err != nil || st != tt.want {
				t.Fatalf("status %+v err %v, want %+v", st, err, tt.want)
			}
		})
	}
	p, err := c.Exec(testCtx(t), ExecRequest{Argv: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	if err := p.Signal("SIGBOGUS"); err == nil {
		t.Fatal("unknown signal accepted")
	}
}

// lineWaiter is a writer that signals once it has seen want.
type lineWaiter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLineWaiter(want string) *lineWaiter {
	return &lineWaiter{want: want, seen: make(chan struct{})}
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWaiter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *lineWaiter) wait(t *testing.T) {
	t.Helper()
	select {
	case <-w.seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("never saw %q; output so far %q", w.want, w.String())
	}
}

func TestExecTTYAndResize(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	p, err := c.Exec(testCtx(t), ExecRequest{
		Argv: []string{"sh", "-c", `stty size; [ -t 0 ] && echo tty; echo "term=$TERM"; read x; stty size`},
		TTY:  true, Rows: 30, Cols: 120, Term: "vt100",
	})
	if err != nil {
		t.Fatal(err)
	}
	out := newLineWaiter("term=vt100")
	done := make(chan struct{})
	var st ExitStatus
	var werr error
	go func() {
		defer close(done)
		st, werr = p.Wait(out, out)
	}()
	out.wait(t)
	if err := p.Resize(40, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	<-done
	text := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if werr != nil || st.Code != 0 || !strings.Contains(text, "30 120\ntty\n") || !strings.HasSuffix(text, "40 100\n") {
		t.Fatalf("status %+v err %v output %q", st, werr, text)
	}
}

// TestExecStdinEOFOnTTY: closing stdin of a TTY process ends a line reader.
func TestExecStdinEOFOnTTY(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	var out bytes.Buffer
	st, err := c.Run(testCtx(t), ExecRequest{Argv: []string{"cat"}, TTY: true}, strings.NewReader(""), &out, &out)
	if err != nil || st.Code != 0 {
		t.Fatalf("cat on a tty with empty stdin: %+v %v %q", st, err, out.String())
	}
}

// TestExecClientGoneKillsProcess: a host that disappears takes its process
// with it, rather than leaving it running in the guest.
func TestExecClientGoneKillsProcess(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	p, err := c.Exec(testCtx(t), ExecRequest{Argv: []string{"sh", "-c", "echo $$; exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	out := newLineWaiter("\n")
	go func() { _, _ = p.Wait(out, io.Discard) }()
	out.wait(t)
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after its client left", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// TestExecBackgroundChildDoesNotHang: a daemon started by the command keeps
// stdout open; the exec still finishes shortly after the command exits.
func TestExecBackgroundChildDoesNotHang(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	start := time.Now()
	out, _, st := run(t, c, ExecRequest{Argv: []string{"sh", "-c", "sleep 5 & echo started"}}, "")
	if out != "started\n" || st.Code != 0 {
		t.Fatalf("%q %+v", out, st)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("exec took %s: it waited for the background child", d)
	}
}

func TestSignalNumber(t *testing.T) {
	for in, want := range map[string]int{"SIGTERM": 15, "term": 15, "INT": 2, "9": 9, "SIGWINCH": 28, "nope": 0, "99": 0, "": 0} {
		if got := signalNumber(in); got != want {
			t.Errorf("signalNumber(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestExecGarbageInputFrames: a host that sends nonsense mid-exec loses its
// process, not the agent or the session.
func TestExecGarbageInputFrames(t *testing.T) {
	c := newClient(t, startServer(t, &Server{}))
	for _, junk := range [][]byte{
		{99, 0, 0, 0, 0},                     // unknown frame type
		{frameResize, 0, 0, 0, 1, 7},         // resize of the wrong size
		{frameSignal, 0, 0, 0, 2, '{', '"'},  // unreadable signal
		{frameStdin, 0x7f, 0xff, 0xff, 0xff}, // 2 GiB stdin frame
		{frameExit, 0, 0, 0, 0},              // a frame only the agent sends
	} {
		p, err := c.Exec(testCtx(t), ExecRequest{Argv: []string{"sleep", "30"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.rw.Write(junk); err != nil {
			t.Fatal(err)
		}
		done := make(chan ExitStatus, 1)
		go func() {
			st, _ := p.Wait(io.Discard, io.Discard)
			done <- st
		}()
		select {
		case st := <-done:
			if st.Signal != "SIGKILL" && st.Code != -1 {
				t.Errorf("after %v the process ended with %+v, want it killed", junk, st)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("process still running 10s after garbage %v", junk)
		}
	}
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Fatalf("session after garbage exec frames: %v", err)
	}
}
