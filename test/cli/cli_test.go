// Package cli_test runs banger's command-line behaviour as scripts against
// real binaries (testscript): each script is a user's session.
package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/banger-dev/banger/internal/disk"
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

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			// Short paths: Unix socket paths are limited to 108 bytes.
			dir, err := os.MkdirTemp("", "bgs")
			if err != nil {
				return err
			}
			env.Defer(func() {
				// A script that fails stops before its `vm delete`; its
				// VMMs outlive the daemon by design.
				testbin.KillProcessesUnder(dir)
				_ = os.RemoveAll(dir)
			})
			env.Setenv("PATH", bins.Dir+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("HOME", filepath.Join(dir, "home"))
			env.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
			env.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
			env.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
			env.Setenv("BANGER_SYSTEM_ROOT", filepath.Join(dir, "root"))
			env.Setenv("BANGER_DAEMON", bins.Bangerd)
			env.Setenv("BANGER_FAKE_GUEST", bins.Agent)
			env.Setenv("FAKE_FIRECRACKER", bins.FakeFirecracker)
			env.Setenv("BANGER_FC_SPEC", testbin.SpecPath())
			env.Setenv("TESTBIN", bins.Dir)
			env.Setenv("STATE", filepath.Join(dir, "state", "banger"))
			env.Setenv("CONFIG", filepath.Join(dir, "config", "banger"))
			env.Setenv("ROOT", filepath.Join(dir, "root"))
			// VM networking off by default: scripts run in the host's
			// network namespace, which tests must never change.
			cfgDir := filepath.Join(dir, "config", "banger")
			if err := os.MkdirAll(cfgDir, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("[network]\nenabled = \"off\"\n"), 0o600); err != nil {
				return err
			}
			env.Defer(func() { stopDaemon(env) })
			// Custom commands run binaries with the script's environment.
			env.Values["env"] = append([]string(nil), env.Vars...)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// build-daemon VERSION COMMIT OUT builds bangerd with another stamp.
			"build-daemon": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 3 {
					ts.Fatalf("usage: build-daemon VERSION COMMIT OUT")
				}
				ts.Check(testbin.GoBuild(args[2], "./cmd/bangerd", testbin.Stamp(args[0], args[1], "2025-12-31T00:00:00Z")))
			},
			// wait-daemon waits until a daemon answers on the socket.
			"wait-daemon": func(ts *testscript.TestScript, neg bool, args []string) {
				for range 200 {
					cmd := exec.Command(bins.Banger, "daemon", "status")
					cmd.Env = ts.Value("env").([]string)
					if cmd.Run() == nil {
						return
					}
					time.Sleep(25 * time.Millisecond)
				}
				ts.Fatalf("no daemon answered within 5s")
			},
			// exitcode N CMD ARGS... runs a command and asserts its exact exit code.
			"exitcode": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: exitcode N cmd args...")
				}
				name := args[1]
				if _, err := os.Stat(filepath.Join(bins.Dir, name)); err == nil {
					name = filepath.Join(bins.Dir, name)
				}
				cmd := exec.Command(name, args[2:]...)
				cmd.Env = ts.Value("env").([]string)
				out, err := cmd.CombinedOutput()
				if cmd.ProcessState == nil {
					ts.Fatalf("run %s: %v", name, err)
				}
				ts.Logf("%s", out)
				got := cmd.ProcessState.ExitCode()
				if fmt.Sprint(got) != args[0] {
					ts.Fatalf("%s exited %d, want %s", strings.Join(args[1:], " "), got, args[0])
				}
			},
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "mkfs":
				_, err := exec.LookPath("mkfs.ext4")
				return err == nil, nil
			case "room16t":
				// 16 TiB free in the temp dir: a --disk 16T would really grow.
				free, err := disk.FreeBytes(os.TempDir())
				return err == nil && free >= 16<<40, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

// stopDaemon ends the daemon a script may have started, by the PID it
// recorded in its lock file.
func stopDaemon(env *testscript.Env) {
	cmd := exec.Command(bins.Banger, "daemon", "stop")
	cmd.Env = env.Vars
	_ = cmd.Run()
}
