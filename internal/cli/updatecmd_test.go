package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/updater"
	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

type updateFixture struct {
	root   string
	srv    *u.Server
	key    u.Key
	runner *u.Runner
	env    updateEnv
}

func newUpdateFixture(t *testing.T) *updateFixture {
	t.Helper()
	f := &updateFixture{root: t.TempDir(), srv: u.NewServer(t), key: u.NewKey(t), runner: &u.Runner{SchemaExit: 1}}
	u.Install(t, f.root, "v0.1.0")
	// As an earlier update leaves it, so "untouched" compares byte for byte.
	if err := updater.EnsureStagingDir(updater.DefaultStagingDir(f.root)); err != nil {
		t.Fatal(err)
	}
	f.srv.Publish(t, u.Release{Version: "v0.2.0", Arch: "amd64", Channel: "stable", Key: f.key})
	f.env = updateEnv{
		euid:           func() int { return 0 },
		systemdRunning: func() bool { return false },
		httpClient:     f.srv.Client(),
		runner:         f.runner,
		publicKey:      f.key.Public,
		sleep:          func(context.Context, time.Duration) error { return nil },
	}
	return f
}

// run executes `banger update args...` against the fixture's scratch root.
func (f *updateFixture) run(t *testing.T, stdin string, terminal bool, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &App{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
		Build:      buildinfo.Info{Version: "v0.1.0", Commit: "commit-v0.1.0", BuiltAt: "2026-01-01T00:00:00Z"},
		IsTerminal: func() bool { return terminal },
	}
	cmd := newUpdateCmdWith(app, &globalFlags{}, f.env)
	cmd.SetArgs(append([]string{"--release-url", f.srv.URL, "--root", f.root}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func (f *updateFixture) installedVersion(t *testing.T) string {
	t.Helper()
	m, err := installmeta.Read(paths.System(f.root).InstallMetaPath())
	if err != nil {
		t.Fatal(err)
	}
	return m.Version
}

func TestUpdateCheck(t *testing.T) {
	f := newUpdateFixture(t)
	f.env.euid = func() int { return 1000 } // --check needs no root
	out, _, err := f.run(t, "", false, "--check")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"installed: banger v0.1.0 (commit commit-v, built 2026-01-01T00:00:00Z)",
		"stable:    v0.2.0 (published 2026-05-01)",
		"v0.2.0 is available: run `sudo banger update`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, err = f.run(t, "", false, "--check", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Current         buildinfo.Info `json:"current"`
		Installed       bool           `json:"installed"`
		Release         updater.Release
		Action          string `json:"action"`
		UpdateAvailable bool   `json:"update_available"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !rep.UpdateAvailable || rep.Action != "update" || rep.Release.Version != "v0.2.0" || rep.Current.Version != "v0.1.0" || !rep.Installed {
		t.Fatalf("report = %+v", rep)
	}
	if len(f.runner.Calls()) != 0 {
		t.Fatalf("--check ran commands: %v", f.runner.CallLines())
	}
}

func TestUpdateCheckPlaceholderKey(t *testing.T) {
	f := newUpdateFixture(t)
	f.env.publicKey = updater.PlaceholderPublicKey
	out, _, err := f.run(t, "", false, "--check")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "v0.2.0 is available, but this banger cannot install it: this banger was built without the release signing key") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestUpdateRefusals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(*updateFixture)
		stdin    string
		terminal bool
		args     []string
		want     string
	}{
		{name: "not root", setup: func(f *updateFixture) { f.env.euid = func() int { return 1000 } },
			args: []string{"--yes"}, want: "must run as root (this is uid 1000): run `sudo banger update`"},
		{name: "placeholder key", setup: func(f *updateFixture) { f.env.publicKey = "" },
			args: []string{"--yes"}, want: "built without the release signing key"},
		{name: "no terminal, no --yes", want: "stdin is not a terminal, so nobody can confirm the update: pass --yes"},
		{name: "answered no", terminal: true, stdin: "n\n", want: "update cancelled; nothing was changed"},
		{name: "plain http", args: []string{"--yes", "--release-url", "http://127.0.0.1:1"}, want: "refusing a non-HTTPS URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newUpdateFixture(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			before := u.Snapshot(t, f.root)
			_, _, err := f.run(t, tc.stdin, tc.terminal, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
				t.Fatalf("refusal changed the root: %v", d)
			}
			if len(f.runner.Calls()) != 0 {
				t.Fatalf("refusal ran commands: %v", f.runner.CallLines())
			}
		})
	}
}

func TestUpdateConfirmedOnTerminal(t *testing.T) {
	f := newUpdateFixture(t)
	out, errOut, err := f.run(t, "y\n", true)
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errOut)
	}
	if out != "banger updated: v0.1.0 → v0.2.0\n" {
		t.Fatalf("stdout = %q", out)
	}
	for _, want := range []string{"updating banger v0.1.0 → v0.2.0 (stable, published 2026-05-01)", "Continue? [y/N]", "verified the signature", "downloading banger_0.2.0_linux_amd64.tar.gz"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if v := f.installedVersion(t); v != "v0.2.0" {
		t.Fatalf("installed = %s", v)
	}
	// A scratch root has no services to restart.
	for _, l := range f.runner.CallLines() {
		if strings.HasPrefix(l, "systemctl") {
			t.Errorf("ran %q for a scratch root", l)
		}
	}
}

func TestUpdateYesJSON(t *testing.T) {
	f := newUpdateFixture(t)
	out, errOut, err := f.run(t, "", false, "--yes", "--json")
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errOut)
	}
	var res updater.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("stdout is not the JSON result: %v\n%s", err, out)
	}
	if res.From.Version != "v0.1.0" || res.To.Version != "v0.2.0" || len(res.Replaced) != 3 || res.Action != updater.ActionUpdate {
		t.Fatalf("result = %+v", res)
	}
	banger, _ := os.ReadFile(filepath.Join(f.root, "usr/local/bin/banger"))
	if !bytes.Equal(banger, u.FakeBinary("banger", "v0.2.0")) {
		t.Fatalf("banger = %q", banger)
	}

	// Again: nothing to do, said plainly.
	out, _, err = f.run(t, "", false, "--yes")
	if err != nil || out != "banger v0.2.0 is up to date (stable offers v0.2.0)\n" {
		t.Fatalf("second run: %q, %v", out, err)
	}
}

func TestUpdateRolledBackMessage(t *testing.T) {
	f := newUpdateFixture(t)
	f.runner.Doctor = func(v string) []string {
		if v == "v0.2.0" {
			return []string{"daemon"}
		}
		return nil
	}
	before := u.Snapshot(t, f.root)
	_, errOut, err := f.run(t, "", false, "--yes")
	want := "update to v0.2.0 failed at banger doctor (checks failing on the new install: daemon); the previous install was restored and restarted"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if !strings.Contains(errOut, "FAIL") || !strings.Contains(errOut, "rolling back") {
		t.Errorf("stderr should show the doctor report and the rollback:\n%s", errOut)
	}
	if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
		t.Fatalf("rollback left changes: %v", d)
	}
}
