package config

import (
	"errors"
	"strings"
	"testing"
)

func mustSet(t *testing.T, data, key string, words ...string) string {
	t.Helper()
	v, err := ParseValue(key, words)
	if err != nil {
		t.Fatal(err)
	}
	out, err := SetKey([]byte(data), key, v)
	if err != nil {
		t.Fatalf("SetKey(%s): %v", key, err)
	}
	return string(out)
}

func TestSetKeyKeepsTheRestOfTheFile(t *testing.T) {
	in := "# my settings\nvmm = \"qemu\"\n\n[vm]\n# two is plenty\nvcpus = 2\n\n[network]\nsubnet = \"10.1.0.0/24\" # work VPN\n"
	got := mustSet(t, in, "vm.vcpus", "4")
	want := strings.Replace(in, "vcpus = 2", "vcpus = 4", 1)
	if got != want {
		t.Fatalf("replace:\n%s\nwant:\n%s", got, want)
	}
	got = mustSet(t, in, "vm.disk_size", "8G")
	if !strings.Contains(got, "vcpus = 2\ndisk_size = '8G'\n\n[network]") || !strings.HasPrefix(got, "# my settings\n") {
		t.Fatalf("insert into table:\n%s", got)
	}
	got = mustSet(t, in, "sync.paths", "~/.gitconfig", "~/.config/gh/")
	if !strings.HasSuffix(got, "# work VPN\n\n[sync]\npaths = ['~/.gitconfig', '~/.config/gh/']\n") {
		t.Fatalf("new table:\n%s", got)
	}
	got = mustSet(t, in, "daemon.log_level", "debug")
	cfg := Default()
	if err := Parse([]byte(got), &cfg); err != nil || cfg.Daemon.LogLevel != "debug" || cfg.VM.VCPUs != 2 {
		t.Fatalf("result does not load as meant: %v\n%s", err, got)
	}
	if got := mustSet(t, "", "vm.vcpus", "1"); got != "[vm]\nvcpus = 1\n" {
		t.Fatalf("empty file: %q", got)
	}
	if got := mustSet(t, "[vm]\nvcpus = 1\n", "vmm", "qemu"); got != "vmm = 'qemu'\n[vm]\nvcpus = 1\n" {
		t.Fatalf("top-level key: %q", got)
	}
}

func TestSetKeyRefusesWhatItCannotEditAlone(t *testing.T) {
	// A multi-line list: replacing its first line would break the file.
	in := "[sync]\npaths = [\n  \"~/.a\",\n  \"~/.b\",\n]\n"
	v, _ := ParseValue("sync.paths", []string{"~/.c"})
	if _, err := SetKey([]byte(in), "sync.paths", v); !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("multi-line value: %v", err)
	}
	// Dotted keys at the top level set vm.vcpus outside [vm].
	v, _ = ParseValue("vm.vcpus", []string{"3"})
	if _, err := SetKey([]byte("vm.vcpus = 2\n"), "vm.vcpus", v); !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("dotted key: %v", err)
	}
}

func TestUnsetKey(t *testing.T) {
	in := "[vm]\nvcpus = 2\nmemory_mib = 512\n"
	out, err := UnsetKey([]byte(in), "vm.vcpus")
	if err != nil || string(out) != "[vm]\nmemory_mib = 512\n" {
		t.Fatalf("%q %v", out, err)
	}
	out, err = UnsetKey([]byte(in), "vm.image")
	if err != nil || string(out) != in {
		t.Fatalf("unset of an absent key changed the file: %q %v", out, err)
	}
	if _, err := UnsetKey([]byte(in), "vm.nope"); err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestParseValueSaysWhatIsWrong(t *testing.T) {
	for key, words := range map[string][]string{
		"vm.vcpus":        {"four"},
		"vm.disk_size":    {"lots"},
		"vm.stop_timeout": {"10"},
		"vm.image":        {"a", "b"},
		"no.such":         {"x"},
	} {
		if _, err := ParseValue(key, words); err == nil || !strings.Contains(err.Error(), "key \""+key+"\"") && !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%s %v: %v", key, words, err)
		}
	}
}

func TestGet(t *testing.T) {
	cfg := Default()
	cfg.Sync.Paths = []string{"~/.gitconfig"}
	for key, want := range map[string]string{
		"vm.vcpus":     "2",
		"vm.disk_size": "4G",
		"vmm":          "auto",
		"sync.paths":   "['~/.gitconfig']",
	} {
		if got, err := cfg.Get(key); err != nil || got != want {
			t.Errorf("Get(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	if got, err := Default().Get("sync.paths"); err != nil || got != "[]" {
		t.Errorf("empty list: %q %v", got, err)
	}
	if _, err := cfg.Get("vm"); err == nil {
		t.Error("a table is not a key")
	}
}
