package vmmproc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// capsEnv makes the test binary a stand-in daemon (see TestMain): it
// records its own capability sets and spawns a stand-in VMM that records
// its own.
const capsEnv = "VMMPROC_TEST_CAPS"

func spawnReportingCaps(dir string) error {
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "daemon"), self, 0o644); err != nil {
		return err
	}
	out := filepath.Join(dir, "vmm")
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		return err
	}
	s, err := Spawn(Command("/bin/cat", []string{"/proc/self/status"}, nil), out, Config{Name: "cat"})
	if err != nil {
		return err
	}
	select {
	case <-s.Done():
		return nil
	case <-time.After(20 * time.Second):
		return fmt.Errorf("the stand-in VMM did not exit")
	}
}

// capLine returns the hex value of field (e.g. "CapEff") in a
// /proc/PID/status text.
func capLine(status, field string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestVMMDoesNotInheritTheDaemonsAmbientCaps: bangerd.service gives the
// daemon CAP_NET_BIND_SERVICE as an ambient capability, and the VMM it
// started held it too (CapEff 0x400, found by the systemd tier). Here the
// test binary plays the daemon, run by setpriv as nobody with that ambient
// capability, and spawns /bin/cat as the VMM.
func TestVMMDoesNotInheritTheDaemonsAmbientCaps(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the stand-in daemon as another uid with an ambient capability")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	// Somewhere nobody can read the binary and write the reports.
	dir, err := os.MkdirTemp("", "vmmproc-caps")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "daemon.test")
	copyExecutable(t, bin)

	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service", "--", bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), capsEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stand-in daemon: %v\n%s", err, out)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	daemon, vmm := read("daemon"), read("vmm")
	const bindService = "0000000000000400"
	if got := capLine(daemon, "CapAmb"); got != bindService {
		t.Fatalf("the stand-in daemon's ambient set is %q, want %s: the test did not set it up", got, bindService)
	}
	for _, field := range []string{"CapEff", "CapPrm", "CapAmb"} {
		if got := capLine(vmm, field); got != "0000000000000000" {
			t.Errorf("the VMM's %s is %q, want none (the daemon's %s)", field, got, capLine(daemon, field))
		}
	}
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
