// Package testbin builds banger's binaries once for end-to-end tests, with
// a known version stamp so tests can assert the version surfaces.
package testbin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

// The stamp test builds carry.
const (
	Version = "v0.1.0-test"
	Commit  = "abcdef1234567890abcdef1234567890abcdef12"
	BuiltAt = "2026-01-02T03:04:05Z"
)

// Set is one build of every binary in a temporary directory.
type Set struct {
	Dir             string
	Banger          string
	Bangerd         string
	Agent           string
	FakeFirecracker string
	// CrashDaemon is bangerd with crash points (test/crashd), stamped
	// like Bangerd so the CLI accepts it as the same build.
	CrashDaemon string
	// HostileAgent is test/hostileagent: a guest agent that lies, for the
	// hostile-guest tier.
	HostileAgent string
}

// Build compiles banger, bangerd, banger-vsock-agent and fake-firecracker.
func Build() (Set, error) {
	dir, err := os.MkdirTemp("", "banger-bin")
	if err != nil {
		return Set{}, err
	}
	s := Set{
		Dir:             dir,
		Banger:          filepath.Join(dir, "banger"),
		Bangerd:         filepath.Join(dir, "bangerd"),
		Agent:           filepath.Join(dir, "banger-vsock-agent"),
		FakeFirecracker: filepath.Join(dir, "fake-firecracker"),
		CrashDaemon:     filepath.Join(dir, "bangerd-crash"),
		HostileAgent:    filepath.Join(dir, "hostileagent"),
	}
	stamp := Stamp(Version, Commit, BuiltAt)
	for _, b := range []struct{ out, pkg, ldflags string }{
		{s.Banger, "./cmd/banger", stamp},
		{s.Bangerd, "./cmd/bangerd", stamp},
		{s.Agent, "./cmd/banger-vsock-agent", stamp},
		{s.FakeFirecracker, "./test/fakefirecracker", ""},
		{s.CrashDaemon, "./test/crashd", stamp},
		{s.HostileAgent, "./test/hostileagent", ""},
	} {
		if err := GoBuild(b.out, b.pkg, b.ldflags); err != nil {
			_ = os.RemoveAll(dir)
			return Set{}, err
		}
	}
	return s, nil
}

// Stamp returns -ldflags setting the build info.
func Stamp(version, commit, builtAt string) string {
	const pkg = "github.com/banger-dev/banger/internal/buildinfo"
	return fmt.Sprintf("-X %s.version=%s -X %s.commit=%s -X %s.builtAt=%s", pkg, version, pkg, commit, pkg, builtAt)
}

// GoBuild builds pkg (relative to the module root) into out.
func GoBuild(out, pkg, ldflags string) error {
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", ldflags, pkg)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// ModuleRoot is the repository root (where go.mod is).
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return strings.TrimSuffix(filepath.Dir(file), "/test/testbin")
}

// Remove deletes the binaries.
func (s Set) Remove() { _ = os.RemoveAll(s.Dir) }

// SpecPath is the official Firecracker API spec shared beside the repository.
func SpecPath() string {
	if p := os.Getenv("BANGER_FC_SPEC"); p != "" {
		return p
	}
	return filepath.Join(filepath.Dir(ModuleRoot()), "shared", "firecracker", "firecracker-api.yaml")
}

// FakeJailer builds test/fakejailer as dir/jailer, with the test-only
// sidecar that puts what the fake Firecracker needs into each jail: the API
// spec, and agent as its stand-in guest (a real Firecracker needs neither).
// dir and everything above it must be root's: the jailer runs as root.
func FakeJailer(dir, agent string) (string, error) {
	jailer := filepath.Join(dir, "jailer")
	if err := GoBuild(jailer, "./test/fakejailer", ""); err != nil {
		return "", err
	}
	conf, err := json.Marshal(map[string]any{
		"env":   []string{"BANGER_FC_SPEC=/firecracker-api.yaml", "BANGER_FAKE_GUEST=/banger-vsock-agent"},
		"copy":  map[string]string{"/firecracker-api.yaml": SpecPath(), "/banger-vsock-agent": agent},
		"nodes": []map[string]any{{"path": "/dev/null", "major": 1, "minor": 3}},
	})
	if err != nil {
		return "", err
	}
	return jailer, os.WriteFile(jailer+".testconf", conf, 0o644)
}

// CacheDir is where test tiers keep downloads and built trees between runs
// (keyed by their inputs inside): $BANGER_TEST_CACHE, else
// ~/.cache/banger-test.
func CacheDir() (string, error) {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "banger-test"), nil
}

// ProcessesUnder lists live (not zombie) processes whose command line names
// a path beneath dir: the VMMs and stand-in guests a test started from its
// own runtime or state dir, which name their sockets there. Tests end
// exactly these, by PID, and nothing else on the machine.
func ProcessesUnder(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	needle := []byte(strings.TrimSuffix(dir, "/") + "/")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, needle) && !IsZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillProcessesUnder SIGKILLs ProcessesUnder(dir). A VMM outlives its
// daemon by design, so a test that stops early (a failed script never
// reaches its `vm delete`) would otherwise leave it running.
func KillProcessesUnder(dir string) {
	for _, pid := range ProcessesUnder(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// IsZombie reports whether pid is gone or a zombie.
func IsZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}
