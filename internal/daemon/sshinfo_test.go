package daemon

import (
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	xssh "golang.org/x/crypto/ssh"

	"github.com/banger-dev/banger/internal/ssh"
)

// A VM "runs sshd" for `vm ssh` and `ssh-config` exactly when guest setup
// pinned its host keys, which it does only for a guest that reported some.
func TestSSHServerPinnedFollowsTheVMsPins(t *testing.T) {
	kh := ssh.KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	if sshServerPinned(kh.Path, "vm-1") {
		t.Fatal("no known_hosts file yet, but a VM counts as running sshd")
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(xssh.MarshalAuthorizedKey(signer.PublicKey())))
	if _, err := kh.Pin("vm-1", []string{"dev.banger", "172.30.0.5"}, []string{key}); err != nil {
		t.Fatal(err)
	}
	if !sshServerPinned(kh.Path, "vm-1") {
		t.Error("vm-1's pinned host key not seen")
	}
	if sshServerPinned(kh.Path, "vm-2") {
		t.Error("vm-2 has no pin, but counts as running sshd")
	}
}
