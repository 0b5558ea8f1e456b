package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/test/testbin"
)

// jailedHost is a host whose config runs Firecracker under the (fake)
// jailer. The daemon runs as root here, so it launches the jailer through
// privileged.Local in-process: the same staging and checks the root helper
// applies for an unprivileged daemon.
func jailedHost(t *testing.T) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the jailer starts as root; run `make test` as root")
	}
	h := newHost(t)
	bin := filepath.Join(h.dir, "jailer-bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	jailer, err := testbin.FakeJailer(bin, bins.Agent)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(h.dir, "config", "banger", "config.toml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "[firecracker]\n", "[firecracker]\njailer = "+strconv.Quote(jailer)+"\n", 1))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	h.must("daemon", "stop") // pick up the new config
	return h
}

// jailOf is where a VM's jail is in this host's user-mode layout.
func (h *host) jailOf(vm api.VM) string {
	return filepath.Join(h.stateDir(), "jail", filepath.Base(bins.FakeFirecracker), vm.ID)
}

// endByPID kills pid if it still runs: jailed VMMs do not carry the run
// dir in their command line, so killVMMs cannot find them.
func endByPID(pid int) {
	if pid > 0 && !isZombie(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestJailedVMLifecycle(t *testing.T) {
	h := jailedHost(t)
	h.must("vm", "create", "--name", "jailed", "--memory", "128", "--disk", "64M")
	vm := h.vm("jailed")
	t.Cleanup(func() { endByPID(vm.PID) })
	if vm.State != api.VMRunning {
		t.Fatalf("jailed VM: %+v", vm)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(vm.PID) + "/cmdline")
	if err != nil || !strings.HasPrefix(string(cmdline), "/fake-firecracker\x00--id="+vm.ID+"\x00") {
		t.Fatalf("the VM's VMM is not the jail's firecracker: %q %v", cmdline, err)
	}
	jail := h.jailOf(vm)
	if _, err := os.Stat(filepath.Join(jail, "root", "api.socket")); err != nil {
		t.Fatalf("no API socket in the jail: %v", err)
	}

	// A daemon killed under a jailed VM: the next one adopts it from its jail.
	daemon := h.daemonPID()
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "daemon to die", func() bool { return syscall.Kill(daemon, 0) != nil })
	h.must("vm", "list")
	if got := h.vm("jailed"); got.State != api.VMRunning || got.PID != vm.PID {
		t.Fatalf("jailed VM not adopted: %+v (was pid %d)", got, vm.PID)
	}

	h.must("vm", "stop", "jailed")
	if _, err := os.Lstat(jail); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("jail left after stop: %v", err)
	}
	h.must("vm", "start", "jailed")
	vm = h.vm("jailed")
	if vm.State != api.VMRunning {
		t.Fatalf("restart: %+v", vm)
	}
	h.must("vm", "delete", "--force", "jailed")
	eventually(t, 10*time.Second, "the VMM to end", func() bool { return isZombie(vm.PID) })
	if _, err := os.Lstat(jail); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("jail left after delete: %v", err)
	}
}
