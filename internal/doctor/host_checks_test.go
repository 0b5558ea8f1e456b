package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// scratchHost is a Host over an empty tree with working fakes.
func scratchHost(t *testing.T, files ...string) Host {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p, content, _ := strings.Cut(f, "=")
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Host{
		Root:          root,
		KVMAPIVersion: func(string) (int, error) { return 12, nil },
		LookPath:      func(n string) (string, error) { return "/usr/bin/" + n, nil },
		Runner: &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
			return systemtest.Print(filepath.Base(c.Path) + " 1.0\nmore\n")
		}},
		FreeBytes: func(string) (uint64, error) { return 50 << 30, nil },
		Trusted:   func(string) error { return nil },
	}
}

func run(c Check) Result { return Run(context.Background(), []Check{c}).Results[0] }

func TestKVMCheck(t *testing.T) {
	cases := []struct {
		name   string
		files  []string
		api    func(string) (int, error)
		status Status
		want   string
	}{
		{"usable", []string{"dev/kvm"}, nil, Pass, "usable"},
		{"missing", nil, nil, Warn, "no /dev/kvm"},
		{"pvm", []string{"dev/kvm", "sys/module/kvm_pvm/"}, nil, Warn, "PVM flavour"},
		{"no access", []string{"dev/kvm"}, func(string) (int, error) { return 0, fs.ErrPermission }, Fail, "not accessible"},
		{"broken", []string{"dev/kvm"}, func(string) (int, error) { return 0, errors.New("ENOTTY") }, Fail, "does not answer"},
		{"old api", []string{"dev/kvm"}, func(string) (int, error) { return 11, nil }, Fail, "API 11"},
	}
	for _, c := range cases {
		h := scratchHost(t, c.files...)
		if c.api != nil {
			h.KVMAPIVersion = c.api
		}
		r := run(KVMCheck(h))
		if r.Status != c.status || !strings.Contains(r.Summary, c.want) {
			t.Errorf("%s: %s %q", c.name, r.Status, r.Summary)
		}
	}
}

func TestKVMCheckOnThisHost(t *testing.T) {
	// Whatever this machine has, the check must say something sensible.
	r := run(KVMCheck(RealHost()))
	t.Logf("%s %s %v", r.Status, r.Summary, r.Details)
	if r.Summary == "" {
		t.Fatal("empty summary")
	}
}

func TestVMMCheck(t *testing.T) {
	h := scratchHost(t)
	r := run(VMMCheck(h, "firecracker", "qemu-system-x86_64"))
	if r.Status != Pass || !strings.Contains(strings.Join(r.Details, "\n"), "/usr/bin/firecracker: firecracker 1.0") {
		t.Errorf("both: %+v", r)
	}
	h.LookPath = func(n string) (string, error) {
		if n == "firecracker" {
			return "", errors.New("not found")
		}
		return "/usr/bin/" + n, nil
	}
	if r := run(VMMCheck(h, "firecracker", "qemu-system-x86_64")); r.Status != Warn || !strings.Contains(r.Summary, "only the QEMU driver") {
		t.Errorf("qemu only: %+v", r)
	}
	h.LookPath = func(string) (string, error) { return "", errors.New("not found") }
	if r := run(VMMCheck(h, "firecracker", "qemu-system-x86_64")); r.Status != Fail {
		t.Errorf("none: %+v", r)
	}
}

