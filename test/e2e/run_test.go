package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// vmNames lists the host's VMs.
func (h *host) vmNames() []string {
	h.t.Helper()
	var list api.VMList
	if err := json.Unmarshal([]byte(h.must("vm", "list", "--json")), &list); err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, vm := range list.VMs {
		names = append(names, vm.Name)
	}
	return names
}

var runShape = []string{"--vcpus", "1", "--memory", "256", "--disk", "128M"}

func runArgs(extra ...string) []string {
	return append(append([]string{"run"}, runShape...), extra...)
}

func TestRunPassesExitCodeAndRemovesVM(t *testing.T) {
	h := newHost(t)
	out, errOut, code := h.run(runArgs("--", "sh", "-c", "echo from-run; exit 7")...)
	if code != 7 || out != "from-run\n" {
		t.Fatalf("run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if names := h.vmNames(); len(names) != 0 {
		t.Fatalf("VMs left after run: %v", names)
	}
	// A command that is not there is 127, and the VM goes too.
	if _, _, code := h.run(runArgs("--", "no-such-command")...); code != 127 {
		t.Fatalf("missing command: exit %d", code)
	}
	if names := h.vmNames(); len(names) != 0 {
		t.Fatalf("VMs left after a failed run: %v", names)
	}
}

func TestRunCopiesInAndOut(t *testing.T) {
	h := newHost(t)
	in := filepath.Join(h.dir, "in.txt")
	if err := os.WriteFile(in, []byte("payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(h.dir, "back.txt")
	h.must(runArgs("--cp", in+":/in.txt", "--out", "/in.txt:"+back, "--", "true")...)
	if b, err := os.ReadFile(back); err != nil || string(b) != "payload\n" {
		t.Fatalf("copied back %q, %v", b, err)
	}
	if _, errOut, code := h.run(runArgs("--cp", "/nonexistent:/x", "--", "true")...); code != 1 || !bytes.Contains([]byte(errOut), []byte("cannot copy /nonexistent")) {
		t.Fatalf("missing input: exit %d, %s", code, errOut)
	}
	if names := h.vmNames(); len(names) != 0 {
		t.Fatalf("VMs left: %v", names)
	}
}

func TestRunKeep(t *testing.T) {
	h := newHost(t)
	_, errOut, code := h.run(runArgs("--keep", "--name", "kept", "--", "true")...)
	if code != 0 {
		t.Fatalf("run --keep: exit %d: %s", code, errOut)
	}
	vm := h.vm("kept")
	if vm.State != api.VMRunning || vm.Labels[api.LabelCreator] != "run" {
		t.Fatalf("kept VM: %+v", vm)
	}
	// A run under the name of a VM that exists fails and leaves that VM alone.
	if _, errOut, code := h.run(runArgs("--name", "kept", "--", "true")...); code != 1 || !strings.Contains(errOut, `a VM named "kept" already exists`) {
		t.Fatalf("run over an existing VM: exit %d: %s", code, errOut)
	}
	if vm := h.vm("kept"); vm.State != api.VMRunning {
		t.Fatalf("the existing VM is %s after a run with its name", vm.State)
	}
	h.must("vm", "delete", "--force", "kept")
}

// An interrupted run still removes its VM, for SIGINT (Ctrl-C) and SIGTERM.
func TestRunInterruptRemovesVM(t *testing.T) {
	h := newHost(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		started := filepath.Join(h.dir, "started-"+sig.String())
		cmd := exec.Command(bins.Banger, runArgs("--name", "victim", "--", "sh", "-c", "touch '"+started+"'; sleep 600")...)
		cmd.Env = h.env
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the command to start", func() bool {
			_, err := os.Stat(started)
			return err == nil
		})
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("banger run did not end after %s", sig)
		}
		if code := cmd.ProcessState.ExitCode(); code != 128+int(sig) {
			t.Errorf("%s: exit %d, want %d; stderr: %s", sig, code, 128+int(sig), errOut.String())
		}
		if names := h.vmNames(); len(names) != 0 {
			t.Fatalf("%s: VMs left after an interrupted run: %v (stderr: %s)", sig, names, errOut.String())
		}
	}
}

// Ctrl-C while the VM is still booting: the create is abandoned and the VM
// removed all the same.
func TestRunInterruptDuringCreateRemovesVM(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "booting")
	slow := filepath.Join(t.TempDir(), "slow-guest")
	script := "#!/bin/sh\ntouch '" + marker + "'\nsleep 5\nexec '" + bins.Agent + "' \"$@\"\n"
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, "BANGER_FAKE_GUEST="+slow)
	cmd := exec.Command(bins.Banger, runArgs("--name", "early", "--", "true")...)
	cmd.Env = h.env
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the guest to start booting", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("banger run did not end after SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit %d, want 130; stderr: %s", code, errOut.String())
	}
	eventually(t, 30*time.Second, "no VMs", func() bool { return len(h.vmNames()) == 0 })
}
