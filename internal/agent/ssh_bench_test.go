package agent

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The same measurements through OpenSSH on loopback, for comparison with
// the agent channel (docs/performance.md). They need root (sshd's privilege
// separation), sshd and ssh; without them they skip and say why.

// sshTarget runs a private sshd on a loopback port and returns the ssh
// arguments that reach it, over one shared master connection when shared
// is set (like the agent's long-lived session).
func sshTarget(b *testing.B, shared bool) []string {
	b.Helper()
	sshd, err1 := exec.LookPath("sshd")
	if err1 != nil {
		sshd, err1 = exec.LookPath("/usr/sbin/sshd")
	}
	client, err2 := exec.LookPath("ssh")
	keygen, err3 := exec.LookPath("ssh-keygen")
	switch {
	case err1 != nil || err2 != nil || err3 != nil:
		b.Skip("skipping: needs sshd, ssh and ssh-keygen (packages openssh-server, openssh-client)")
	case os.Geteuid() != 0:
		b.Skip("skipping: sshd needs root for privilege separation")
	}
	dir, err := os.MkdirTemp("", "bgssh")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// SetEnv HOME: Debian's bash sources ~/.bashrc for every ssh command,
	// and a developer's .bashrc (pyenv, nvm) can cost more than everything
	// measured here; the agent runs commands without a shell.
	if err := os.Mkdir(filepath.Join(dir, "home"), 0o700); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %[2]s/host\nAuthorizedKeysFile %[2]s/authorized_keys\nPidFile %[2]s/sshd.pid\nSetEnv HOME=%[2]s/home\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nLogLevel ERROR\n", port, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	args := []string{client, "-q", "-p", fmt.Sprint(port), "-i", filepath.Join(dir, "user"),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"}
	if shared {
		args = append(args, "-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(dir, "ctl"), "-o", "ControlPersist=60")
	}
	args = append(args, "root@127.0.0.1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := exec.Command(args[0], append(args[1:], "true")...).Run(); err == nil {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("sshd on port %d never answered: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if shared {
		b.Cleanup(func() {
			_ = exec.Command(args[0], append(args[1:len(args)-1], "-O", "exit", args[len(args)-1])...).Run()
		})
	}
	return args
}

// BenchmarkSSHExecTrueShared: `ssh host true` over an open master
// connection (the fair comparison with BenchmarkExecTrue).
func BenchmarkSSHExecTrueShared(b *testing.B) {
	args := sshTarget(b, true)
	for b.Loop() {
		if out, err := exec.Command(args[0], append(args[1:], "true")...).CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

// BenchmarkSSHExecTrueNewConnection: `ssh host true` with a full handshake.
func BenchmarkSSHExecTrueNewConnection(b *testing.B) {
	args := sshTarget(b, false)
	for b.Loop() {
		if out, err := exec.Command(args[0], append(args[1:], "true")...).CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

// BenchmarkSSHCopyPut: 256 MiB host → "guest" as `ssh host 'cat > file'`.
func BenchmarkSSHCopyPut(b *testing.B) {
	dir := benchDir(b)
	src := benchFile(b, dir)
	args := sshTarget(b, true)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(args[0], append(args[1:], "cat > "+shellQuote(filepath.Join(dir, "dst.bin")))...)
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		f.Close()
		if err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

// BenchmarkSSHCopyGet: 256 MiB "guest" → host as `ssh host cat file`.
func BenchmarkSSHCopyGet(b *testing.B) {
	dir := benchDir(b)
	src := benchFile(b, dir)
	args := sshTarget(b, true)
	b.SetBytes(benchFileSize)
	b.ResetTimer()
	for b.Loop() {
		out, err := os.Create(filepath.Join(dir, "back.bin"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(args[0], append(args[1:], "cat "+shellQuote(src))...)
		cmd.Stdout = out
		err = cmd.Run()
		out.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
