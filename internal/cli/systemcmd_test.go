package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/paths"
)

// runSystem runs `banger system ARGS` with h and returns stdout, stderr and
// the error.
func runSystem(t *testing.T, h systemHost, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	app := &App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Build: buildinfo.Info{Version: "v0.1.0", Commit: "0123456789abcdef", BuiltAt: "2026-04-28T20:45:50Z"}, IsTerminal: func() bool { return false }}
	cmd := newSystemCmdWith(app, &globalFlags{}, h)
	cmd.SetArgs(args)
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func testHost(t *testing.T, euid int) (systemHost, string) {
	t.Helper()
	bin := t.TempDir()
	for _, n := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return systemHost{
		euid:           func() int { return euid },
		executable:     func() (string, error) { return filepath.Join(bin, "banger"), nil },
		getenv:         func(k string) string { return map[string]string{"SUDO_USER": "alice"}[k] },
		systemdRunning: func() bool { return false },
		lookupOwner: func(name string) (install.Owner, error) {
			if name != "alice" {
				return install.Owner{}, errors.New("no such user " + name)
			}
			return install.Owner{User: "alice", UID: 4242, GID: 4343, Group: "alice", Home: "/home/alice"}, nil
		},
		teardownNetwork: func(context.Context, paths.Layout) error {
			t.Error("teardown of the host network attempted for a scratch root")
			return nil
		},
	}, bin
}

func TestSystemCommandsOnScratchRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("install chowns files to the owner; run `make test` as root")
	}
	h, _ := testHost(t, 0)
	root := t.TempDir()

	out, _, err := runSystem(t, h, "install", "--root", root)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if !strings.Contains(out, "banger is installed for alice (uid 4242)") || !strings.Contains(out, "installed "+root+"/usr/local/bin/bangerd") {
		t.Errorf("install output:\n%s", out)
	}
	out, _, err = runSystem(t, h, "install", "--root", root)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("second install: %v\n%s", err, out)
	}

	// status: the helper socket is missing here, which is a problem (exit 1).
	out, _, err = runSystem(t, h, "status", "--root", root, "--json")
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("status: %v", err)
	}
	var st install.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Installed || st.Install.OwnerUser != "alice" {
		t.Fatalf("status json %v: %s", err, out)
	}

	// --purge without a terminal needs --yes.
	if _, _, err := runSystem(t, h, "uninstall", "--root", root, "--purge"); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("purge without confirmation: %v", err)
	}
	out, _, err = runSystem(t, h, "uninstall", "--root", root, "--purge", "--yes")
	if err != nil || !strings.Contains(out, "uninstalled") {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("scratch root not empty after purge: %v", entries)
	}
}

func TestSystemCommandsRefusals(t *testing.T) {
	h, _ := testHost(t, 1000)
	for _, args := range [][]string{{"install"}, {"restart"}, {"uninstall"}} {
		if _, _, err := runSystem(t, h, args...); err == nil || !strings.Contains(err.Error(), "sudo banger system "+args[0]) {
			t.Errorf("%v as non-root: %v", args, err)
		}
	}
	h, _ = testHost(t, 0)
	h.getenv = func(string) string { return "" }
	if _, _, err := runSystem(t, h, "install", "--root", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--owner") {
		t.Errorf("install without an owner: %v", err)
	}
	if _, _, err := runSystem(t, h, "install", "--owner", "root", "--root", t.TempDir()); err == nil {
		t.Error("install for root accepted")
	}
	// On the real root without systemd, install says so before touching anything.
	h, _ = testHost(t, 0)
	if _, _, err := runSystem(t, h, "install"); err == nil || !strings.Contains(err.Error(), "systemd is not running") {
		t.Errorf("install without systemd: %v", err)
	}
}

func TestSourceDir(t *testing.T) {
	h, bin := testHost(t, 0)
	if got, err := sourceDir(h, ""); err != nil || got != bin {
		t.Fatalf("from a build: %q %v", got, err)
	}
	root := t.TempDir()
	h.executable = func() (string, error) { return filepath.Join(root, "usr/local/bin/banger"), nil }
	if got, err := sourceDir(h, root); err != nil || got != "" {
		t.Fatalf("from the installed CLI: %q %v", got, err)
	}
}
