package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// drainIdle is how long output may stay silent after the process exited
// before the agent stops waiting for EOF: a background child that inherited
// stdout would otherwise hold the exec open forever. Only time spent waiting
// for the pipe counts, never time spent waiting for a slow host.
const drainIdle = 250 * time.Millisecond

// stdinQueue bounds the stdin chunks buffered for a process that is not
// reading, so that signal and resize frames behind them still get through
// until it fills.
const stdinQueue = 32

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// execProc is one running process and the pipes the agent holds.
type execProc struct {
	cmd     *exec.Cmd
	tty     bool
	ptmx    *os.File // TTY: the master side
	stdin   *os.File // pipe mode: write end of stdin
	outputs []outputPipe
	exited  atomic.Bool
}

type outputPipe struct {
	typ byte
	f   *os.File
}

func (s *Server) serveExec(stream *yamux.Stream, fr *frameReader, fw *frameWriter, req ExecRequest) {
	p, err := s.startProcess(req)
	if err != nil {
		_ = fw.writeJSON(frameReply, failureFrom(err))
		return
	}
	if err := fw.writeJSON(frameReply, Reply{OK: true}); err != nil {
		p.kill(syscall.SIGKILL)
		p.wait()
		return
	}

	// Input: stdin, EOF, signals and resizes from the host. The stream
	// ending before the process did means the host is gone: the process
	// goes with it.
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		if err := p.pumpInput(fr); err != nil && !p.exited.Load() {
			if !errors.Is(err, io.EOF) {
				s.logf("agent: exec %q: input: %v", req.Argv, err)
			}
			p.kill(syscall.SIGKILL)
			// Nobody will read the output now; fail its writes at once.
			_ = stream.SetWriteDeadline(time.Unix(1, 0))
		}
	}()

	var wg sync.WaitGroup
	var relayErr atomic.Value
	for _, out := range p.outputs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.pumpOutput(fw, out); err != nil {
				relayErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	status := p.wait()
	wg.Wait()
	if p.ptmx != nil {
		p.ptmx.Close()
	}
	if msg, ok := relayErr.Load().(string); ok {
		status.Error = "relay output: " + msg
	}
	if err := fw.writeJSON(frameExit, status); err != nil {
		s.logf("agent: exec %q: send exit: %v", req.Argv, err)
	}
	p.closeInput()
	// The host closes its side once it has the exit frame; don't keep the
	// stream open for a host that never does.
	_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-inputDone
}

// startProcess resolves the user, environment and command and starts it.
func (s *Server) startProcess(req ExecRequest) (*execProc, error) {
	acct, err := s.execAccount(req.User)
	if err != nil {
		return nil, err
	}
	argv := req.Argv
	if len(argv) == 0 {
		shell := acct.Shell
		if shell == "" {
			shell = "/bin/sh"
		}
		argv = []string{shell, "-l"}
	}
	env := execEnv(acct, req)
	path, err := lookPath(argv[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	dir := req.Dir
	if dir == "" {
		dir = acct.Home
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = "/"
		}
	} else if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("working directory %s: %w", dir, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: working directory %s is not a directory", errInvalid, dir)
	}

	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: dir, SysProcAttr: &syscall.SysProcAttr{}}
	if cred := credentialFor(acct, s.userDB()); cred != nil {
		cmd.SysProcAttr.Credential = cred
	}
	p := &execProc{cmd: cmd, tty: req.TTY}
	if req.TTY {
		err = p.startTTY(req)
	} else {
		err = p.startPipes()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return p, nil
}

func (s *Server) execAccount(user string) (account, error) {
	db := s.userDB()
	if user == "" {
		acct, err := db.byUID(os.Geteuid())
		if err != nil {
			// An agent whose own uid has no passwd entry still runs commands.
			return account{Name: "root", UID: os.Geteuid(), GID: os.Getegid(), Home: "/", Shell: "/bin/sh"}, nil
		}
		return acct, nil
	}
	acct, err := db.lookup(user)
	if err != nil {
		return account{}, err
	}
	if euid := os.Geteuid(); euid != 0 && acct.UID != euid {
		return account{}, fmt.Errorf("%w: the agent runs as uid %d and cannot run commands as %s", os.ErrPermission, euid, acct.Name)
	}
	return acct, nil
}

// credentialFor switches to acct when the agent is root; nil keeps the
// agent's own identity (setgroups would fail for a non-root agent).
func credentialFor(acct account, db userDB) *syscall.Credential {
	if os.Geteuid() != 0 || acct.UID == 0 {
		return nil
	}
	return &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID), Groups: db.groups(acct.Name, acct.GID)}
}

func execEnv(acct account, req ExecRequest) []string {
	shell := acct.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	env := []string{
		"PATH=" + defaultPath,
		"HOME=" + acct.Home,
		"USER=" + acct.Name,
		"LOGNAME=" + acct.Name,
		"SHELL=" + shell,
	}
	if req.TTY {
		term := req.Term
		if term == "" {
			term = "xterm-256color"
		}
		env = append(env, "TERM="+term)
	}
	// Later entries win; keep one of each name so the child sees no
	// duplicates.
	merged := map[string]int{}
	var out []string
	for _, kv := range append(env, req.Env...) {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := merged[name]; ok {
			out[i] = kv
			continue
		}
		merged[name] = len(out)
		out = append(out, kv)
	}
	return out
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// lookPath finds file in the child's PATH, not the agent's.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("command %s: %w", file, err)
		}
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command not found: %s: %w", file, os.ErrNotExist)
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable: %w", path, os.ErrPermission)
	}
	return nil
}

