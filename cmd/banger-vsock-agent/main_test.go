package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
)

// buildAgent compiles this command the way the release does (CGO_ENABLED=0)
// into a temp dir.
func buildAgent(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: go toolchain not in PATH")
	}
	bin := filepath.Join(t.TempDir(), program)
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if got := stdout.String(); !strings.HasPrefix(got, "banger-vsock-agent dev (commit ") {
		t.Fatalf("--version printed %q", got)
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--listen", "tcp:1"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code == 0 {
			t.Errorf("run(%q) exited 0, want failure", args)
		}
	}
}

func TestDefaultListenAddr(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		path, want string
		wantErr    bool
	}{
		{write("set", "console=ttyS0 banger.agent_port=2048\n"), "vsock:2048", false},
		{write("unset", "console=ttyS0\n"), "vsock:1024", false},
		{write("bad", "banger.agent_port=x\n"), "", true},
		{filepath.Join(dir, "missing"), "vsock:1024", false},
	}
	for _, tt := range tests {
		got, err := defaultListenAddr(tt.path)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("defaultListenAddr(%s) = %q, %v; want %q, err=%v", filepath.Base(tt.path), got, err, tt.want, tt.wantErr)
		}
	}
}

// TestBinaryServesAndStopsOnSIGTERM runs the static binary as a real process:
// it answers health on a unix socket and exits 0 on SIGTERM, removing the
// socket it created.
func TestBinaryServesAndStopsOnSIGTERM(t *testing.T) {
	bin := buildAgent(t)
	if f, err := elf.Open(bin); err == nil {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("agent binary is dynamically linked; the guest may have no libc")
			}
		}
		f.Close()
	}

	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	conn := dialWithRetry(t, sock, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := agent.Health(ctx, conn)
	conn.Close()
	if err != nil {
		t.Fatalf("health: %v (agent stderr: %s)", err, stderr.String())
	}
	if info.AgentVersion != "dev" || info.Hostname == "" {
		t.Fatalf("health = %+v, want version dev and a hostname", info)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v, want status 0 (stderr: %s)", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent still running 10s after SIGTERM")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind after exit (stat: %v)", sock, err)
	}
}

func dialWithRetry(t *testing.T, path string, within time.Duration) net.Conn {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent socket %s not answering after %s: %v", path, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
