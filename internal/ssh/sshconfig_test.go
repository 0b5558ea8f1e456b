package ssh

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sshG runs `ssh -G -F cfg host`: OpenSSH resolves the configuration for
// host and prints it, without connecting or resolving the name.
func sshG(t *testing.T, cfg, host string) map[string]string {
	t.Helper()
	out, err := exec.Command("ssh", "-G", "-F", cfg, host).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G %s: %v\n%s", host, err, out)
	}
	opts := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if _, seen := opts[k]; !seen {
			opts[k] = v
		}
	}
	return opts
}

func TestConfigBlockAsOpenSSHReadsIt(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("the OpenSSH client (ssh) is not installed")
	}
	cfg := filepath.Join(t.TempDir(), "banger.conf")
	if err := os.WriteFile(cfg, []byte(ConfigBlock(testConfigParams())), 0o600); err != nil {
		t.Fatal(err)
	}
	// A VM with an address and an sshd: its address, the pin under its name.
	dev := sshG(t, cfg, "dev.banger")
	for k, want := range map[string]string{
		"hostname": "172.30.0.5", "hostkeyalias": "dev.banger", "user": "alice",
		"identityfile": "/home/alice/.config/banger/ssh/id_ed25519", "identitiesonly": "yes",
		"userknownhostsfile": "/home/alice/.config/banger/known_hosts", "stricthostkeychecking": "true",
	} {
		if dev[k] != want {
			t.Errorf("dev.banger: %s = %q, want %q", k, dev[k], want)
		}
	}
	// VMs without an address or sshd, and later ones: banger's key and pins
	// by name (which then needs DNS).
	for _, host := range []string{"tiny.banger", "later.banger"} {
		o := sshG(t, cfg, host)
		if o["hostname"] != host || o["user"] != "alice" || o["stricthostkeychecking"] != "true" {
			t.Errorf("%s: hostname %q user %q strict %q", host, o["hostname"], o["user"], o["stricthostkeychecking"])
		}
	}
}

// TestConfigBlockConnectsWithRealClients runs a real sshd on loopback as
// the "VM" and reaches it with ssh and scp through the generated config
// alone, by a name nothing resolves, with the host key checked against
// banger's pin.
func TestConfigBlockConnectsWithRealClients(t *testing.T) {
	sshd := requireSSHD(t)
	dir, err := os.MkdirTemp("", "bssh") // short: sshd paths in messages
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	hostKeyPath := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKeyPath).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	hostPub, err := os.ReadFile(hostKeyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := KeyPath(dir)
	pub, err := EnsureKey(keyPath, "banger:test")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kh := KnownHosts{Path: KnownHostsPath(dir)}
	// As guest setup pins a VM: by its name and its address.
	if _, err := kh.Pin("vm-1", []string{"dev.banger", "127.0.0.1"}, []string{strings.TrimSpace(string(hostPub))}); err != nil {
		t.Fatal(err)
	}
	port := startSSHD(t, sshd, dir, hostKeyPath, authorized)

	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	block := ConfigBlock(ConfigParams{
		Domain: "banger", User: me.Username, KeyPath: keyPath, KnownHosts: kh.Path,
		Hosts: []ConfigHost{{Name: "dev", IP: "127.0.0.1", SSHServer: true}},
	})
	cfg := filepath.Join(dir, "ssh_config")
	// The port is the test's: a VM's sshd listens on 22.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("Host *\n    Port %d\n    BatchMode yes\n    GlobalKnownHostsFile /dev/null\n", port)+block), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-F", cfg, "dev.banger", "echo", "hello from the vm").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello from the vm") {
		t.Fatalf("ssh dev.banger: %v\n%s", err, out)
	}
	src, dst := filepath.Join(dir, "src.txt"), filepath.Join(dir, "dst.txt")
	if err := os.WriteFile(src, []byte("copied"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "scp", "-F", cfg, src, "dev.banger:"+dst).CombinedOutput(); err != nil {
		t.Fatalf("scp to dev.banger: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "copied" {
		t.Fatalf("scp result: %q, %v", b, err)
	}

	// The pin is what is checked: another key under the VM's name fails.
	other := KnownHosts{Path: filepath.Join(dir, "other_known_hosts")}
	if _, err := other.Pin("vm-1", []string{"dev.banger", "127.0.0.1"}, []string{hostKey(t, "")}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(string(mustRead(t, cfg)), kh.Path, other.Path)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.CommandContext(ctx, "ssh", "-F", cfg, "dev.banger", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "REMOTE HOST IDENTIFICATION HAS CHANGED") && !strings.Contains(string(out), "Host key verification failed") {
		t.Fatalf("ssh with a different pinned key: %v\n%s", err, out)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requireSSHD returns sshd's path, or skips when this machine cannot run
// one for the test (sshd needs root and its privilege-separation dir).
func requireSSHD(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running sshd needs root")
	}
	for _, tool := range []string{"ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (openssh-client)", tool)
		}
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/sshd"); serr != nil {
			t.Skip("sshd is not installed (openssh-server)")
		}
		sshd = "/usr/sbin/sshd"
	}
	if st, err := os.Stat("/run/sshd"); err != nil || !st.IsDir() {
		t.Skip("sshd's privilege-separation directory /run/sshd is missing")
	}
	return sshd
}

// startSSHD runs sshd in the foreground on a free loopback port and stops
// it (by its PID) at cleanup.
func startSSHD(t *testing.T, sshd, dir, hostKey, authorized string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
Subsystem sftp internal-sftp
`, port, hostKey, authorized)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", confPath)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %d: %v\n%s", port, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
