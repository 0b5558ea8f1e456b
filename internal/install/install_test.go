package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: install creates root-owned files and chowns to the owner; run `make test` as root")
	}
}

// testOwner need not exist in /etc/passwd: install only chowns to the ids
// and writes the names into unit files.
var testOwner = Owner{User: "alice", UID: 4242, GID: 4343, Group: "alice", Home: "/home/alice"}

var testBuild = buildinfo.Info{Version: "v0.1.0", Commit: "0123456789abcdef0123456789abcdef01234567", BuiltAt: "2026-04-28T20:45:50Z"}

// fakeSystemd is systemd as systemctl sees it; runner records the calls
// (systemtest.Runner) and answers from it. fail makes the named verb exit 1;
// startLimitHit are units that crash-looped into systemd's start limit:
// systemd refuses to start them until `reset-failed`.
type fakeSystemd struct {
	mu            sync.Mutex
	fail          string
	enabled       bool
	startLimitHit map[string]bool
}

func (f *fakeSystemd) runner() *systemtest.Runner { return &systemtest.Runner{Reply: f.reply} }

func (f *fakeSystemd) reply(c system.Command) (system.Output, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.Path != "systemctl" {
		// `<binary> --version`
		return systemtest.Print(filepath.Base(c.Path) + " v0.1.0 (commit 01234567, built 2026-04-28T20:45:50Z)\n")
	}
	verb := c.Args[0]
	if verb == f.fail {
		return systemtest.Exit(1, "Failed to "+verb+": boom")
	}
	switch verb {
	case "reset-failed":
		for _, u := range c.Args[1:] {
			delete(f.startLimitHit, u)
		}
	case "start", "restart":
		for _, u := range c.Args[1:] {
			if f.startLimitHit[u] {
				return systemtest.Exit(1, "Job for "+u+" failed because start of the service was attempted too often.")
			}
		}
	case "enable":
		f.enabled = true
	case "disable":
		f.enabled = false
	case "is-enabled":
		if !f.enabled {
			return system.Output{ExitCode: 1, Stdout: []byte("disabled\n")}, nil
		}
		return systemtest.Print("enabled\n")
	case "is-active":
		return systemtest.Print("active\n")
	}
	return system.Output{}, nil
}

