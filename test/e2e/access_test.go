package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runIn runs banger with stdin.
func (h *host) runIn(stdin io.Reader, args ...string) (string, string, int) {
	cmd := exec.Command(bins.Banger, args...)
	cmd.Env = h.env
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func (h *host) knownHosts() string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "config", "banger", "known_hosts"))
	return string(b)
}

// TestExecThroughHybridVsock drives `banger vm exec` through the CLI, the
// daemon, the fake Firecracker's hybrid vsock and the real agent.
func TestExecThroughHybridVsock(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")

	out, errOut, code := h.run("vm", "exec", "dev", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if out != "out\n" || errOut != "err\n" || code != 3 {
		t.Fatalf("exec: stdout %q stderr %q exit %d", out, errOut, code)
	}
	// stdin streams through, and a lot of output arrives intact.
	input := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	out, errOut, code = h.runIn(strings.NewReader(input), "vm", "exec", "dev", "--", "sha256sum")
	sum := sha256.Sum256([]byte(input))
	if code != 0 || !strings.HasPrefix(out, hex.EncodeToString(sum[:])) {
		t.Fatalf("stdin: %q %q exit %d", out, errOut, code)
	}
	out, _, code = h.run("vm", "exec", "dev", "--", "sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' z")
	if code != 0 || len(out) != 20_000_000 || strings.Trim(out, "z") != "" {
		t.Fatalf("20 MB of output: %d bytes, exit %d", len(out), code)
	}
	// Signals end a process the way a shell reports it.
	_, _, code = h.run("vm", "exec", "dev", "--", "sh", "-c", "kill -TERM $$")
	if code != 128+15 {
		t.Fatalf("self-terminated process: exit %d, want 143", code)
	}
	// A TTY when asked for one.
	out, _, code = h.run("vm", "exec", "-t", "dev", "--", "sh", "-c", "[ -t 1 ] && stty size")
	if code != 0 || strings.TrimSpace(out) != "24 80" {
		t.Fatalf("tty: %q exit %d", out, code)
	}
	// Errors are one clear sentence.
	_, errOut, code = h.run("vm", "exec", "dev", "--", "no-such-command-here")
	if code != 127 || !strings.Contains(errOut, "command not found: no-such-command-here") {
		t.Fatalf("missing command: %q exit %d", errOut, code)
	}
	_, errOut, code = h.run("vm", "exec", "nope", "--", "true")
	if code != 1 || !strings.Contains(errOut, `no VM named "nope"`) {
		t.Fatalf("missing VM: %q exit %d", errOut, code)
	}
	h.must("vm", "stop", "dev")
	_, errOut, code = h.run("vm", "exec", "dev", "--", "true")
	if code != 1 || !strings.Contains(errOut, `vm "dev" is stopped, not running`) || !strings.Contains(errOut, "banger vm start dev") {
		t.Fatalf("stopped VM: %q exit %d", errOut, code)
	}
}

func TestCopyAndSyncThroughHybridVsock(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	work := t.TempDir()
	src := filepath.Join(work, "tree")
	for name, content := range map[string]string{"a.txt": "alpha\n", "sub/b.bin": strings.Repeat("\x00\x01", 300000)} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// Into the VM (a directory, then a file into it) and back out.
	_, errOut, code := h.run("vm", "cp", src, "dev:/tmp-copy")
	if code != 0 || !strings.Contains(errOut, "copied 2 files, 2 directories") {
		t.Fatalf("cp to vm: %q exit %d", errOut, code)
	}
	back := filepath.Join(work, "back")
	if _, errOut, code := h.run("vm", "cp", "dev:/tmp-copy", back); code != 0 {
		t.Fatalf("cp from vm: %q exit %d", errOut, code)
	}
	for _, name := range []string{"a.txt", "sub/b.bin"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(back, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s did not survive the round trip: %v", name, err)
		}
		if st, _ := os.Stat(filepath.Join(back, name)); st.Mode().Perm() != 0o640 {
			t.Fatalf("%s mode %v, want 0640", name, st.Mode())
		}
	}
	_, errOut, code = h.run("vm", "cp", "dev:/no/such/file", work)
	if code != 1 || !strings.Contains(errOut, "no such file or directory") {
		t.Fatalf("missing guest file: %q exit %d", errOut, code)
	}
	_, errOut, code = h.run("vm", "cp", "a", "b")
	if code != 1 || !strings.Contains(errOut, "write the VM side as NAME:PATH") {
		t.Fatalf("no VM side: %q exit %d", errOut, code)
	}

	// File sync: inside home copied, outside refused, the rest still copied.
	home := filepath.Join(h.dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[user]\n\tname = dev\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(home, "escape")); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := h.run("vm", "sync", "dev", "~/.gitconfig", "/etc/passwd", "~/../x", "~/escape")
	if code != 1 || !strings.Contains(out, "~/.gitconfig -> ") {
		t.Fatalf("sync: stdout %q stderr %q exit %d", out, errOut, code)
	}
	for _, want := range []string{"sync /etc/passwd: it is outside your home directory", "sync ~/../x: it climbs out", "sync ~/escape: it leads to /, outside your home directory"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("sync stderr lacks %q:\n%s", want, errOut)
		}
	}
	got := filepath.Join(work, "gitconfig")
	if _, errOut, code := h.run("vm", "cp", "dev:~/.gitconfig", got); code != 0 {
		t.Fatalf("fetch synced file: %q", errOut)
	}
	if b, _ := os.ReadFile(got); string(b) != "[user]\n\tname = dev\n" {
		t.Fatalf("synced file holds %q", b)
	}
}

