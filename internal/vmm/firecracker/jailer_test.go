package firecracker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestJailerArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  JailerConfig
		want []string
	}{
		{
			name: "minimal",
			cfg:  JailerConfig{Path: "/usr/bin/jailer", UID: 123, GID: 100},
			want: []string{"--id", "vm-1", "--exec-file", "/usr/bin/firecracker", "--uid", "123", "--gid", "100",
				"--", "--api-sock", "/api.socket"},
		},
		{
			name: "chroot base and netns",
			cfg:  JailerConfig{Path: "/usr/bin/jailer", UID: 123, GID: 100, ChrootBaseDir: "/var/lib/banger/jail", NetNS: "/var/run/netns/banger"},
			want: []string{"--id", "vm-1", "--exec-file", "/usr/bin/firecracker", "--uid", "123", "--gid", "100",
				"--chroot-base-dir", "/var/lib/banger/jail", "--netns", "/var/run/netns/banger",
				"--", "--api-sock", "/api.socket"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := jailerArgs(tc.cfg, "/usr/bin/firecracker", "vm-1", []string{"--api-sock", jailedAPISock})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("argv\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// fakeFirecrackerBinary creates an executable named firecracker for
// exec.LookPath; it is never run.
func fakeFirecrackerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestJailedCommandAndLayout(t *testing.T) {
	bin := fakeFirecrackerBinary(t)
	d := New(Config{BinaryPath: bin, Jailer: &JailerConfig{Path: "/usr/bin/jailer", UID: 123, GID: 100, ChrootBaseDir: "/srv/banger"}})
	spec := testSpec(t)
	l, err := d.layoutFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	root := "/srv/banger/firecracker/vm-0123/root"
	if l.jailRoot != root || l.apiSock != root+"/api.socket" || l.apiSockArg != "/api.socket" {
		t.Fatalf("layout %+v", l)
	}
	cmd, err := d.command(spec, l)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/jailer", "--id", "vm-0123", "--exec-file", bin, "--uid", "123", "--gid", "100",
		"--chroot-base-dir", "/srv/banger", "--", "--api-sock", "/api.socket"}
	if !slices.Equal(cmd.Args, want) {
		t.Fatalf("argv\n got %q\nwant %q", cmd.Args, want)
	}
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid {
		t.Fatal("jailer must run in its own process group too")
	}
}

func TestUnjailedCommand(t *testing.T) {
	d := New(Config{})
	spec := testSpec(t)
	l, _ := d.layoutFor(spec)
	cmd, err := d.command(spec, l)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"firecracker", "--api-sock", filepath.Join(spec.RunDir, "firecracker.sock"), "--id", "vm-0123"}
	if !slices.Equal(cmd.Args, want) {
		t.Fatalf("argv\n got %q\nwant %q", cmd.Args, want)
	}
}

func TestJailPathTranslation(t *testing.T) {
	l := layout{jailRoot: "/srv/jailer/firecracker/vm-1/root"}
	in, err := l.inside("/srv/jailer/firecracker/vm-1/root/images/rootfs.ext4")
	if err != nil || in != "/images/rootfs.ext4" {
		t.Fatalf("inside = %q, %v", in, err)
	}
	for _, outside := range []string{"/var/lib/banger/rootfs.ext4", "/srv/jailer/firecracker/vm-1/rootfs.ext4", "/srv/jailer/firecracker/vm-1/root/../x"} {
		if _, err := l.inside(outside); err == nil || !strings.Contains(err.Error(), "stage it inside the jail") {
			t.Errorf("%s: want an outside-the-jail error, got %v", outside, err)
		}
	}
	if in, err := (layout{}).inside("/any/path"); err != nil || in != "/any/path" {
		t.Fatalf("unjailed paths must pass through: %q, %v", in, err)
	}
}

func TestJailedBootNeedsStagedFiles(t *testing.T) {
	d := New(Config{BinaryPath: fakeFirecrackerBinary(t), Jailer: &JailerConfig{Path: "/usr/bin/jailer"}})
	spec := testSpec(t)
	l, _ := d.layoutFor(spec)
	if _, err := d.bootSteps(spec, l); err == nil || !strings.Contains(err.Error(), "outside the jail") {
		t.Fatalf("kernel outside the jail must be refused, got %v", err)
	}
}

func TestRejectsBadInstanceID(t *testing.T) {
	d := New(Config{})
	spec := testSpec(t)
	spec.VMID = "dev_vm.1"
	if err := d.validate(spec); err == nil || !strings.Contains(err.Error(), "instance id") {
		t.Fatalf("got %v", err)
	}
	if !validInstanceID(strings.Repeat("a", 64)) || validInstanceID(strings.Repeat("a", 65)) {
		t.Fatal("64 characters is Firecracker's limit")
	}
}