// sourceDir makes a build output directory with three fake binaries.
func sourceDir(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"banger", "bangerd", "banger-vsock-agent"} {
		script := fmt.Sprintf("#!/bin/sh\necho '%s %s'\n", n, version)
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entry is what the tree comparison looks at for one path.
type entry struct {
	Kind     string
	Mode     fs.FileMode
	UID, GID uint32
	Sum      string
}

func (e entry) String() string {
	return fmt.Sprintf("%s %v %d:%d %.8s", e.Kind, e.Mode, e.UID, e.GID, e.Sum)
}

// snapshot records every path under root (relative, "/"-rooted).
func snapshot(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.IsDir():
			e.Kind = "dir"
		case fi.Mode().IsRegular():
			e.Kind = "file"
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			e.Sum = hex.EncodeToString(sum[:])
		default:
			e.Kind = fi.Mode().Type().String()
		}
		out[strings.TrimPrefix(p, root)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(before, after map[string]entry) []string {
	var d []string
	for p, a := range after {
		if b, ok := before[p]; !ok {
			d = append(d, "+ "+p+" "+a.String())
		} else if b != a {
			d = append(d, "~ "+p+" "+b.String()+" -> "+a.String())
		}
	}
	for p, b := range before {
		if _, ok := after[p]; !ok {
			d = append(d, "- "+p+" "+b.String())
		}
	}
	sort.Strings(d)
	return d
}

func assertSameTree(t *testing.T, what string, want, got map[string]entry) {
	t.Helper()
	if d := diffTrees(want, got); len(d) > 0 {
		t.Fatalf("%s: tree differs:\n%s", what, strings.Join(d, "\n"))
	}
}

// priorTree is a system root with unrelated things banger must not touch.
func priorTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range map[string]string{
		"/usr/local/bin/other-tool":                                 "#!/bin/sh\n",
		"/etc/systemd/system/other.service":                         "[Service]\nExecStart=/bin/true\n",
		"/etc/sysctl.d/10-local.conf":                               "vm.swappiness = 10\n",
		"/var/lib/other/data":                                       "x",
		"/etc/hostname":                                             "box\n",
		"/etc/modules-load.d/local.conf":                            "",
		"/usr/local/lib/python3/site.py":                            "",
		"/run/lock/.keep":                                           "",
		"/etc/systemd/system/multi-user.target.wants/other.service": "",
	} {
		full := filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return root
}

func opts(root, src string, r system.Runner) Options {
	return Options{
		Root: root, Owner: testOwner, SourceDir: src, Build: testBuild,
		Now:       func() time.Time { return time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC) },
		Systemctl: r,
	}
}

func TestInstallExactTreeAndUninstallRestoresIt(t *testing.T) {
	requireRoot(t)
	root := priorTree(t)
	before := snapshot(t, root)
	res, err := Install(context.Background(), opts(root, sourceDir(t, "v1"), nil))
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, root)

	file := func(mode fs.FileMode) entry { return entry{Kind: "file", Mode: mode} }
	dir := func(mode fs.FileMode, uid, gid uint32) entry {
		return entry{Kind: "dir", Mode: fs.ModeDir | mode, UID: uid, GID: gid}
	}
	want := map[string]entry{
		"/usr/local/bin/banger":                          file(0o755),
		"/usr/local/bin/bangerd":                         file(0o755),
		"/usr/local/lib/banger":                          dir(0o755, 0, 0),
		"/usr/local/lib/banger/banger-vsock-agent":       file(0o755),
		"/etc/banger":                                    dir(0o755, 0, 0),
		"/etc/banger/install.toml":                       file(0o644),
		"/etc/banger/install-manifest.toml":              file(0o644),
		"/etc/systemd/system/bangerd.service":            file(0o644),
		"/etc/systemd/system/banger-root-helper.service": file(0o644),
		"/etc/sysctl.d/60-banger.conf":                   file(0o644),
		"/etc/modules-load.d/banger.conf":                file(0o644),
		"/etc/tmpfiles.d":                                dir(0o755, 0, 0),
		"/etc/tmpfiles.d/banger.conf":                    file(0o644),
		"/var/lib/banger":                                dir(0o700, 4242, 4343),
		"/var/lib/banger-jail":                           dir(0o755, 0, 0),
		"/run/banger":                                    dir(0o770|fs.ModeSticky, 0, 4343),
	}
	added := map[string]bool{}
	for p, a := range after {
		b, existed := before[p]
		if existed && b == a {
			continue
		}
		added[p] = true
		w, ok := want[p]
		if !ok {
			t.Errorf("unexpected change at %s: %v", p, a)
			continue
		}
		if a.Kind != w.Kind || a.Mode != w.Mode || a.UID != w.UID || a.GID != w.GID {
			t.Errorf("%s is %v, want %v", p, a, w)
		}
	}
	for p := range want {
		if !added[p] {
			t.Errorf("install did not create %s", p)
		}
	}
	if len(before)+len(want) != len(after) {
		t.Errorf("tree has %d entries, want %d before + %d new", len(after), len(before), len(want))
	}

	meta, err := installmeta.Read(filepath.Join(root, "etc/banger/install.toml"))
	must(t, err)
	if meta.OwnerUser != "alice" || meta.OwnerUID != 4242 || meta.OwnerGID != 4343 || meta.Home != "/home/alice" ||
		meta.Version != "v0.1.0" || meta.Commit != testBuild.Commit || !meta.InstalledAt.Equal(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("install.toml = %+v", meta)
	}
	if len(res.Changed) == 0 {
		t.Error("first install reported no changes")
	}

	// Idempotent: a second run changes nothing, not even InstalledAt.
	o := opts(root, sourceDir(t, "v1"), nil)
	o.Now = func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }
	res, err = Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 0 {
		t.Errorf("second install changed: %q", res.Changed)
	}
	assertSameTree(t, "second install", after, snapshot(t, root))

	res, err = Uninstall(context.Background(), UninstallOptions{Root: root, Purge: true})
	if err != nil {
		t.Fatalf("uninstall: %v (%+v)", err, res)
	}
	assertSameTree(t, "install then uninstall --purge", before, snapshot(t, root))
}

