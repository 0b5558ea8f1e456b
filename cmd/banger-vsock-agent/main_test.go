package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"net"
	"net/netip"
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
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--listen", "tcp:1"}, {"--setup", "maybe"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code == 0 {
			t.Errorf("run(%q) exited 0, want failure", args)
		}
	}
}

// startAgent runs the static binary as a stand-in guest on a unix socket.
func startAgent(t *testing.T, bin string, env ...string) (sock string, cmd *exec.Cmd, exited chan error, stderr *bytes.Buffer) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "vsock_1024.sock")
	cmd = exec.Command(bin, "--listen", "unix:"+sock)
	cmd.Env = append(os.Environ(), env...)
	stderr = &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return sock, cmd, exited, stderr
}

// TestBinaryServesAndStopsOnSIGTERM runs the static binary as a real process:
// it answers health and exec on a unix socket and exits 0 on SIGTERM,
// removing the socket it created.
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
	sock, cmd, exited, stderr := startAgent(t, bin)

	conn := dialWithRetry(t, sock, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := agent.Health(ctx, conn)
	conn.Close()
	if err != nil {
		t.Fatalf("health: %v (agent stderr: %s)", err, stderr.String())
	}
	if info.AgentVersion != "dev" || info.Hostname == "" {
		t.Fatalf("health = %+v, want version dev and a hostname", info)
	}
	c, err := agent.NewClient(ctx, dialWithRetry(t, sock, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// As bangerd and the CLI do it: open the exec stream, wrap it.
	var out bytes.Buffer
	var st agent.ExitStatus
	stream, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{Argv: []string{"sh", "-c", "echo hi; exit 5"}}})
	if err == nil {
		p := agent.NewProcess(stream)
		_ = p.CloseStdin()
		st, err = p.Wait(&out, &out)
	}
	_ = c.Close()
	if err != nil || st.Code != 5 || out.String() != "hi\n" {
		t.Fatalf("exec: %+v %v %q", st, err, out.String())
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

// TestStandInGuest: a unix-socket agent keeps guest files in a scratch root
// beside its socket, applies the fake's boot args there only, derives a
// stable host key from the VM's vsock path, and powers off by exiting.
func TestStandInGuest(t *testing.T) {
	bin := buildAgent(t)
	env := []string{"BANGER_FAKE_BOOT_ARGS=console=ttyS0 banger.name=standin banger.dns=10.0.0.1", "BANGER_FAKE_VSOCK_HOST=/run/x/vms/abc/vsock.sock"}
	sock, _, exited, stderr := startAgent(t, bin, env...)
	root := filepath.Join(filepath.Dir(sock), "root")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.NewClient(ctx, dialWithRetry(t, sock, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	info, err := c.GuestInfo(ctx)
	if err != nil || len(info.HostKeys) != 1 {
		t.Fatalf("guest info: %+v %v (stderr %s)", info, err, stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc", "hostname")); err != nil || string(b) != "standin\n" {
		t.Fatalf("stand-in hostname file: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key.pub")); err != nil {
		t.Fatalf("host key not under the stand-in root: %v", err)
	}
	if h, err := c.Health(ctx); err != nil || h.Hostname != "standin" {
		t.Fatalf("stand-in health hostname %q, %v; want standin", h.Hostname, err)
	}

	// A new identity (a fork of this stand-in) renames it and rewrites its
	// host key, under its root only. A stand-in's key follows from its VM
	// (its vsock path) alone, so the rewritten key is the one this VM's
	// next boot presents again; a fork, another VM, gets another key (the
	// fork e2e tests check that).
	id := agent.Identity{Hostname: "standin-fork", MAC: "02:fc:00:00:00:09",
		Address: netip.MustParsePrefix("172.30.0.9/24"), Gateway: netip.MustParseAddr("172.30.0.1"),
		MachineID: "0123456789abcdef0123456789abcdef", Seed: []byte("seed")}
	res, err := c.Reidentify(ctx, id)
	if err != nil || len(res.HostKeys) != 1 || res.HostKeys[0] != info.HostKeys[0] {
		t.Fatalf("reidentify: %+v %v, want the VM's own key %s", res, err, info.HostKeys[0])
	}
	if h, err := c.Health(ctx); err != nil || h.Hostname != "standin-fork" {
		t.Fatalf("health after reidentify: %q %v", h.Hostname, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc", "machine-id")); err != nil || string(b) != id.MachineID+"\n" {
		t.Fatalf("stand-in machine-id: %q %v", b, err)
	}
	// No host code powers a guest off through the agent (the VMM's ACPI
	// button does), but the op exists and a stand-in must honour it.
	stream, err := c.Open(ctx, agent.Request{Op: agent.OpPower, Power: &agent.PowerRequest{Action: agent.PowerOff}})
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("poweroff exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stand-in did not exit on poweroff")
	}

	// The same VM identity gives the same key after a "reboot".
	sock2, _, _, _ := startAgent(t, bin, env...)
	c2, err := agent.NewClient(ctx, dialWithRetry(t, sock2, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c2.Close() }()
	info2, err := c2.GuestInfo(ctx)
	if err != nil || info2.HostKeys[0] != info.HostKeys[0] {
		t.Fatalf("host key changed across stand-in boots: %v vs %v (%v)", info2.HostKeys, info.HostKeys, err)
	}
}

func TestSeedReaderIsDeterministic(t *testing.T) {
	read := func(id string) []byte {
		t.Setenv("BANGER_FAKE_VSOCK_HOST", id)
		b := make([]byte, 100)
		if _, err := io.ReadFull(standInEntropy("x"), b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read("a"), read("a")) || bytes.Equal(read("a"), read("b")) {
		t.Fatal("stand-in entropy must depend on the VM identity and only on it")
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
