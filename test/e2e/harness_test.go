// Package e2e runs the real banger binaries end to end. The tests in this
// file use the fake Firecracker with the real guest agent as its stand-in
// guest, so CLI → daemon → driver → agent runs for real minus the hypervisor.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/test/testbin"
)

var bins testbin.Set

func TestMain(m *testing.M) {
	var err error
	bins, err = testbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// host is one user-mode banger installation in a temporary directory.
type host struct {
	t   testing.TB
	dir string
	env []string
}

func newHost(t testing.TB, extraEnv ...string) *host {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed; needed to make a test rootfs")
	}
	dir, err := os.MkdirTemp("", "bge")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, dir: dir}
	h.env = append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"BANGER_SYSTEM_ROOT="+filepath.Join(dir, "root"),
		"BANGER_DAEMON="+bins.Bangerd,
		"BANGER_FAKE_GUEST="+bins.Agent,
		"BANGER_FC_SPEC="+testbin.SpecPath(),
	)
	h.env = append(h.env, extraEnv...)
	cfgDir := filepath.Join(dir, "config", "banger")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("vmm = \"firecracker\"\n[firecracker]\nbinary = %q\n[vm]\nboot_timeout = \"20s\"\nstop_timeout = \"5s\"\n[network]\nenabled = \"off\"\n", bins.FakeFirecracker)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.run("daemon", "stop")
		h.killVMMs()
		_ = os.RemoveAll(dir)
	})
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rootfs, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	h.must("image", "import", "default", "--kernel", bins.Agent, "--rootfs", rootfs)
	return h
}

// run executes banger and returns stdout, stderr and the exit code.
func (h *host) run(args ...string) (string, string, int) {
	cmd := exec.Command(bins.Banger, args...)
	cmd.Env = h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func (h *host) must(args ...string) string {
	h.t.Helper()
	out, errOut, code := h.run(args...)
	if code != 0 {
		log, _ := os.ReadFile(filepath.Join(h.stateDir(), "bangerd.log"))
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		h.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log tail:\n%s", strings.Join(args, " "), code, out, errOut, log)
	}
	return out
}

func (h *host) vm(name string) api.VM {
	h.t.Helper()
	var vm api.VM
	if err := json.Unmarshal([]byte(h.must("vm", "show", name, "--json")), &vm); err != nil {
		h.t.Fatal(err)
	}
	return vm
}

func (h *host) daemonPID() int {
	h.t.Helper()
	var st struct {
		Info api.DaemonInfo `json:"info"`
	}
	if err := json.Unmarshal([]byte(h.must("daemon", "status", "--json")), &st); err != nil {
		h.t.Fatal(err)
	}
	return st.Info.PID
}

func (h *host) runDir() string   { return filepath.Join(h.dir, "run", "banger") }
func (h *host) stateDir() string { return filepath.Join(h.dir, "state", "banger") }

// vmmPIDs lists live processes started from this host's runtime dir: the
// VMMs (and their stand-in guests) this test launched.
func (h *host) vmmPIDs() []int { return testbin.ProcessesUnder(h.runDir()) }

func isZombie(pid int) bool { return testbin.IsZombie(pid) }

// killVMMs ends VMM processes this test started, by PID, if any survived.
func (h *host) killVMMs() { testbin.KillProcessesUnder(h.runDir()) }

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// entries lists a directory's names ("" entries when it does not exist).
func entries(dir string) []string {
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
