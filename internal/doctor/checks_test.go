package doctor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
)

func TestVersionCheckDriftBranches(t *testing.T) {
	cli := buildinfo.Info{Version: "v0.2.0", Commit: "1111111111aaaa", BuiltAt: "2026-05-01T00:00:00Z"}
	cases := []struct {
		name      string
		installed installmeta.Meta
		cli       buildinfo.Info
		status    Status
		want      []string
		notWant   []string
	}{
		{"match", installmeta.Meta{Version: "v0.2.0", Commit: "1111111111aaaa"}, cli, Pass, []string{"installed: v0.2.0"}, []string{"differs"}},
		{"version differs", installmeta.Meta{Version: "v0.1.0", Commit: "1111111111aaaa"}, cli, Warn, []string{"version differs: CLI v0.2.0, installed v0.1.0"}, []string{"commit differs"}},
		{"commit differs", installmeta.Meta{Version: "v0.2.0", Commit: "2222222222bbbb"}, cli, Warn, []string{"commit differs: CLI 11111111, installed 22222222"}, []string{"version differs"}},
		{"dev CLI suppressed", installmeta.Meta{Version: "v0.1.0", Commit: "2222222222bbbb"}, buildinfo.Info{Version: "dev", Commit: "unknown", BuiltAt: "unknown"}, Pass, []string{"drift check skipped"}, []string{"differs"}},
		{"dev install suppressed", installmeta.Meta{Version: "dev", Commit: "unknown"}, cli, Pass, []string{"drift check skipped"}, []string{"differs"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "install.toml")
			tc.installed.OwnerUser = "dev"
			if err := installmeta.Write(path, tc.installed); err != nil {
				t.Fatal(err)
			}
			r := runOne(context.Background(), VersionCheck(tc.cli, path))
			text := strings.Join(r.Details, "\n")
			if r.Status != tc.status {
				t.Fatalf("status %s, want %s (%s)", r.Status, tc.status, text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("details lack %q:\n%s", w, text)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(text, w) {
					t.Errorf("details contain %q:\n%s", w, text)
				}
			}
		})
	}
}

func TestVersionCheckWithoutInstallAndCorrupt(t *testing.T) {
	cli := buildinfo.Info{Version: "v0.2.0", Commit: "1111111111aaaa"}
	r := runOne(context.Background(), VersionCheck(cli, filepath.Join(t.TempDir(), "none.toml")))
	if r.Status != Pass || !strings.Contains(strings.Join(r.Details, " "), "user mode") {
		t.Fatalf("no install: %+v", r)
	}
	bad := filepath.Join(t.TempDir(), "install.toml")
	if err := os.WriteFile(bad, []byte("version = [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runOne(context.Background(), VersionCheck(cli, bad)); r.Status != Warn {
		t.Fatalf("corrupt install metadata: %+v", r)
	}
}

func TestReportFailsOnAnyFailAndSurvivesPanics(t *testing.T) {
	report := Run(context.Background(), []Check{
		{Name: "ok", Run: func(context.Context) Result { return Result{Status: Pass, Summary: "fine"} }},
		{Name: "boom", Run: func(context.Context) Result { panic("kaboom") }},
		DaemonCheck(buildinfo.Info{}, "/nowhere.sock", false, func(context.Context) (buildinfo.Info, int, error) {
			return buildinfo.Info{}, 0, errors.New("nothing answers on the socket")
		}),
	})
	if !report.Failed() {
		t.Fatal("report with FAILs says it passed")
	}
	if report.Results[1].Status != Fail || !strings.Contains(report.Results[1].Summary, "kaboom") {
		t.Fatalf("panicking check: %+v", report.Results[1])
	}
	var b strings.Builder
	if err := report.Render(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "1 passed, 0 warnings, 2 failed") {
		t.Fatalf("render:\n%s", b.String())
	}
}

// TestDaemonCheckAdvisesPerMode: in system mode the CLI never starts the
// daemon, so "any banger command starts it in user mode" was wrong advice.
func TestDaemonCheckAdvisesPerMode(t *testing.T) {
	down := func(context.Context) (buildinfo.Info, int, error) { return buildinfo.Info{}, 0, errors.New("refused") }
	for _, tc := range []struct {
		system    bool
		want, not string
	}{
		{false, "starts it in user mode", "systemctl"},
		{true, "sudo systemctl start bangerd", "user mode"},
	} {
		r := DaemonCheck(buildinfo.Info{}, "/x.sock", tc.system, down).Run(context.Background())
		details := strings.Join(r.Details, "\n")
		if r.Status != Fail || !strings.Contains(details, tc.want) || strings.Contains(details, tc.not) {
			t.Errorf("system=%v: %v %q", tc.system, r.Status, details)
		}
	}
}