func TestInstallIntoEmptyRootAndBack(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	before := snapshot(t, root)
	_, err := Install(context.Background(), opts(root, sourceDir(t, "v1"), nil))
	must(t, err)
	// The helper's runtime dir and the daemon's state under a helper socket.
	must(t, os.WriteFile(filepath.Join(root, "run/banger/bangerd.sock"), nil, 0o600))
	_, err = Uninstall(context.Background(), UninstallOptions{Root: root, Purge: true})
	must(t, err)
	assertSameTree(t, "empty root", before, snapshot(t, root))
}

func TestUninstallKeepsStateWithoutPurge(t *testing.T) {
	requireRoot(t)
	root := priorTree(t)
	before := snapshot(t, root)
	_, err := Install(context.Background(), opts(root, sourceDir(t, "v1"), nil))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(root, "var/lib/banger/banger.db"), []byte("db"), 0o600))
	must(t, os.WriteFile(filepath.Join(root, "etc/banger/config.toml"), []byte("[vm]\n"), 0o644))
	sock := filepath.Join(root, "run/banger/root-helper.sock")
	must(t, os.WriteFile(sock, nil, 0o600))

	res, err := Uninstall(context.Background(), UninstallOptions{Root: root})
	must(t, err)
	kept := []string{"+ /etc/banger ", "+ /etc/banger/config.toml ", "+ /var/lib/banger ", "+ /var/lib/banger/banger.db "}
	d := diffTrees(before, snapshot(t, root))
	if len(d) != len(kept) {
		t.Fatalf("after uninstall without --purge:\n%s", strings.Join(d, "\n"))
	}
	for i, k := range kept {
		if !strings.HasPrefix(d[i], k) {
			t.Errorf("kept %q, want %q", d[i], k)
		}
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "--purge") {
		t.Errorf("warnings %q", res.Warnings)
	}
	// A later install adopts the kept state; purge then removes everything.
	_, err = Install(context.Background(), opts(root, sourceDir(t, "v1"), nil))
	must(t, err)
	_, err = Uninstall(context.Background(), UninstallOptions{Root: root, Purge: true})
	must(t, err)
	assertSameTree(t, "purge", before, snapshot(t, root))
}

func TestInstallRollsBackEveryStep(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	t.Run("systemctl enable fails", func(t *testing.T) {
		root := priorTree(t)
		before := snapshot(t, root)
		r := (&fakeSystemd{fail: "enable"}).runner()
		_, err := Install(ctx, opts(root, sourceDir(t, "v1"), r))
		if err == nil || !strings.Contains(err.Error(), "Failed to enable: boom") || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("err = %v", err)
		}
		assertSameTree(t, "after failed install", before, snapshot(t, root))
		calls := r.Lines()
		if calls[len(calls)-1] != "systemctl daemon-reload" {
			t.Errorf("rollback did not reload systemd: %q", calls)
		}
	})
	t.Run("start fails after enable", func(t *testing.T) {
		root := priorTree(t)
		before := snapshot(t, root)
		r := (&fakeSystemd{fail: "restart"}).runner()
		if _, err := Install(ctx, opts(root, sourceDir(t, "v1"), r)); err == nil {
			t.Fatal("install succeeded")
		}
		assertSameTree(t, "after failed start", before, snapshot(t, root))
		if !slices.Contains(r.Lines(), "systemctl disable --now bangerd.service banger-root-helper.service") {
			t.Errorf("rollback did not disable the units it enabled: %q", r.Lines())
		}
	})
	t.Run("a unit path is occupied", func(t *testing.T) {
		root := priorTree(t)
		must(t, os.MkdirAll(filepath.Join(root, "etc/systemd/system/banger-root-helper.service"), 0o755))
		before := snapshot(t, root)
		_, err := Install(ctx, opts(root, sourceDir(t, "v1"), nil))
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err = %v", err)
		}
		assertSameTree(t, "after failed write", before, snapshot(t, root))
	})
	t.Run("upgrade fails and the previous install is restored", func(t *testing.T) {
		root := priorTree(t)
		_, err := Install(ctx, opts(root, sourceDir(t, "v1"), (&fakeSystemd{}).runner()))
		must(t, err)
		v1 := snapshot(t, root)
		o := opts(root, sourceDir(t, "v2"), (&fakeSystemd{enabled: true, fail: "restart"}).runner())
		o.Build.Version = "v0.2.0"
		o.Owner.Home = "/home/alice2"
		if _, err := Install(ctx, o); err == nil {
			t.Fatal("upgrade succeeded")
		}
		assertSameTree(t, "after failed upgrade", v1, snapshot(t, root))
	})
}

