package tui_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/test/testbin"
)

// TestTUIInTmux drives the real `banger tui` in a tmux pane against a real
// daemon on the fake Firecracker: create a VM through the form, watch it
// reach running, stop it, delete it, quit. It asserts on what a person
// would see (tmux capture-pane), and logs each screen.
func TestTUIInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary and runs a daemon; skipped with -short")
	}
	for _, tool := range []string{"tmux", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install tmux e2fsprogs)", tool)
		}
	}
	bins, err := testbin.Build()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bins.Remove)

	// Short paths: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "bgt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	env := append(os.Environ(),
		"PATH="+bins.Dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"BANGER_SYSTEM_ROOT="+filepath.Join(dir, "root"),
		"BANGER_DAEMON="+bins.Bangerd,
		"BANGER_FAKE_GUEST="+bins.Agent,
		// The fake Firecracker runs in its VM's run dir, from which no
		// walk up finds the spec beside the repository.
		"BANGER_FC_SPEC="+testbin.SpecPath(),
		"LANG=C.UTF-8",
		"NO_COLOR=1",
	)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		// Whatever happened, leave no VM process or daemon behind.
		for _, args := range [][]string{{"vm", "delete", "--force", "tui1"}, {"daemon", "stop"}} {
			cmd := exec.Command(bins.Banger, args...)
			cmd.Env = env
			_ = cmd.Run()
		}
	})

	confDir := filepath.Join(dir, "config", "banger")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Networking off: this test runs in the host's network namespace.
	conf := fmt.Sprintf("vmm = \"firecracker\"\n[firecracker]\nbinary = %q\n[network]\nenabled = \"off\"\n", bins.FakeFirecracker)
	if err := os.WriteFile(filepath.Join(confDir, "config.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs.ext4")
	run("mkfs.ext4", "-q", "-F", rootfs, "64M")
	run(bins.Banger, "image", "import", "default", "--kernel", bins.Agent, "--rootfs", rootfs)

	// A private tmux server; the shell keeps the pane after banger exits so
	// its exit status and any last words can be read.
	sock := filepath.Join(dir, "tmux.sock")
	tmux := func(args ...string) string {
		t.Helper()
		return run("tmux", append([]string{"-u", "-S", sock}, args...)...)
	}
	t.Cleanup(func() {
		cmd := exec.Command("tmux", "-S", sock, "kill-server")
		_ = cmd.Run()
	})
	// target is the session the helpers below talk to; each open starts a
	// new one (killing the last session would stop the server under us).
	target := ""
	open := func(session, command string) {
		t.Helper()
		tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24",
			"sh", "-c", command+`; echo "[banger exited $?]"; sleep 600`)
		target = session
	}
	screen := func() string { return tmux("capture-pane", "-p", "-t", target) }
	waitFor := func(step string, pattern string) string {
		t.Helper()
		re := regexp.MustCompile(pattern)
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := screen()
			if re.MatchString(s) {
				t.Logf("%s:\n%s", step, s)
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the screen never matched %q; it shows:\n%s", step, pattern, s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	keys := func(k ...string) {
		t.Helper()
		tmux(append([]string{"send-keys", "-t", target}, k...)...)
	}
	text := func(s string) {
		t.Helper()
		tmux("send-keys", "-t", target, "-l", s)
	}

	// Plain `banger` on a terminal is the TUI too.
	open("plain", bins.Banger)
	waitFor("plain banger", `(?s)● live.*No VMs yet`)
	keys("q")
	waitFor("plain banger quit", `\[banger exited 0\]`)

	open("tui", bins.Banger+" tui")
	waitFor("empty list, live", `(?s)● live.*No VMs yet`)

	keys("n")
	waitFor("create form", `Create a VM`)
	text("tui1")
	keys("Tab", "Tab")
	text("1")
	keys("Tab")
	text("256")
	keys("Tab")
	text("128M")
	waitFor("form filled", `(?s)Name +tui1.*Image +‹ default image ›.*vCPUs +1.*Memory +256.*Disk +128M`)
	keys("Enter")

	s := waitFor("running", `▸ tui1 +running`)
	if !strings.Contains(s, "1 vCPU · 256 MiB memory · 128M disk · image default") {
		t.Errorf("details pane lacks the spec:\n%s", s)
	}

	// e runs one command line through the guest agent and shows its output.
	keys("e")
	waitFor("exec prompt", `exec in tui1`)
	text("echo hi-from-guest; exit")
	keys("Enter")
	waitFor("exec output", `(?s)exec in tui1: echo hi-from-guest; exit · exit 0.*hi-from-guest`)
	keys("Escape")
	waitFor("exec closed", `▸ tui1 +running`)

	// Enter opens a shell. This VM has no network (so no ssh), which is
	// also where a busybox guest without sshd lands: the shell comes from
	// the agent. The arithmetic tells the command's output from its echo.
	keys("Enter")
	// Type only once the shell shows its prompt: keys sent while the TUI
	// hands the terminal over can land in the TUI (seen once in CI).
	waitFor("shell prompt", `(?m)[#$] *$`)
	text("echo hi-from-guest-$((6*7))")
	keys("Enter")
	waitFor("shell output", `hi-from-guest-42`)
	text("exit")
	keys("Enter")
	s = waitFor("shell closed, TUI back", `▸ tui1 +running`)
	if strings.Contains(s, "✗") {
		t.Errorf("the TUI reports an error after a clean shell exit:\n%s", s)
	}

	keys("x")
	waitFor("stopped", `(?s)▸ tui1 +stopped.*tui1: stopped`)

	keys("d")
	waitFor("delete asks", `Delete VM tui1, its disk and its snapshots\? This cannot be undone\. \[y/N\]`)
	keys("y")
	s = waitFor("deleted", `(?s)No VMs yet.*tui1: deleted`)
	if regexp.MustCompile(`▸ tui1`).MatchString(s) {
		t.Errorf("tui1 still listed after delete:\n%s", s)
	}

	keys("q")
	waitFor("quit", `\[banger exited 0\]`)
}
