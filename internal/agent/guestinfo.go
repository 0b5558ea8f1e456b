package agent

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// ManagedKeyPrefix starts the comment of every authorized_keys line banger
// installs; a new banger key replaces lines with it and leaves the rest.
const ManagedKeyPrefix = "banger:"

func (s *Server) guestInfo() Reply {
	name, err := s.hostname()
	if err != nil {
		return failure(CodeFailed, "read hostname: %v", err)
	}
	info := GuestInfo{AgentVersion: s.Version, Hostname: name, Users: s.userDB().loginUsers()}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		info.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	info.OS = osPrettyName("/etc/os-release")
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			info.UptimeSeconds, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	info.Addresses = guestAddresses()
	// A guest whose keys cannot be read or made (a read-only root) still
	// answers: it is reachable through the agent, only not by ssh.
	keys, err := s.hostKeys()
	if err != nil {
		s.logf("agent: SSH host keys: %v", err)
	}
	info.HostKeys = keys
	return Reply{OK: true, Guest: &info}
}

func osPrettyName(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

func guestAddresses() []GuestAddress {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []GuestAddress
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				out = append(out, GuestAddress{Interface: ifc.Name, CIDR: ipn.String()})
			}
		}
	}
	return out
}

// hostKeys returns the guest's SSH host public keys, creating them first if
// the guest has none: images ship without host keys so that every VM cloned
// from one gets its own, and the host asks for them before sshd's own key
// generation may have run.
func (s *Server) hostKeys() ([]string, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	dir := s.guestPath("/etc/ssh")
	keys, err := readHostKeys(dir)
	if err != nil || len(keys) > 0 {
		return keys, err
	}
	if !s.hasSSHServer() {
		return nil, nil
	}
	if err := s.generateHostKeys(dir); err != nil {
		return nil, err
	}
	return readHostKeys(dir)
}

// hasSSHServer reports whether the guest has an sshd to use host keys: a
// minimal guest (busybox) gets no /etc/ssh it never asked for. A stand-in
// guest always has "one", so the host's pinning can be exercised.
func (s *Server) hasSSHServer() bool {
	if s.Root != "" && s.Root != "/" {
		return true
	}
	for _, p := range []string{"/usr/sbin/sshd", "/sbin/sshd", "/usr/bin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

func readHostKeys(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "ssh_host_*_key.pub"))
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		key, _, _, _, err := xssh.ParseAuthorizedKey(b)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		keys = append(keys, strings.TrimSpace(string(xssh.MarshalAuthorizedKey(key))))
	}
	return keys, nil
}

// generateHostKeys makes the standard set with ssh-keygen on a real guest
// (sshd then finds every type it looks for), or one ed25519 key otherwise.
func (s *Server) generateHostKeys(dir string) error {
	if s.Root == "" || s.Root == "/" {
		if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
			if out, err := exec.Command(keygen, "-A").CombinedOutput(); err != nil {
				return fmt.Errorf("ssh-keygen -A: %v: %s", err, bytes.TrimSpace(out))
			}
			return nil
		}
	}
	return s.writeEd25519HostKey(dir)
}

// writeEd25519HostKey makes an ed25519 host key pair in dir from
// HostKeyEntropy (crypto/rand when nil), in-process: microseconds, where
// ssh-keygen's RSA key takes about half a second natively and many under
// emulation.
func (s *Server) writeEd25519HostKey(dir string) error {
	entropy := io.Reader(rand.Reader)
	if s.HostKeyEntropy != nil {
		entropy = s.HostKeyEntropy()
	}
	// NewKeyFromSeed rather than GenerateKey: the key must follow from the
	// entropy given, which newer Go versions may not promise for GenerateKey.
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(entropy, seed); err != nil {
		return fmt.Errorf("generate host key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	block, err := xssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	sshPub, err := xssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	base := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := writeFileAtomic(base, pem.EncodeToMemory(block), 0o600, -1, -1); err != nil {
		return err
	}
	return writeFileAtomic(base+".pub", xssh.MarshalAuthorizedKey(sshPub), 0o644, -1, -1)
}

func (s *Server) authorizeKey(req AuthorizeKeyRequest) Reply {
	key, comment, _, _, err := xssh.ParseAuthorizedKey([]byte(req.Key))
	if err != nil {
		return failure(CodeInvalid, "not an SSH public key: %v", err)
	}
	acct, err := s.userDB().lookup(req.User)
	if err != nil {
		return failureFrom(err)
	}
	line := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(key)))
	if comment != "" {
		line += " " + comment
	}
	sshDir := s.guestPath(filepath.Join(acct.Home, ".ssh"))
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return failureFrom(fmt.Errorf("create %s: %w", sshDir, err))
	}
	// sshd ignores keys in a .ssh others can write to.
	if err := os.Chmod(sshDir, 0o700); err != nil {
		return failureFrom(fmt.Errorf("chmod %s: %w", sshDir, err))
	}
	if err := os.Lchown(sshDir, acct.UID, acct.GID); err != nil && os.Geteuid() == 0 {
		return failureFrom(fmt.Errorf("chown %s: %w", sshDir, err))
	}
	path := filepath.Join(sshDir, "authorized_keys")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return failureFrom(err)
	}
	var out []string
	added := true
	for _, l := range strings.Split(string(old), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if l == line {
			added = false
		} else if f := strings.Fields(l); len(f) >= 3 && strings.HasPrefix(f[2], ManagedKeyPrefix) && strings.HasPrefix(comment, ManagedKeyPrefix) {
			// An older banger key of this owner: replaced, not kept.
			continue
		}
		out = append(out, l)
	}
	if added {
		out = append(out, line)
	}
	uid, gid := acct.UID, acct.GID
	if os.Geteuid() != 0 {
		uid, gid = -1, -1
	}
	if err := writeFileAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o600, uid, gid); err != nil {
		return failureFrom(err)
	}
	return Reply{OK: true, AuthorizeKey: &AuthorizeKeyResult{User: acct.Name, Home: acct.Home, Added: added}}
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory, so a reader never sees half a file. uid/gid -1 leave the
// owner alone.
func writeFileAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".banger-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // fails harmlessly once renamed
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && (uid >= 0 || gid >= 0) {
		err = f.Chown(uid, gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// powerDelay lets the reply reach the host before the guest goes down.
const powerDelay = 200 * time.Millisecond

func (s *Server) power(req PowerRequest) Reply {
	if req.Action != PowerOff && req.Action != PowerReboot {
		return failure(CodeInvalid, "unknown power action %q: use %q or %q", req.Action, PowerOff, PowerReboot)
	}
	if s.Power == nil {
		return failure(CodeFailed, "this agent has no power control configured")
	}
	time.AfterFunc(powerDelay, func() {
		if err := s.Power(req.Action); err != nil {
			s.logf("agent: %s: %v", req.Action, err)
		}
	})
	return Reply{OK: true}
}

// SystemPower powers the real guest off or reboots it: through systemd when
// it is PID 1 (units stop cleanly), else with reboot(2) after a sync.
func SystemPower(action string) error {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if ctl, err := exec.LookPath("systemctl"); err == nil {
			return exec.Command(ctl, action).Run()
		}
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if action == PowerReboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	return unix.Reboot(cmd)
}
