package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VM.VCPUs != 2 || cfg.Network.Bridge != "banger0" || cfg.VM.StopTimeout.Std() != 10*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestLoadOverridesDefaults(t *testing.T) {
	path := writeConfig(t, `
vmm = "qemu"
[vm]
vcpus = 4
disk_size = "8G"
stop_timeout = "3s"
[network]
subnet = "10.77.0.0/24"
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VMM != "qemu" || cfg.VM.VCPUs != 4 || cfg.VM.DiskSize != 8<<30 || cfg.VM.StopTimeout.Std() != 3*time.Second {
		t.Fatalf("overrides: %+v", cfg)
	}
	if cfg.VM.MemoryMiB != 1024 {
		t.Fatalf("unset key lost its default: %d", cfg.VM.MemoryMiB)
	}
}

func TestLoadErrorsNameKeyAndFile(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level key", "colour = \"red\"\n", []string{`"colour"`, "unknown key"}},
		{"unknown nested key", "[vm]\ncpus = 2\n", []string{`"vm.cpus"`, "unknown key"}},
		{"bad type", "[vm]\nvcpus = \"two\"\n", []string{`"vm.vcpus"`}},
		{"bad value range", "[vm]\nvcpus = 0\n", []string{`"vm.vcpus"`, "between 1 and 32"}},
		{"bad enum", "vmm = \"xen\"\n", []string{`"vmm"`, "firecracker"}},
		{"bad size", "[vm]\ndisk_size = \"lots\"\n", []string{`"vm.disk_size"`, "invalid size"}},
		{"bad duration", "[vm]\nstop_timeout = \"soon\"\n", []string{`"vm.stop_timeout"`, "invalid duration"}},
		{"console log cap too small", "[vm]\nconsole_log_max = \"64K\"\n", []string{`"vm.console_log_max"`, "at least 1M"}},
		{"negative golden snapshots", "[image]\ngolden_snapshots = -1\n", []string{`"image.golden_snapshots"`, "0 (no warm creates)"}},
		{"bad subnet", "[network]\nsubnet = \"172.30.0.1/24\"\n", []string{`"network.subnet"`}},
		{"bad bridge", "[network]\nbridge = \"eth0\"\n", []string{`"network.bridge"`}},
		{"public DNS domain", "[network]\ndomain = \"com\"\n", []string{`"network.domain"`, "public name"}},
		{"malformed DNS domain", "[network]\ndomain = \"a..banger\"\n", []string{`"network.domain"`, "DNS label"}},
		{"syntax", "[vm\n", []string{"line 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := Load(path)
			if err == nil {
				t.Fatal("accepted bad config")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error does not name the file: %s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]ByteSize{"4G": 4 << 30, "512M": 512 << 20, "512MiB": 512 << 20, "1024": 1024, "2k": 2048, "1T": 1 << 40, "3GB": 3 << 30}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1.5G", "4X", "99999999999T"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if s := ByteSize(4 << 30).String(); s != "4G" {
		t.Errorf("String = %s", s)
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
