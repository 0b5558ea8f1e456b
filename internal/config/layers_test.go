package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOwnerLayerOverRootFile(t *testing.T) {
	dir := t.TempDir()
	root := writeFile(t, filepath.Join(dir, "root.toml"), "vmm = \"qemu\"\n[vm]\nvcpus = 4\nmemory_mib = 512\n[network]\nsubnet = \"10.77.0.0/24\"\n")
	owner := writeFile(t, filepath.Join(dir, "owner.toml"), "[vm]\nvcpus = 1\nstop_timeout = \"3s\"\n")
	cfg, err := LoadSources(Sources{Root: root, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VM.VCPUs != 1 || cfg.VM.StopTimeout.Std() != 3*time.Second {
		t.Errorf("owner's values not applied: %+v", cfg.VM)
	}
	if cfg.VMM != "qemu" || cfg.VM.MemoryMiB != 512 || cfg.Network.Subnet != "10.77.0.0/24" {
		t.Errorf("root's values lost under the owner's layer: %+v", cfg)
	}
	rootOnly, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Fingerprint() == rootOnly.Fingerprint() {
		t.Error("the fingerprint does not change with the owner's layer")
	}
}

func TestOwnerLayerRefusesRootKeys(t *testing.T) {
	dir := t.TempDir()
	root := writeFile(t, filepath.Join(dir, "root.toml"), "[vm]\nvcpus = 3\n")
	for _, text := range []string{
		"[network]\nbridge = \"bangerx\"\n",
		"[network]\nsubnet = \"10.9.0.0/24\"\n",
		"[network]\ndomain = \"work.internal\"\n",
		"[firecracker]\njailer = \"/tmp/jailer\"\n",
		"[qemu]\nbinary = \"/tmp/qemu\"\n",
		"vmm = \"firecracker\"\n",
	} {
		owner := writeFile(t, filepath.Join(dir, "owner.toml"), text+"[vm]\nvcpus = 1\n")
		cfg, err := LoadSources(Sources{Root: root, Owner: owner})
		var le *OwnerLayerError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), "is root's to set") || !strings.Contains(err.Error(), owner) {
			t.Errorf("%q: err %v, want the owner's layer refused for a root key", text, err)
		}
		if cfg.VM.VCPUs != 3 {
			t.Errorf("%q: a refused layer still changed the config: vcpus %d", text, cfg.VM.VCPUs)
		}
	}
}

func TestOwnerLayerBadValueNamesOwnerFile(t *testing.T) {
	dir := t.TempDir()
	root := writeFile(t, filepath.Join(dir, "root.toml"), "")
	owner := writeFile(t, filepath.Join(dir, "owner.toml"), "[vm]\nvcpus = 0\n")
	_, err := LoadSources(Sources{Root: root, Owner: owner})
	var le *OwnerLayerError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "vm.vcpus") {
		t.Fatalf("err %v", err)
	}
	// A bad root file is not the owner's problem.
	writeFile(t, root, "[vm]\nvcpus = 0\n")
	writeFile(t, owner, "")
	if _, err := LoadSources(Sources{Root: root, Owner: owner}); err == nil || errors.As(err, &le) {
		t.Fatalf("root file error reported as %v", err)
	}
}

func TestOwnerLayerMissingIsFine(t *testing.T) {
	cfg, err := LoadSources(Sources{Root: filepath.Join(t.TempDir(), "none"), Owner: filepath.Join(t.TempDir(), "none")})
	if err != nil || cfg.Fingerprint() != Default().Fingerprint() {
		t.Fatalf("%v", err)
	}
}

func TestEveryOwnerKeyExists(t *testing.T) {
	var keys []string
	walkLeaves(func(key string, _ reflect.Type) { keys = append(keys, key) })
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
	}
	n := 0
	for _, k := range keys {
		if OwnerMaySet(k) {
			n++
		}
	}
	if n != 13 {
		t.Errorf("%d owner keys; update this test and docs/privileges.md together", n)
	}
	for _, k := range []string{"network.bridge", "network.subnet", "network.enabled", "network.domain", "firecracker.jailer", "firecracker.binary", "qemu.binary", "vmm"} {
		if !known[k] || OwnerMaySet(k) {
			t.Errorf("%s: known %v, owner may set %v; want a root-only key", k, known[k], OwnerMaySet(k))
		}
	}
}

func TestSourcesForSystemLayout(t *testing.T) {
	root := t.TempDir()
	layout := paths.System(root)
	if s := SourcesFor(layout); s.Owner != "" || s.Root != filepath.Join(root, "etc/banger/config.toml") {
		t.Fatalf("not installed: %+v", s)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/banger"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := installmeta.Write(layout.InstallMetaPath(), installmeta.Meta{OwnerUser: "o", OwnerUID: 4242, Home: "/home/o"}); err != nil {
		t.Fatal(err)
	}
	if s := SourcesFor(layout); s.Owner != "/home/o/.config/banger/config.toml" {
		t.Fatalf("installed: %+v", s)
	}
	user := paths.Layout{Mode: paths.ModeUser, ConfigDir: "/x"}
	if s := SourcesFor(user); s.Owner != "" || s.Root != "/x/config.toml" {
		t.Fatalf("user mode: %+v", s)
	}
}
