// Package ssh holds banger's side of SSH access to VMs: the owner's banger
// key pair, the banger-managed known_hosts file that pins each VM's host
// keys, and the options banger gives the system ssh client. It never speaks
// the SSH protocol itself; `banger vm ssh` runs the system client.
package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	xssh "golang.org/x/crypto/ssh"
)

// KeyPath is where the owner's banger private key lives; the public key is
// KeyPath+".pub".
func KeyPath(configDir string) string { return filepath.Join(configDir, "ssh", "id_ed25519") }

// KnownHostsPath is banger's own known_hosts file.
func KnownHostsPath(configDir string) string { return filepath.Join(configDir, "known_hosts") }

// EnsureKey returns the public key (one authorized_keys line) of the key
// pair at path, creating an ed25519 pair on first use. The private key is
// kept at 0600 (ssh refuses a key others can read); creation is safe
// against a concurrent EnsureKey in another process, which may win.
func EnsureKey(path, comment string) (string, error) {
	if pub, err := readPublic(path); err == nil {
		return pub, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create SSH key directory: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	block, err := xssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", err
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		return "", err
	}
	pubLine := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(signer.PublicKey())))
	if comment != "" {
		pubLine += " " + comment
	}
	// Public half first: a reader that finds the private key also finds it.
	if err := writeExclusive(path+".pub", []byte(pubLine+"\n"), 0o644); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	if err := writeExclusive(path, pem.EncodeToMemory(block), 0o600); err != nil {
		if errors.Is(err, os.ErrExist) {
			return readPublic(path)
		}
		return "", err
	}
	// The .pub may be from a racing creator whose private key lost; make
	// it match the private key that won.
	if err := os.WriteFile(path+".pub", []byte(pubLine+"\n"), 0o644); err != nil {
		return "", err
	}
	return pubLine, nil
}

// readPublic derives the public key from the private key, so a stale or
// missing .pub cannot put the wrong key into a guest.
func readPublic(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("SSH key %s is readable by others and cannot be fixed: %w", path, err)
		}
	}
	signer, err := xssh.ParsePrivateKey(b)
	if err != nil {
		return "", fmt.Errorf("SSH key %s: %w", path, err)
	}
	line := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(signer.PublicKey())))
	if pub, err := os.ReadFile(path + ".pub"); err == nil {
		if f := strings.Fields(string(pub)); len(f) >= 3 && f[0]+" "+f[1] == line {
			return line + " " + strings.Join(f[2:], " "), nil
		}
	}
	return line, nil
}

// writeExclusive creates path with data, failing with os.ErrExist if it is
// already there; the file appears whole or not at all.
func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-key-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // the key stays linked at path
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// link(2) fails if path exists, unlike rename.
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return nil
}

// ClientArgs are the options banger gives the system ssh client for a VM:
// banger's key only, banger's known_hosts only, strict checking, and the
// VM's DNS name as the key alias so the pin holds even if its address
// changes.
func ClientArgs(keyPath, knownHosts, alias string) []string {
	return []string{
		"-i", keyPath,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + alias,
	}
}

// ConfigHost is one VM in the `banger ssh-config` output.
type ConfigHost struct {
	Name string
	// IP is the VM's leased address; "" when it has none.
	IP string
	// SSHServer is true when banger pinned the VM's SSH host keys at a boot,
	// which happens only for a guest that runs an sshd.
	SSHServer bool
}

// ConfigParams is what ConfigBlock writes.
type ConfigParams struct {
	Domain, User        string
	KeyPath, KnownHosts string
	Hosts               []ConfigHost
}

// ConfigBlock is the `banger ssh-config` output for ~/.ssh/config. Each VM
// with an address and an sshd gets a Host block naming that address, so
// ssh, scp and rsync reach NAME.DOMAIN without the host resolving banger's
// domain (it does only with systemd-resolved); HostKeyAlias keeps the check
// against the key pinned for the name. A closing *.DOMAIN block gives every
// VM banger's key and pins; for VMs created later it needs the name to
// resolve, or the file generated again.
func ConfigBlock(p ConfigParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# banger VMs, by address: ssh, scp and rsync need no DNS for *.%s.\n", p.Domain)
	fmt.Fprintf(&b, "# Save it and Include it at the top of ~/.ssh/config (before any Host):\n")
	fmt.Fprintf(&b, "#   banger ssh-config > ~/.ssh/banger.conf; then add: Include banger.conf\n")
	fmt.Fprintf(&b, "# Run it again after creating VMs, to add theirs.\n")
	for _, h := range p.Hosts {
		name := h.Name + "." + p.Domain
		switch {
		case h.IP == "":
			fmt.Fprintf(&b, "# %s: no address (VM networking is off for it); use `banger vm exec -t %s`\n", name, h.Name)
		case !h.SSHServer:
			fmt.Fprintf(&b, "# %s: no SSH host key pinned (its image runs no sshd, or it has not booted yet); use `banger vm exec -t %s`\n", name, h.Name)
		default:
			fmt.Fprintf(&b, "Host %s\n    HostName %s\n    HostKeyAlias %s\n", name, h.IP, name)
		}
	}
	fmt.Fprintf(&b, "Host *.%s\n", p.Domain)
	if p.User != "" {
		fmt.Fprintf(&b, "    User %s\n", p.User)
	}
	fmt.Fprintf(&b, "    IdentityFile %s\n", p.KeyPath)
	fmt.Fprintf(&b, "    IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", p.KnownHosts)
	fmt.Fprintf(&b, "    StrictHostKeyChecking yes\n")
	return b.String()
}