func TestJailerCheck(t *testing.T) {
	h := scratchHost(t)
	if r := run(JailerCheck(h, "", nil)); r.Status != Pass || !strings.Contains(r.Summary, "not used") {
		t.Errorf("unset: %+v", r)
	}
	if r := run(JailerCheck(h, "jailer", nil)); r.Status != Pass || r.Summary != "/usr/bin/jailer: jailer 1.0" {
		t.Errorf("user mode: %+v", r)
	}
	launches := func(p string) HelperInfoFunc {
		return func(context.Context) (privileged.HelperInfo, error) { return privileged.HelperInfo{Jailer: p}, nil }
	}
	cases := []struct {
		name   string
		info   HelperInfoFunc
		status Status
		detail string
	}{
		{"helper launches it", launches("/usr/bin/jailer"), Pass, ""},
		{"helper launches none", launches(""), Fail, "launches no jailer"},
		{"helper launches another", launches("/opt/jailer"), Warn, "launches /opt/jailer"},
		{"helper down", func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{}, privileged.ErrUnreachable
		}, Fail, "cannot ask the root helper"},
	}
	for _, tc := range cases {
		r := run(JailerCheck(h, "jailer", tc.info))
		if r.Status != tc.status || !strings.Contains(strings.Join(r.Details, "\n"), tc.detail) {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
	h.Trusted = func(p string) error { return fmt.Errorf("%s belongs to uid 1000", p) }
	if r := run(JailerCheck(h, "jailer", nil)); r.Status != Fail || !strings.Contains(strings.Join(r.Details, "\n"), "root-owned") {
		t.Errorf("untrusted: %+v", r)
	}
	h.LookPath = func(string) (string, error) { return "", errors.New("not found") }
	if r := run(JailerCheck(h, "jailer", nil)); r.Status != Fail || !strings.Contains(r.Summary, "not found") {
		t.Errorf("missing: %+v", r)
	}
}

func TestHelperCheck(t *testing.T) {
	dir := t.TempDir()
	meta := filepath.Join(dir, "install.toml")
	ok := func(context.Context) (privileged.HelperInfo, error) {
		return privileged.HelperInfo{OwnerUID: 1000, PID: 7, Version: "v0.1.0", Commit: "abc"}, nil
	}
	if r := run(HelperCheck(meta, 1000, ok)); r.Status != Pass || !strings.Contains(r.Summary, "user mode") {
		t.Errorf("not installed: %+v", r)
	}
	if err := installmeta.Write(meta, installmeta.Meta{Version: "v0.1.0", Commit: "abc", OwnerUser: "alice", OwnerUID: 1000, OwnerGID: 1000, InstalledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		caller int
		info   HelperInfoFunc
		status Status
		want   string
	}{
		{"healthy", 1000, ok, Pass, "serves uid 1000 (alice)"},
		{"root asks", 0, ok, Pass, "reachable"},
		{"another user", 1001, ok, Warn, "reachable"},
		{"down", 1000, func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{}, fmt.Errorf("%w at /run/banger/root-helper.sock", privileged.ErrUnreachable)
		}, Fail, "not reachable"},
		{"refused", 1001, func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{}, &privileged.RemoteError{Code: privileged.CodeRefused, Message: "no"}
		}, Fail, "refuses you"},
		{"stale owner", 1000, func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{OwnerUID: 999, Version: "v0.1.0", Commit: "abc"}, nil
		}, Fail, "serves uid 999"},
		{"stale build", 1000, func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{OwnerUID: 1000, Version: "v0.0.9", Commit: "old"}, nil
		}, Warn, "reachable"},
	}
	for _, c := range cases {
		r := run(HelperCheck(meta, c.caller, c.info))
		if r.Status != c.status || !strings.Contains(r.Summary, c.want) {
			t.Errorf("%s: %s %q %q", c.name, r.Status, r.Summary, r.Details)
		}
	}
}

func TestUnitsCheck(t *testing.T) {
	units := []string{"banger-root-helper.service", "bangerd.service"}
	h := scratchHost(t, "run/systemd/system/")
	meta := filepath.Join(t.TempDir(), "install.toml")
	if r := run(UnitsCheck(h, meta, units)); r.Status != Pass || !strings.Contains(r.Summary, "user mode") {
		t.Errorf("not installed: %+v", r)
	}
	if err := installmeta.Write(meta, installmeta.Meta{OwnerUser: "alice", OwnerUID: 1000}); err != nil {
		t.Fatal(err)
	}
	h.Runner = &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if c.Args[1] == "bangerd.service" {
			return system.Output{Stdout: []byte("failed\n"), ExitCode: 3}, nil
		}
		return systemtest.Print("active\n")
	}}
	if r := run(UnitsCheck(h, meta, units)); r.Status != Fail || r.Summary != "bangerd.service is failed" {
		t.Errorf("failed unit: %+v", r)
	}
	h2 := scratchHost(t)
	if r := run(UnitsCheck(h2, meta, units)); r.Status != Warn {
		t.Errorf("no systemd: %+v", r)
	}
}

func TestNetworkCheck(t *testing.T) {
	h := scratchHost(t, "sys/class/net/banger0/bridge/", "proc/sys/net/ipv4/ip_forward=1\n")
	nat := NetworkProbe{Name: "NAT", Present: func(context.Context) (bool, error) { return true, nil }}
	if r := run(NetworkCheck(h, "banger0", nat)); r.Status != Pass || r.Summary != "present: bridge banger0, ip_forward, NAT" {
		t.Errorf("all present: %+v", r)
	}
	h = scratchHost(t, "proc/sys/net/ipv4/ip_forward=0\n")
	r := run(NetworkCheck(h, "banger0"))
	if r.Status != Warn || r.Summary != "nothing set up yet" || len(r.Details) != 3 {
		t.Errorf("nothing: %+v", r)
	}
}

func TestDiskSpaceCheck(t *testing.T) {
	h := scratchHost(t, "var/lib/")
	var asked string
	for _, c := range []struct {
		free   uint64
		status Status
	}{{50 << 30, Pass}, {5 << 30, Warn}, {1 << 30, Fail}} {
		h.FreeBytes = func(p string) (uint64, error) { asked = p; return c.free, nil }
		if r := run(DiskSpaceCheck(h, "/var/lib/banger")); r.Status != c.status {
			t.Errorf("%d bytes free: %+v", c.free, r)
		}
	}
	if asked != filepath.Join(h.Root, "/var/lib") {
		t.Errorf("measured %s, want the nearest existing parent", asked)
	}
}