func (p *execProc) startPipes() error {
	p.cmd.SysProcAttr.Setpgid = true
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return err
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = inR, outW, errW
	err = p.cmd.Start()
	// The child has its copies; ours must go so EOF can happen.
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return err
	}
	p.stdin = inW
	p.outputs = []outputPipe{{frameStdout, outR}, {frameStderr, errR}}
	return nil
}

func (p *execProc) startTTY(req ExecRequest) error {
	ptmx, tty, err := pty.Open()
	if err != nil {
		return err
	}
	defer tty.Close()
	rows, cols := req.Rows, req.Cols
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		ptmx.Close()
		return err
	}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = tty, tty, tty
	// A new session with the pty as controlling terminal, so ^C, job
	// control and SIGWINCH work as in a terminal.
	p.cmd.SysProcAttr.Setsid = true
	p.cmd.SysProcAttr.Setctty = true
	p.cmd.SysProcAttr.Ctty = 0
	if err := p.cmd.Start(); err != nil {
		ptmx.Close()
		return err
	}
	p.ptmx = ptmx
	p.outputs = []outputPipe{{frameStdout, ptmx}}
	return nil
}

// pumpOutput relays one output until EOF, or until it has been idle for
// drainIdle after the process exited.
func (p *execProc) pumpOutput(fw *frameWriter, out outputPipe) error {
	defer func() {
		if !p.tty {
			out.f.Close()
		}
	}()
	buf := make([]byte, frameHeader+chunkSize)
	for {
		if p.exited.Load() {
			_ = out.f.SetReadDeadline(time.Now().Add(drainIdle))
		}
		n, err := out.f.Read(buf[frameHeader:])
		if n > 0 {
			buf[0] = out.typ
			binary.BigEndian.PutUint32(buf[1:frameHeader], uint32(n))
			fw.mu.Lock()
			_, werr := fw.w.Write(buf[:frameHeader+n])
			fw.mu.Unlock()
			if werr != nil {
				return werr
			}
		}
		if err != nil {
			// EIO is how a pty master says every slave fd is closed.
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// pumpInput applies host frames until the stream ends. It returns io.EOF
// when the host closed the stream.
func (p *execProc) pumpInput(fr *frameReader) error {
	queue := make(chan []byte, stdinQueue)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w := p.stdinWriter()
		failed := false
		for chunk := range queue {
			if failed {
				continue // drain: the process stopped reading for good
			}
			if chunk == nil {
				p.endStdin()
				continue
			}
			if _, err := w.Write(chunk); err != nil {
				failed = true
			}
		}
	}()
	defer func() {
		close(queue)
		<-writerDone
	}()
	for {
		typ, payload, err := fr.next()
		if err != nil {
			return err
		}
		switch typ {
		case frameStdin:
			queue <- append([]byte(nil), payload...)
		case frameStdinEOF:
			queue <- nil
		case frameSignal:
			var msg signalMsg
			if err := json.Unmarshal(payload, &msg); err != nil {
				return fmt.Errorf("malformed signal frame: %w", err)
			}
			sig := signalNumber(msg.Signal)
			if sig <= 0 {
				return fmt.Errorf("unknown signal %q", msg.Signal)
			}
			p.kill(syscall.Signal(sig))
		case frameResize:
			if len(payload) != 4 {
				return fmt.Errorf("malformed resize frame of %d bytes", len(payload))
			}
			if p.ptmx != nil {
				_ = pty.Setsize(p.ptmx, &pty.Winsize{
					Rows: binary.BigEndian.Uint16(payload[0:2]),
					Cols: binary.BigEndian.Uint16(payload[2:4]),
				})
			}
		default:
			return fmt.Errorf("unexpected frame type %d during exec", typ)
		}
	}
}

func (p *execProc) stdinWriter() io.Writer {
	if p.tty {
		return p.ptmx
	}
	return p.stdin
}

// endStdin closes the process's input. A terminal has no EOF of its own; it
// gets the EOF character, which ends input for a program reading lines.
func (p *execProc) endStdin() {
	if p.tty {
		_, _ = p.ptmx.Write([]byte{4})
		return
	}
	_ = p.stdin.Close()
}

func (p *execProc) closeInput() {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
}

// kill signals the process group (the whole job the command started), or
// the process alone if the group is gone.
func (p *execProc) kill(sig syscall.Signal) {
	if p.exited.Load() || p.cmd.Process == nil {
		return
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}

// wait reaps the process and wakes output pumps that are still waiting.
func (p *execProc) wait() ExitStatus {
	err := p.cmd.Wait()
	p.exited.Store(true)
	for _, out := range p.outputs {
		_ = out.f.SetReadDeadline(time.Now().Add(drainIdle))
	}
	if p.cmd.ProcessState == nil {
		return ExitStatus{Code: -1, Error: fmt.Sprintf("wait: %v", err)}
	}
	st := ExitStatus{Code: p.cmd.ProcessState.ExitCode()}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		st.Code = -1
		st.Signal = unix.SignalName(ws.Signal())
	}
	return st
}

// signalNumber maps "SIGTERM", "TERM" or "15" to a signal number; 0 when
// unknown.
func signalNumber(name string) int {
	name = strings.ToUpper(strings.TrimSpace(name))
	if n := unix.SignalNum(name); n != 0 {
		return int(n)
	}
	if n := unix.SignalNum("SIG" + name); n != 0 {
		return int(n)
	}
	var n int
	if _, err := fmt.Sscan(name, &n); err == nil && n > 0 && n < 65 {
		return n
	}
	return 0
}
