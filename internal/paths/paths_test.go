package paths

import (
	"path/filepath"
	"testing"
)

func TestUserLayoutXDG(t *testing.T) {
	env := map[string]string{
		"XDG_CONFIG_HOME": "/x/config",
		"XDG_STATE_HOME":  "/x/state",
		"XDG_RUNTIME_DIR": "/run/user/1000",
	}
	l, err := User(func(k string) string { return env[k] }, "/home/u", 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := Layout{Mode: ModeUser, ConfigDir: "/x/config/banger", StateDir: "/x/state/banger", RuntimeDir: "/run/user/1000/banger"}
	if l != want {
		t.Fatalf("got %+v, want %+v", l, want)
	}
	if l.SocketPath() != "/run/user/1000/banger/bangerd.sock" || l.DBPath() != "/x/state/banger/banger.db" {
		t.Fatalf("socket %s db %s", l.SocketPath(), l.DBPath())
	}
	if l.InstallMetaPath() != "/etc/banger/install.toml" {
		t.Fatalf("install meta %s", l.InstallMetaPath())
	}
}

func TestUserLayoutDefaultsAndRelativeXDGIgnored(t *testing.T) {
	env := map[string]string{"XDG_CONFIG_HOME": "relative/path"}
	l, err := User(func(k string) string { return env[k] }, "/home/u", 42)
	if err != nil {
		t.Fatal(err)
	}
	if l.ConfigDir != "/home/u/.config/banger" || l.StateDir != "/home/u/.local/state/banger" {
		t.Fatalf("defaults not applied: %+v", l)
	}
	if filepath.Base(l.RuntimeDir) != "banger-42" {
		t.Fatalf("runtime fallback %s", l.RuntimeDir)
	}
	if _, err := User(func(string) string { return "" }, "", 1); err == nil {
		t.Fatal("empty home accepted")
	}
}

func TestSystemLayoutRoot(t *testing.T) {
	l := System("")
	if l.ConfigDir != "/etc/banger" || l.StateDir != "/var/lib/banger" || l.RuntimeDir != "/run/banger" {
		t.Fatalf("%+v", l)
	}
	r := System("/tmp/root")
	if r.DBPath() != "/tmp/root/var/lib/banger/banger.db" || r.InstallMetaPath() != "/tmp/root/etc/banger/install.toml" {
		t.Fatalf("%s %s", r.DBPath(), r.InstallMetaPath())
	}
}

func TestSnapshotDirsUnderStateDir(t *testing.T) {
	for _, l := range []Layout{System("/tmp/root"), {Mode: ModeUser, StateDir: "/x/state/banger"}} {
		if got, want := l.SnapshotsDir(), filepath.Join(l.StateDir, "snapshots"); got != want {
			t.Errorf("SnapshotsDir = %s, want %s", got, want)
		}
		if got, want := l.SnapshotDir("0123abcd"), filepath.Join(l.StateDir, "snapshots", "0123abcd"); got != want {
			t.Errorf("SnapshotDir = %s, want %s", got, want)
		}
		if filepath.Dir(l.SnapshotDir("a")) != l.SnapshotsDir() {
			t.Errorf("SnapshotDir is not inside SnapshotsDir")
		}
	}
}

func TestOwnerConfigFileOnlyInSystemMode(t *testing.T) {
	if got := System("/tmp/root").OwnerConfigFile("/home/o"); got != "/home/o/.config/banger/config.toml" {
		t.Errorf("system mode: %q", got)
	}
	if got := System("").OwnerConfigFile(""); got != "" {
		t.Errorf("no home: %q, want none", got)
	}
	user := Layout{Mode: ModeUser, ConfigDir: "/home/o/.config/banger"}
	if got := user.OwnerConfigFile("/home/o"); got != "" {
		t.Errorf("user mode: %q, want none (the user's file is ConfigFile)", got)
	}
}
