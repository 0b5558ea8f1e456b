package installmeta

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
)

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "banger", "install.toml")
	want := Meta{
		Version: "v0.1.0", Commit: "abc", BuiltAt: "2026-01-02T03:04:05Z",
		OwnerUser: "dev", OwnerUID: 1000, OwnerGID: 1000, Home: "/home/dev",
		InstalledAt: time.Date(2026, 4, 28, 20, 45, 50, 123456789, time.UTC),
	}
	if err := Write(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.InstalledAt.Equal(want.InstalledAt) {
		t.Fatalf("InstalledAt = %v, want %v", got.InstalledAt, want.InstalledAt)
	}
	got.InstalledAt = want.InstalledAt
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %v, want 0644", st.Mode().Perm())
	}
}

func TestReadMissingIsNotInstalled(t *testing.T) {
	if _, err := Read(filepath.Join(t.TempDir(), "install.toml")); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
}

func TestReadFileWithoutHome(t *testing.T) {
	// Files written before Home existed must still load.
	path := filepath.Join(t.TempDir(), "install.toml")
	old := "version = 'v0.1.0'\ncommit = 'abc'\nbuilt_at = 'x'\nowner_user = 'dev'\nowner_uid = 1000\nowner_gid = 1000\ninstalled_at = 2026-04-28T20:45:50Z\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Home != "" || m.OwnerUser != "dev" {
		t.Fatalf("got %+v", m)
	}
	// Rewriting it must not invent a home key an older reader would reject.
	if err := Write(path, m); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "home") {
		t.Fatalf("empty Home was written out:\n%s", data)
	}
}

func TestUpdateBuildInfoKeepsOwnerAndInstalledAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.toml")
	installed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	orig := Meta{Version: "v0.1.0", Commit: "old", BuiltAt: "then", OwnerUser: "dev", OwnerUID: 1001, OwnerGID: 1002, Home: "/home/dev", InstalledAt: installed}
	if err := Write(path, orig); err != nil {
		t.Fatal(err)
	}
	b := buildinfo.Info{Version: "v0.2.0", Commit: "new", BuiltAt: "now"}
	m, err := UpdateBuildInfo(path, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Build() != b || m.Build() != b {
		t.Fatalf("build = %+v, want %+v", got.Build(), b)
	}
	if got.OwnerUser != "dev" || got.OwnerUID != 1001 || got.OwnerGID != 1002 || got.Home != "/home/dev" || !got.InstalledAt.Equal(installed) {
		t.Fatalf("owner fields or InstalledAt changed: %+v", got)
	}
}

func TestUpdateBuildInfoNotInstalled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.toml")
	if _, err := UpdateBuildInfo(path, buildinfo.Info{Version: "v1"}); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("UpdateBuildInfo must not create install.toml")
	}
}

func TestUpdateBuildInfoCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.toml")
	if err := os.WriteFile(path, []byte("version = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := UpdateBuildInfo(path, buildinfo.Info{Version: "v1"}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("err = %v, want a corrupt-metadata error", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "version = \n" {
		t.Fatalf("corrupt file was rewritten: %q", data)
	}
}
