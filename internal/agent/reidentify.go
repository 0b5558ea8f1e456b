package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// identity is the guest side of OpIdentity: apply the identity through
// Setup, then replace the SSH host keys (after the RNG reseed, so the new
// keys owe nothing to the snapshot's random state) and report them.
func (s *Server) identity(id Identity) Reply {
	if err := id.Validate(); err != nil {
		return failure(CodeInvalid, "%v", err)
	}
	if s.Setup == nil {
		return failure(CodeFailed, "this agent has no guest setup configured, so it cannot take a new identity")
	}
	iface, setupErr := s.Setup.ApplyIdentity(id)
	keys, keysErr := s.regenerateHostKeys()
	if err := errors.Join(setupErr, keysErr); err != nil {
		return failureFrom(fmt.Errorf("take identity %s: %w", id.Hostname, err))
	}
	return Reply{OK: true, Identity: &IdentityResult{Hostname: id.Hostname, Interface: iface, HostKeys: keys}}
}

// regenerateHostKeys replaces the guest's SSH host keys, when it has any
// or an SSH server to use them, with one new ed25519 key, has a running
// sshd load it, and returns the new public key. One ed25519 key rather than
// ssh-keygen -A's set: the RSA key costs about half a second natively and
// several seconds under TCG, which a warm create cannot afford, and every
// SSH client of the last decade speaks ed25519. sshd skips the default key
// files that are missing.
func (s *Server) regenerateHostKeys() ([]string, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	dir := s.guestPath("/etc/ssh")
	old, err := filepath.Glob(filepath.Join(dir, "ssh_host_*_key*"))
	if err != nil {
		return nil, err
	}
	had := false
	for _, p := range old {
		if !strings.HasSuffix(p, "_key") && !strings.HasSuffix(p, "_key.pub") {
			continue
		}
		had = true
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove old host key: %w", err)
		}
	}
	if !had && !s.hasSSHServer() {
		return nil, nil
	}
	if err := s.writeEd25519HostKey(dir); err != nil {
		return nil, err
	}
	keys, err := readHostKeys(dir)
	if err != nil {
		return nil, err
	}
	return keys, s.reloadSSHServer()
}

// reloadSSHServer sends a running sshd SIGHUP, on which it re-executes
// itself and loads the new host keys (what `systemctl reload ssh` does);
// open SSH sessions are separate processes and stay up. The daemon is found
// through its pid file, checked to still name an sshd before it is
// signalled. No pid file means no sshd is running: nothing to do.
func (s *Server) reloadSSHServer() error {
	for _, pidFile := range []string{"/run/sshd.pid", "/var/run/sshd.pid"} {
		b, err := os.ReadFile(s.guestPath(pidFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "sshd" {
			continue // stale pid file
		}
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("reload sshd (pid %d): %w", pid, err)
		}
		return nil
	}
	return nil
}
