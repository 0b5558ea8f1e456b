package ssh

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	xssh "golang.org/x/crypto/ssh"
)

func TestEnsureKeyCreatesOnceWithPrivateMode(t *testing.T) {
	dir := t.TempDir()
	path := KeyPath(dir)
	pub, err := EnsureKey(path, "banger:alice@host")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || !strings.HasSuffix(pub, " banger:alice@host") {
		t.Fatalf("public key %q", pub)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v", st, err)
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v", st.Mode())
	}
	again, err := EnsureKey(path, "other comment")
	if err != nil || again != pub {
		t.Fatalf("second EnsureKey = %q, %v; want the same key %q", again, err, pub)
	}
	// A key someone made readable is tightened rather than refused by ssh later.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureKey(path, ""); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode after repair %v", st.Mode())
	}
	// ssh-keygen agrees the pair is a pair.
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-y", "-f", path).Output()
		if err != nil || !strings.HasPrefix(pub, strings.TrimSpace(string(out))) {
			t.Fatalf("ssh-keygen -y: %q %v", out, err)
		}
	}
}

func TestEnsureKeyConcurrentCreators(t *testing.T) {
	path := KeyPath(t.TempDir())
	var wg sync.WaitGroup
	keys := make([]string, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := EnsureKey(path, "")
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if k != keys[0] {
			t.Fatalf("creators disagree: %q vs %q", k, keys[0])
		}
	}
}

// hostKey makes a public key line of kind "" (ed25519), "p256" or "p384".
func hostKey(t *testing.T, kind string) string {
	t.Helper()
	var priv any
	var err error
	switch kind {
	case "":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := xssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(xssh.MarshalAuthorizedKey(s.PublicKey())))
}

// TestKnownHostsPinning is the pinning contract: first boot records,
// restart confirms, a changed key is refused, a recreated VM replaces.
func TestKnownHostsPinning(t *testing.T) {
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	hosts := []string{"dev.banger", "172.30.0.5"}
	keyA, keyB := hostKey(t, ""), hostKey(t, "")

	res, err := kh.Pin("vm1", hosts, []string{keyA})
	if err != nil || res != PinRecorded {
		t.Fatalf("first boot: %s %v", res, err)
	}
	res, err = kh.Pin("vm1", hosts, []string{keyA})
	if err != nil || res != PinConfirmed {
		t.Fatalf("restart: %s %v", res, err)
	}
	_, err = kh.Pin("vm1", hosts, []string{keyB})
	var mm *MismatchError
	if !errors.Is(err, ErrHostKeyMismatch) || !errors.As(err, &mm) || !strings.Contains(err.Error(), "dev.banger") || !strings.Contains(err.Error(), "SHA256:") {
		t.Fatalf("changed key: %v, want a mismatch naming the VM and fingerprints", err)
	}
	if got, _ := kh.Pinned("vm1"); len(got) != 1 || got[0] != keyA {
		t.Fatalf("a refused key changed the pin: %v", got)
	}
	// Recreated: a new VM ID under the same name replaces the old pin.
	res, err = kh.Pin("vm2", hosts, []string{keyB})
	if err != nil || res != PinReplaced {
		t.Fatalf("recreate: %s %v", res, err)
	}
	if got, _ := kh.Pinned("vm1"); len(got) != 0 {
		t.Fatalf("old VM's pin survived its name being recreated: %v", got)
	}
	if got, _ := kh.Pinned("vm2"); len(got) != 1 || got[0] != keyB {
		t.Fatalf("recreated VM's pin: %v", got)
	}
	if _, err := kh.Pin("vm2", hosts, []string{keyB}); err != nil {
		t.Fatalf("recreated VM's restart: %v", err)
	}
}