func TestInstallSystemctlSequence(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	sd := &fakeSystemd{}
	r := sd.runner()
	res, err := Install(context.Background(), opts(root, sourceDir(t, "v1"), r))
	must(t, err)
	want := []string{
		"systemctl daemon-reload",
		"systemctl is-enabled --quiet bangerd.service",
		"systemctl is-enabled --quiet banger-root-helper.service",
		"systemctl enable banger-root-helper.service bangerd.service",
		"systemctl reset-failed banger-root-helper.service bangerd.service",
		"systemctl restart banger-root-helper.service bangerd.service",
		"systemctl restart systemd-sysctl.service systemd-modules-load.service",
	}
	if got := r.Lines(); !slices.Equal(got, want) {
		t.Fatalf("first install ran:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Contains(res.Changed, "enabled bangerd.service and banger-root-helper.service") {
		t.Errorf("changes %q", res.Changed)
	}
	// Nothing changed: no reload, no restart, just make sure they run.
	r = sd.runner()
	_, err = Install(context.Background(), opts(root, sourceDir(t, "v1"), r))
	must(t, err)
	want = []string{
		"systemctl is-enabled --quiet bangerd.service",
		"systemctl is-enabled --quiet banger-root-helper.service",
		"systemctl enable banger-root-helper.service bangerd.service",
		"systemctl reset-failed banger-root-helper.service bangerd.service",
		"systemctl start banger-root-helper.service bangerd.service",
		"systemctl restart systemd-sysctl.service systemd-modules-load.service",
	}
	if got := r.Lines(); !slices.Equal(got, want) {
		t.Fatalf("second install ran:\n%s", strings.Join(got, "\n"))
	}

	r = sd.runner()
	res, err = Uninstall(context.Background(), UninstallOptions{Root: root, Purge: true, Systemctl: r,
		TeardownNetwork: func(context.Context) error { return privileged.ErrNotAvailable }})
	must(t, err)
	want = []string{"systemctl disable --now bangerd.service banger-root-helper.service", "systemctl daemon-reload"}
	if got := r.Lines(); !slices.Equal(got, want) {
		t.Fatalf("uninstall ran %q", got)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "bridge and NAT") {
		t.Errorf("uninstall warnings %q", res.Warnings)
	}
}

// A daemon that crash-looped into systemd's start limit (found by the
// system tier: a broken bangerd restarted every 2 s is refused after five
// starts) must come back with `banger system restart` or a reinstall once
// its cause is fixed, as status and doctor tell the user to do.
func TestRestartAfterStartLimit(t *testing.T) {
	r := (&fakeSystemd{enabled: true, startLimitHit: map[string]bool{DaemonUnit: true}}).runner()
	if err := Restart(context.Background(), r); err != nil {
		t.Fatalf("restart of a unit past its start limit: %v", err)
	}

	requireRoot(t)
	root := t.TempDir()
	_, err := Install(context.Background(), opts(root, sourceDir(t, "v1"), (&fakeSystemd{}).runner()))
	must(t, err)
	r = (&fakeSystemd{enabled: true, startLimitHit: map[string]bool{DaemonUnit: true, HelperUnit: true}}).runner()
	if _, err := Install(context.Background(), opts(root, sourceDir(t, "v2"), r)); err != nil {
		t.Fatalf("reinstall over units past their start limit: %v\n%s", err, strings.Join(r.Lines(), "\n"))
	}
}

func TestInstallRefusals(t *testing.T) {
	root := t.TempDir()
	bad := []Owner{
		{User: "root", UID: 0, GID: 0, Group: "root", Home: "/root"},
		{User: "al ice", UID: 1000, GID: 1000, Group: "alice", Home: "/home/alice"},
		{User: "alice\nExecStartPre=/bin/sh", UID: 1000, GID: 1000, Group: "alice", Home: "/home/alice"},
		{User: "alice", UID: 1000, GID: 1000, Group: "alice", Home: "relative"},
		{User: "alice", UID: 1000, GID: 1000, Group: "alice", Home: "/home/al ice"},
		{User: "alice", UID: 1000, GID: 1000, Group: "alice", Home: "/"},
		{User: "alice", UID: 1000, GID: 1000, Group: "", Home: "/home/alice"},
		{User: "-alice", UID: 1000, GID: 1000, Group: "alice", Home: "/home/alice"},
	}
	for _, o := range bad {
		op := opts(root, "", nil)
		op.Owner = o
		if _, err := Install(context.Background(), op); err == nil {
			t.Errorf("owner %+v accepted", o)
		}
	}
	empty := t.TempDir()
	if _, err := Install(context.Background(), opts(root, empty, nil)); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("source without binaries: %v", err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("refused installs left %d entries", len(entries))
	}
}

func TestLookupOwner(t *testing.T) {
	if _, err := LookupOwner("root"); err == nil || !strings.Contains(err.Error(), "cannot be root") {
		t.Errorf("root: %v", err)
	}
	o, err := LookupOwner("nobody")
	if err != nil {
		t.Skipf("no nobody user here: %v", err)
	}
	if o.UID != 65534 || o.User != "nobody" || o.Home == "" {
		t.Errorf("nobody = %+v", o)
	}
	if _, err := LookupOwner("no-such-user-banger"); err == nil {
		t.Error("unknown user accepted")
	}
}

func TestStatus(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	ctx := context.Background()
	st, err := ReadStatus(ctx, StatusOptions{Root: root})
	must(t, err)
	if st.Installed || len(st.Problems) != 0 {
		t.Fatalf("empty root: %+v", st)
	}
	r := (&fakeSystemd{}).runner()
	_, err = Install(ctx, opts(root, sourceDir(t, "v1"), r))
	must(t, err)
	st, err = ReadStatus(ctx, StatusOptions{Root: root, Runner: r})
	must(t, err)
	if !st.Installed || st.Install.OwnerUID != 4242 || st.Units[0].Active != "active" || st.Binaries[1].Version == "" {
		t.Fatalf("installed: %+v", st)
	}
	if len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "socket") {
		t.Fatalf("problems %q, want the missing helper socket", st.Problems)
	}
	must(t, os.MkdirAll(filepath.Join(root, "run/banger"), 0o755))
	sock := filepath.Join(root, "run/banger/root-helper.sock")
	ln, err := privileged.Listen(sock, 0)
	must(t, err)
	defer func() { _ = ln.Close() }()
	st, err = ReadStatus(ctx, StatusOptions{Root: root, Runner: r, HelperInfo: func(context.Context) (privileged.HelperInfo, error) {
		return privileged.HelperInfo{OwnerUID: 1000, Version: "v0.1.0", Jailer: "/usr/local/bin/jailer"}, nil
	}})
	must(t, err)
	if !st.Helper.Reachable || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "serves uid 1000") {
		t.Fatalf("owner mismatch not reported: %+v", st)
	}
	// An unreachable helper is named once, however its error starts.
	for _, herr := range []string{"root helper at /run/banger/root-helper.sock: connection refused", "connection refused"} {
		st, err := ReadStatus(ctx, StatusOptions{Root: root, Runner: r, HelperInfo: func(context.Context) (privileged.HelperInfo, error) {
			return privileged.HelperInfo{}, errors.New(herr)
		}})
		must(t, err)
		if len(st.Problems) != 1 || strings.Count(st.Problems[0], "root helper") != 1 {
			t.Errorf("helper error %q reported as %q", herr, st.Problems)
		}
	}
	var out bytes.Buffer
	must(t, st.Render(&out))
	for _, want := range []string{"banger v0.1.0 (commit 01234567", "alice (uid 4242, gid 4343)", "bangerd.service", "active, enabled", "problem: the root helper serves uid 1000",
		"launches /usr/local/bin/jailer"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}