// TestHostKeyPinning: first boot records the guest's host key, a restart
// confirms it, a mismatch is refused (the VM fails to boot), and a
// recreated VM replaces the pin.
func TestHostKeyPinning(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	first := h.vm("dev")
	kh := h.knownHosts()
	if !strings.Contains(kh, "dev.banger ssh-ed25519 ") || !strings.Contains(kh, "banger-vm="+first.ID) {
		t.Fatalf("known_hosts after first boot:\n%s", kh)
	}
	h.must("vm", "restart", "dev")
	if got := h.knownHosts(); got != kh {
		t.Fatalf("restart changed known_hosts:\n%s\nwas:\n%s", got, kh)
	}
	key, err := os.ReadFile(filepath.Join(h.dir, "config", "banger", "ssh", "id_ed25519.pub"))
	if err != nil || !strings.HasPrefix(string(key), "ssh-ed25519 ") {
		t.Fatalf("owner key: %q %v", key, err)
	}

	// Someone else's key in the pin: the VM must not come up trusted.
	fields := strings.Fields(strings.Split(kh, "\n")[0])
	forged := strings.Replace(kh, fields[2], "AAAAC3NzaC1lZDI1NTE5AAAAIBmOq3yDjzp2sOuRy+0bE8Z3ZqYxCzVZGd3T8dWC0m4H", 1)
	if err := os.WriteFile(filepath.Join(h.dir, "config", "banger", "known_hosts"), []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	h.must("vm", "stop", "dev")
	_, errOut, code := h.run("vm", "start", "dev")
	if code == 0 || !strings.Contains(errOut, "host key mismatch") || !strings.Contains(errOut, "refusing to trust it") {
		t.Fatalf("start with a mismatched pin: exit %d: %s", code, errOut)
	}
	if vm := h.vm("dev"); vm.State != "failed" || vm.PID != 0 {
		t.Fatalf("VM after a refused host key: %+v", vm)
	}

	// Recreated under the same name: a new machine, a new pin.
	h.must("vm", "delete", "--force", "dev")
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	second := h.vm("dev")
	kh2 := h.knownHosts()
	if strings.Contains(kh2, first.ID) || !strings.Contains(kh2, "banger-vm="+second.ID) || strings.Count(kh2, "dev.banger ") != 1 {
		t.Fatalf("known_hosts after recreate:\n%s", kh2)
	}
	h.must("vm", "delete", "--force", "dev")
}

func TestSSHWithoutAddressAndSSHConfig(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "dev", "--memory", "128", "--disk", "64M")
	_, errOut, code := h.run("vm", "ssh", "dev")
	if code != 1 || !strings.Contains(errOut, `vm "dev" has no IP address yet`) || !strings.Contains(errOut, "banger vm exec -t dev") {
		t.Fatalf("ssh without an address: %q exit %d", errOut, code)
	}
	out := h.must("ssh-config")
	for _, want := range []string{"Host *.banger\n", "IdentityFile " + filepath.Join(h.dir, "config", "banger", "ssh", "id_ed25519"), "StrictHostKeyChecking yes", "UserKnownHostsFile " + filepath.Join(h.dir, "config", "banger", "known_hosts")} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, out)
		}
	}
}