func TestKnownHostsDetails(t *testing.T) {
	dir := t.TempDir()
	kh := KnownHosts{Path: filepath.Join(dir, "known_hosts")}
	handAdded := "other.example ssh-ed25519 " + strings.Fields(hostKey(t, ""))[1]
	if err := os.WriteFile(kh.Path, []byte("# my notes\n"+handAdded+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ed := hostKey(t, "")
	if _, err := kh.Pin("a", []string{"a.banger", "172.30.0.7"}, []string{ed}); err != nil {
		t.Fatal(err)
	}
	// Another VM gets a's address later: a keeps its name, loses the IP.
	if res, err := kh.Pin("b", []string{"b.banger", "172.30.0.7"}, []string{hostKey(t, "")}); err != nil || res != PinReplaced {
		t.Fatalf("address reuse: %s %v", res, err)
	}
	// A guest that gains a key type keeps its pin and adds the type; one that
	// presents none of the pinned types is refused.
	second := hostKey(t, "p256")
	if res, err := kh.Pin("a", []string{"a.banger"}, []string{ed, second}); err != nil || res != PinConfirmed {
		t.Fatalf("new key type: %s %v", res, err)
	}
	if _, err := kh.Pin("a", []string{"a.banger"}, []string{hostKey(t, "p384")}); !errors.Is(err, ErrHostKeyMismatch) {
		t.Fatalf("disjoint key types: %v", err)
	}
	b, _ := os.ReadFile(kh.Path)
	text := string(b)
	for _, want := range []string{"# my notes\n", handAdded + "\n", "a.banger " + ed + " banger-vm=a\n", "a.banger " + second + " banger-vm=a\n", "b.banger,172.30.0.7 "} {
		if !strings.Contains(text, want) {
			t.Errorf("known_hosts lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "a.banger,172.30.0.7") {
		t.Errorf("a still claims the reused address:\n%s", text)
	}
	if st, _ := os.Stat(kh.Path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	// The file is one ssh reads: ssh-keygen finds the pinned host.
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-F", "b.banger", "-f", kh.Path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "b.banger") {
			t.Errorf("ssh-keygen -F b.banger: %v\n%s", err, out)
		}
	}
	if err := kh.Forget("a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := kh.Pinned("a"); len(got) != 0 {
		t.Fatalf("Forget left %v", got)
	}
}

func TestKnownHostsConcurrentPins(t *testing.T) {
	kh := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := string(rune('a'+i)) + ".banger"
			if _, err := kh.Pin(name, []string{name}, []string{hostKey(t, "")}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(kh.Path)
	if n := strings.Count(string(b), "\n"); n != 20 {
		t.Fatalf("%d lines after 20 concurrent pins, want 20:\n%s", n, b)
	}
}

func TestClientArgsAndConfigBlock(t *testing.T) {
	args := strings.Join(ClientArgs("/k", "/kh", "dev.banger"), " ")
	for _, want := range []string{"-i /k", "UserKnownHostsFile=/kh", "StrictHostKeyChecking=yes", "HostKeyAlias=dev.banger", "IdentitiesOnly=yes"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	want := `# banger VMs, by address: ssh, scp and rsync need no DNS for *.banger.
# Save it and Include it at the top of ~/.ssh/config (before any Host):
#   banger ssh-config > ~/.ssh/banger.conf; then add: Include banger.conf
# Run it again after creating VMs, to add theirs.
Host dev.banger
    HostName 172.30.0.5
    HostKeyAlias dev.banger
# tiny.banger: no SSH host key pinned (its image runs no sshd, or it has not booted yet); use ` + "`banger vm exec -t tiny`" + `
# off.banger: no address (VM networking is off for it); use ` + "`banger vm exec -t off`" + `
Host *.banger
    User alice
    IdentityFile /home/alice/.config/banger/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /home/alice/.config/banger/known_hosts
    StrictHostKeyChecking yes
`
	if got := ConfigBlock(testConfigParams()); got != want {
		t.Fatalf("config block:\n%s\nwant:\n%s", got, want)
	}
}

func testConfigParams() ConfigParams {
	return ConfigParams{
		Domain: "banger", User: "alice",
		KeyPath: "/home/alice/.config/banger/ssh/id_ed25519", KnownHosts: "/home/alice/.config/banger/known_hosts",
		Hosts: []ConfigHost{
			{Name: "dev", IP: "172.30.0.5", SSHServer: true},
			{Name: "tiny", IP: "172.30.0.6"},
			{Name: "off"},
		},
	}
}