// copyHostUnits gives a test root the host's stock units (targets and
// services our units order against), so `systemd-analyze --root` resolves
// them. Symlinked units are skipped: they would point outside the root.
func copyHostUnits(t *testing.T, root string) {
	t.Helper()
	src := "/usr/lib/systemd/system"
	dst := filepath.Join(root, src)
	must(t, os.MkdirAll(dst, 0o755))
	entries, err := os.ReadDir(src)
	must(t, err)
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644))
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9]+\.[0-9]+)`)

func TestUnitsPassSystemdAnalyze(t *testing.T) {
	requireRoot(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd); .ci/run installs it")
	}
	if _, err := os.Stat("/usr/lib/systemd/system/multi-user.target"); err != nil {
		t.Skip("no stock systemd units under /usr/lib/systemd/system to verify against")
	}
	root := t.TempDir()
	_, err = Install(context.Background(), opts(root, sourceDir(t, "v1"), nil))
	must(t, err)
	copyHostUnits(t, root)

	out, err := exec.Command(analyze, "verify", "--root="+root, DaemonUnit, HelperUnit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	limits := map[string]float64{DaemonUnit: 2.5, HelperUnit: 3.5}
	for unit, limit := range limits {
		out, err := exec.Command(analyze, "security", "--offline=yes", "--root="+root, unit).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
		}
		m := exposureLine.FindSubmatch(out)
		if m == nil || string(m[1]) != unit {
			t.Fatalf("no exposure line for %s in:\n%s", unit, out)
		}
		exposure, err := strconv.ParseFloat(string(m[2]), 64)
		must(t, err)
		t.Logf("%s: exposure %.1f (limit %.1f)", unit, exposure, limit)
		if exposure > limit {
			t.Errorf("%s exposure %.1f exceeds %.1f:\n%s", unit, exposure, limit, out)
		}
	}
}

func TestUnitContent(t *testing.T) {
	p := unitParams{Owner: testOwner, Bangerd: BangerdPath, Runtime: "/run/banger", Jails: "/var/lib/banger-jail", RestartStatus: 75}
	daemon, err := render("d", daemonUnitTemplate, p)
	must(t, err)
	helper, err := render("h", helperUnitTemplate, p)
	must(t, err)
	tmpfiles, err := render("t", tmpfilesTemplate, p)
	must(t, err)
	for _, want := range []string{"User=alice\n", "Group=alice\n", "ExecStart=/usr/local/bin/bangerd --system\n",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "KillMode=process\n", "NoNewPrivileges=yes\n", "BindReadOnlyPaths=-/home/alice\n", "DeviceAllow=/dev/kvm rw\n",
		// Ready when the API answers; exit 75 (a config reload) restarts it.
		"Type=notify\n", "SuccessExitStatus=75\n", "RestartForceExitStatus=75\n"} {
		if !bytes.Contains(daemon, []byte(want)) {
			t.Errorf("daemon unit lacks %q", want)
		}
	}
	if bytes.Contains(helper, []byte("User=")) {
		t.Error("helper unit must run as root")
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/bangerd --root-helper\n", "RestrictAddressFamilies=AF_UNIX AF_NETLINK\n", "IPAddressDeny=any\n",
		"KillMode=process\n", "ReadWritePaths=/var/lib/banger-jail\n", "RestrictNamespaces=mnt\n", "Type=notify\n"} {
		if !bytes.Contains(helper, []byte(want)) {
			t.Errorf("helper unit lacks %q", want)
		}
	}
	caps := regexp.MustCompile(`(?m)^CapabilityBoundingSet=(.*)$`).FindSubmatch(helper)
	// The first five serve the menu; the rest only the jailer (units.go says why).
	if got := strings.Fields(string(caps[1])); !slices.Equal(got, []string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_READ_SEARCH",
		"CAP_MKNOD", "CAP_SYS_CHROOT", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}) {
		t.Errorf("helper capabilities %q", got)
	}
	if !bytes.Contains(tmpfiles, []byte("d /run/banger 1770 root alice -\n")) {
		t.Errorf("tmpfiles: %s", tmpfiles)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
