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

// ConfigBlock is the `banger ssh-config` output: a Host block for
// ~/.ssh/config that makes `ssh NAME.DOMAIN` use banger's key and pins.
func ConfigBlock(domain, user, keyPath, knownHosts string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# banger VMs; add to ~/.ssh/config (or Include a file holding it)\n")
	fmt.Fprintf(&b, "Host *.%s\n", domain)
	if user != "" {
		fmt.Fprintf(&b, "    User %s\n", user)
	}
	fmt.Fprintf(&b, "    IdentityFile %s\n", keyPath)
	fmt.Fprintf(&b, "    IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", knownHosts)
	fmt.Fprintf(&b, "    StrictHostKeyChecking yes\n")
	return b.String()
}
