package updater

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

const (
	oldVersion = "v0.1.0"
	newVersion = "v0.2.0"
	testArch   = "amd64"
)

// fixture is a system install of oldVersion under a temporary root and a
// release server offering newVersion on the stable channel.
type fixture struct {
	root     string
	srv      *u.Server
	key      u.Key
	runner   *u.Runner
	progress bytes.Buffer
	meta     installmeta.Meta
	tarball  string // newVersion's tarball name
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), runner: &u.Runner{SchemaExit: 1}, key: u.NewKey(t)}
	f.meta = u.Install(t, f.root, oldVersion)
	// As an earlier update would have left it, so "untouched" can be
	// checked byte for byte, directories included.
	if err := EnsureStagingDir(DefaultStagingDir(f.root)); err != nil {
		t.Fatal(err)
	}
	f.srv = u.NewServer(t)
	f.srv.Publish(t, u.Release{Version: oldVersion, Arch: testArch, Key: f.key})
	f.tarball = f.srv.Publish(t, u.Release{Version: newVersion, Arch: testArch, Channel: "stable", Key: f.key})
	return f
}

func (f *fixture) opts() Options {
	return Options{
		BaseURL:   f.srv.URL,
		PublicKey: f.key.Public,
		Fetcher:   download.New(download.Options{Client: f.srv.Client()}),
		Runner:    f.runner,
		Root:      f.root,
		Arch:      testArch,
		Running:   buildinfo.Info{Version: oldVersion},
		Progress:  &f.progress,
		Units:     []string{"banger-root-helper.service", "bangerd.service"},
		Sleep:     func(context.Context, time.Duration) error { return nil },
	}
}

func (f *fixture) update(t *testing.T, opts Options) (Result, error) {
	t.Helper()
	plan, err := Check(context.Background(), opts)
	if err != nil {
		return Result{}, err
	}
	return Apply(context.Background(), opts, plan)
}

func (f *fixture) installed(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestUpdateHappyPath(t *testing.T) {
	f := newFixture(t)
	tg := DefaultInstallTargets(f.root)
	sawBackups := false
	f.runner.Doctor = func(version string) []string {
		if version == newVersion {
			// Doctor runs on the new install while the backups still exist:
			// rollback must stay possible until it passes.
			sawBackups = true
			for _, p := range []string{tg.Banger, tg.Bangerd, tg.VsockAgent} {
				if got, err := os.ReadFile(p + ".previous"); err != nil || !strings.Contains(string(got), oldVersion) {
					t.Errorf("during doctor %s.previous = %q, %v", p, got, err)
				}
			}
		}
		return nil
	}
	res, err := f.update(t, f.opts())
	if err != nil {
		t.Fatalf("update: %v\nprogress:\n%s", err, f.progress.String())
	}
	if !sawBackups {
		t.Fatal("the new install's doctor never ran")
	}
	for path, name := range map[string]string{tg.Banger: BangerBinary, tg.Bangerd: BangerdBinary, tg.VsockAgent: VsockAgentBinary} {
		if got := f.installed(t, path); got != string(u.FakeBinary(name, newVersion)) {
			t.Errorf("%s = %q, want the new release", path, got)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode = %v, want 0755 whatever the tar header said", path, st.Mode().Perm())
		}
		if _, err := os.Lstat(path + ".previous"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s.previous still there after doctor passed", path)
		}
	}
	meta, err := installmeta.Read(paths.System(f.root).InstallMetaPath())
	if err != nil {
		t.Fatal(err)
	}
	want := f.meta
	want.Version, want.Commit, want.BuiltAt = newVersion, "commit-"+newVersion, "2026-05-01T12:00:00Z"
	if !meta.InstalledAt.Equal(want.InstalledAt) {
		t.Errorf("InstalledAt changed: %v", meta.InstalledAt)
	}
	meta.InstalledAt = want.InstalledAt
	if meta != want {
		t.Errorf("install.toml = %+v, want %+v", meta, want)
	}
	if res.From.Version != oldVersion || res.To.Version != newVersion || res.Action != ActionUpdate || len(res.Replaced) != 3 || len(res.Warnings) != 0 {
		t.Errorf("result = %+v", res)
	}
	if !strings.HasPrefix(res.SchemaCheck, "migrations needed") {
		t.Errorf("schema check = %q", res.SchemaCheck)
	}
	wantCalls := []string{
		"banger version --json",
		"bangerd --check-migrations --system",
		"banger doctor --system --json",
		"systemctl restart banger-root-helper.service",
		"systemctl restart bangerd.service",
		"banger doctor --system --json",
	}
	if got := f.runner.CallLines(); !slices.Equal(got, wantCalls) {
		t.Errorf("commands run:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantCalls, "\n"))
	}
	calls := f.runner.Calls()
	staging := DefaultStagingDir(f.root)
	if !strings.HasPrefix(calls[0].Path, staging) || !strings.HasPrefix(calls[1].Path, staging) {
		t.Errorf("the version and schema checks must run the staged binaries, ran %s and %s", calls[0].Path, calls[1].Path)
	}
	if calls[2].Path != tg.Banger || calls[5].Path != tg.Banger {
		t.Errorf("doctor must run the installed banger, ran %s and %s", calls[2].Path, calls[5].Path)
	}
	if !slices.Contains(calls[1].Env, "BANGER_SYSTEM_ROOT="+f.root) {
		t.Errorf("schema check env = %v, want the install root", calls[1].Env)
	}
	if entries, _ := os.ReadDir(staging); len(entries) != 0 {
		t.Errorf("staging directory not cleaned: %v", entries)
	}
	for _, step := range []string{"verified the signature", "state database: migrations needed", "replaced " + tg.VsockAgent, "removed the .previous backups"} {
		if !strings.Contains(f.progress.String(), step) {
			t.Errorf("progress lacks %q:\n%s", step, f.progress.String())
		}
	}

	// A second run finds nothing to do and touches nothing.
	before := u.Snapshot(t, f.root)
	n := len(f.runner.Calls())
	plan, err := Check(context.Background(), f.opts())
	if err != nil || plan.Action != ActionNone || plan.UpdateAvailable() {
		t.Fatalf("second check: %+v, %v", plan, err)
	}
	if _, err := Apply(context.Background(), f.opts(), plan); err != nil {
		t.Fatal(err)
	}
	if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 || len(f.runner.Calls()) != n {
		t.Fatalf("an up-to-date run changed things: %v", d)
	}
}

// TestRefusalsLeaveInstallUntouched covers every way a release is refused
// before the swap. Each must leave the install root byte-identical, and
// the download and staging refusals must run nothing at all.
func TestRefusalsLeaveInstallUntouched(t *testing.T) {
	tarPath := func(f *fixture) string { return "/" + newVersion + "/" + f.tarball }
	// republish replaces newVersion's tarball (re-signing SHA256SUMS), so
	// the refusal comes from staging, not from the checksum.
	republish := func(entries []u.Entry) func(*testing.T, *fixture, *Options) {
		return func(t *testing.T, f *fixture, _ *Options) {
			f.srv.Publish(t, u.Release{Version: newVersion, Arch: testArch, Channel: "stable", Key: f.key, Tarball: u.Tarball(t, entries)})
		}
	}
	bins := u.Binaries(newVersion)
	binsPlus := func(extra ...u.Entry) []u.Entry { return append(slices.Clone(bins), extra...) }
	for _, tc := range []struct {
		name     string
		setup    func(*testing.T, *fixture, *Options)
		want     string
		is       error
		ranStage bool // staged binaries may have run (refusals after staging)
	}{
		{
			name: "bad signature",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", []byte("MEUCIQDxAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
			},
			is: ErrBadSignature, want: "does not match the release key",
		},
		{
			name: "signature not base64",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", []byte("not base64!"))
			},
			is: ErrBadSignature, want: "not base64",
		},
		{
			name: "signature by another key",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				other := u.NewKey(t)
				f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", other.Sign(t, f.srv.Get("/"+newVersion+"/SHA256SUMS")))
			},
			is: ErrBadSignature,
		},
		{
			name: "SHA256SUMS changed after signing",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				p := "/" + newVersion + "/SHA256SUMS"
				f.srv.Set(p, append(f.srv.Get(p), []byte(u.SHA256(nil)+"  extra.tar.gz\n")...))
			},
			is: ErrBadSignature,
		},
		{
			name:  "placeholder key",
			setup: func(t *testing.T, f *fixture, o *Options) { o.PublicKey = PlaceholderPublicKey },
			is:    ErrPlaceholderKey, want: "built without the release signing key",
		},
		{
			name: "SHA256SUMS missing the tarball",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				sums := []byte(u.SHA256([]byte("x")) + "  banger_0.2.0_linux_arm64.tar.gz\n")
				f.srv.Set("/"+newVersion+"/SHA256SUMS", sums)
				f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", f.key.Sign(t, sums))
			},
			want: "does not list banger_0.2.0_linux_amd64.tar.gz",
		},
		{
			name: "malformed SHA256SUMS",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				sums := []byte(strings.ToUpper(u.SHA256([]byte("x"))) + "  " + f.tarball + "\n")
				f.srv.Set("/"+newVersion+"/SHA256SUMS", sums)
				f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", f.key.Sign(t, sums))
			},
			want: "64 lowercase hex digits",
		},
		{
			name: "sha256 mismatch mid-stream",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				good := f.srv.Get(tarPath(f))
				f.srv.Handle(tarPath(f), func(w http.ResponseWriter, r *http.Request) {
					bad := bytes.Clone(good)
					bad[len(bad)/2] ^= 0xff
					w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
					w.Write(bad[:len(bad)/2])
					w.(http.Flusher).Flush()
					w.Write(bad[len(bad)/2:])
				})
			},
			is: download.ErrChecksumMismatch,
		},
		{
			name: "download cut mid-stream",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				good := f.srv.Get(tarPath(f))
				f.srv.Handle(tarPath(f), func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", strconv.Itoa(len(good)))
					w.Write(good[:len(good)/2])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				})
			},
			want: "interrupted",
		},
		{
			name: "tarball trickles",
			setup: func(t *testing.T, f *fixture, o *Options) {
				good := f.srv.Get(tarPath(f))
				f.srv.Handle(tarPath(f), func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", strconv.Itoa(len(good)))
					for _, b := range good {
						if _, err := w.Write([]byte{b}); err != nil {
							return
						}
						w.(http.Flusher).Flush()
						select {
						case <-r.Context().Done():
							return
						case <-time.After(50 * time.Millisecond):
						}
					}
				})
				o.Fetcher = download.New(download.Options{Client: f.srv.Client(), MinRate: 100, RateWindow: time.Second})
			},
			is: download.ErrStalled, want: "stalled: ",
		},
		{
			name: "truncated tarball",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				whole := u.Tarball(t, bins)
				f.srv.Publish(t, u.Release{Version: newVersion, Arch: testArch, Channel: "stable", Key: f.key, Tarball: whole[:len(whole)-10]})
			},
			is: ErrBadTarball, want: "unexpected EOF",
		},
		{name: "extra entry", setup: republish(binsPlus(u.Entry{Name: "README", Body: []byte("hi")})), is: ErrBadTarball, want: `unexpected entry "README"`},
		{name: "missing entry", setup: republish(bins[:2]), is: ErrBadTarball, want: "missing banger-vsock-agent"},
		{name: "duplicate entry", setup: republish(binsPlus(u.Entry{Name: "bangerd", Body: []byte("evil")})), is: ErrBadTarball, want: `"bangerd" appears twice`},
		{name: "dot-dot entry", setup: republish(binsPlus(u.Entry{Name: "../../usr/local/bin/evil", Body: []byte("x")})), is: ErrBadTarball, want: "escapes the archive"},
		{name: "absolute path", setup: republish(binsPlus(u.Entry{Name: "/usr/local/bin/banger", Body: []byte("x")})), is: ErrBadTarball, want: "absolute path"},
		{name: "symlink", setup: republish(append([]u.Entry{{Name: "banger", Type: tar.TypeSymlink, Linkname: "/bin/sh"}}, bins[1:]...)), is: ErrBadTarball, want: "is a symlink"},
		{name: "hardlink", setup: republish(append([]u.Entry{{Name: "banger", Type: tar.TypeLink, Linkname: "bangerd"}}, bins[1:]...)), is: ErrBadTarball, want: "is a hard link"},
		{name: "device", setup: republish(append([]u.Entry{{Name: "banger", Type: tar.TypeChar}}, bins[1:]...)), is: ErrBadTarball, want: "character device"},
		{name: "directory", setup: republish(binsPlus(u.Entry{Name: "lib/", Type: tar.TypeDir})), is: ErrBadTarball, want: "is a directory"},
		{name: "oversize entry", setup: republish(append([]u.Entry{{Name: "banger", Body: []byte("x"), Size: MaxBinarySize + 1}}, bins[1:]...)), is: ErrBadTarball, want: "more than the 268435456 allowed"},
		{
			name:     "incompatible schema",
			setup:    func(t *testing.T, f *fixture, _ *Options) { f.runner.SchemaExit = 2 },
			is:       ErrIncompatibleSchema,
			want:     "incompatible: database has unknown migrations [9]",
			ranStage: true,
		},
		{
			name:     "schema check crashes",
			setup:    func(t *testing.T, f *fixture, _ *Options) { f.runner.SchemaExit = 3 },
			want:     "exited 3",
			ranStage: true,
		},
		{
			name:     "release is not the version it claims",
			setup:    func(t *testing.T, f *fixture, _ *Options) { f.runner.VersionOverride = "v0.0.9" },
			want:     "holds banger v0.0.9",
			ranStage: true,
		},
		{
			name: "below min compatible version",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				f.srv.Publish(t, u.Release{Version: newVersion, Arch: testArch, Channel: "stable", Key: f.key, MinCompatible: "v0.1.5"})
			},
			want: "first run `sudo banger update --version v0.1.5`",
		},
		{
			name: "tarball name in manifest disagrees",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				m := strings.Replace(string(f.srv.Get("/manifest.json")), "banger_0.2.0_linux_amd64", "banger_0.1.0_linux_amd64", 1)
				f.srv.Set("/manifest.json", []byte(m))
			},
			want: `want "banger_0.2.0_linux_amd64.tar.gz"`,
		},
		{
			name: "staging directory is a symlink",
			setup: func(t *testing.T, f *fixture, _ *Options) {
				dir := DefaultStagingDir(f.root)
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(t.TempDir(), dir); err != nil {
					t.Fatal(err)
				}
			},
			want: "is not a directory",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			opts := f.opts()
			tc.setup(t, f, &opts)
			before := u.Snapshot(t, f.root)
			_, err := f.update(t, opts)
			if err == nil {
				t.Fatal("update succeeded, want a refusal")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
			var rb *RolledBackError
			if errors.As(err, &rb) {
				t.Errorf("a refusal before the swap must not need a rollback: %v", err)
			}
			if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
				t.Errorf("refusal changed the install root:\n%s", strings.Join(d, "\n"))
			}
			for _, line := range f.runner.CallLines() {
				if strings.HasPrefix(line, "systemctl") || !tc.ranStage {
					t.Errorf("refused update ran %q", line)
				}
			}
		})
	}
}

func TestPlaceholderKeyFetchesNothing(t *testing.T) {
	f := newFixture(t)
	opts := f.opts()
	opts.PublicKey = PlaceholderPublicKey
	plan, err := Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(plan.Err(), ErrPlaceholderKey) || plan.UpdateAvailable() || !strings.Contains(plan.Blocked, "release signing key") {
		t.Fatalf("plan = %+v", plan)
	}
	// Even handed a plan made with a real key, the download refuses first.
	opts.PublicKey = f.key.Public
	plan, err = Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.PublicKey = ""
	if _, err := Apply(context.Background(), opts, plan); !errors.Is(err, ErrPlaceholderKey) {
		t.Fatalf("err = %v, want ErrPlaceholderKey", err)
	}
	if n := f.srv.Hits("/" + newVersion + "/SHA256SUMS"); n != 0 {
		t.Fatalf("SHA256SUMS fetched %d times by a build that cannot verify it", n)
	}
}

func TestNotInstalledIsRefused(t *testing.T) {
	f := newFixture(t)
	if err := os.Remove(paths.System(f.root).InstallMetaPath()); err != nil {
		t.Fatal(err)
	}
	plan, err := Check(context.Background(), f.opts())
	if err != nil {
		t.Fatal(err)
	}
	if plan.Installed || plan.Current.Version != oldVersion || !errors.Is(plan.Err(), installmeta.ErrNotInstalled) {
		t.Fatalf("plan = %+v", plan)
	}
	if _, err := Apply(context.Background(), f.opts(), plan); !errors.Is(err, installmeta.ErrNotInstalled) || !strings.Contains(err.Error(), "banger system install") {
		t.Fatalf("err = %v", err)
	}
}

// TestRollbackAfterSwap covers failures after the point of no return: the
// install must come back byte-identical and the old binaries restarted.
func TestRollbackAfterSwap(t *testing.T) {
	for _, tc := range []struct {
		name        string
		setup       func(*testing.T, *fixture) context.Context
		step        string
		restarts    int
		wantInCause string
	}{
		{
			name: "doctor fails on the new install",
			setup: func(t *testing.T, f *fixture) context.Context {
				f.runner.Doctor = func(v string) []string {
					if v == newVersion {
						return []string{"daemon"}
					}
					return nil
				}
				return context.Background()
			},
			step: "banger doctor", restarts: 4, wantInCause: "checks failing on the new install: daemon",
		},
		{
			// Found by test/system under a real systemd: the broken daemon,
			// restarted every 2 s, hits systemd's start limit while doctor
			// waits, and systemd refuses the rollback's restart.
			name: "the new daemon crash-looped into systemd's start limit",
			setup: func(t *testing.T, f *fixture) context.Context {
				f.runner.Doctor = func(v string) []string {
					if v == newVersion {
						return []string{"daemon"}
					}
					return nil
				}
				started, limited := false, false
				f.runner.Systemctl = func(args []string) (system.Output, error) {
					switch {
					case args[0] == "reset-failed":
						limited = false
					case args[0] == "restart" && args[len(args)-1] == "bangerd.service":
						if limited {
							return system.Output{ExitCode: 1, Stderr: []byte("Job for bangerd.service failed because start of the service was attempted too often.")}, nil
						}
						if !started {
							started, limited = true, true
						}
					}
					return system.Output{}, nil
				}
				return context.Background()
			},
			step: "banger doctor", restarts: 4, wantInCause: "checks failing on the new install: daemon",
		},
		{
			name: "restart fails",
			setup: func(t *testing.T, f *fixture) context.Context {
				n := 0
				f.runner.Systemctl = func(args []string) (system.Output, error) {
					n++
					if n == 2 {
						return system.Output{ExitCode: 1, Stderr: []byte("Job for bangerd.service failed.")}, nil
					}
					return system.Output{}, nil
				}
				return context.Background()
			},
			step: "restarting the services", restarts: 4, wantInCause: "Job for bangerd.service failed",
		},
		{
			name: "cancelled during restart",
			setup: func(t *testing.T, f *fixture) context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				f.runner.Systemctl = func(args []string) (system.Output, error) {
					cancel() // Ctrl-C while systemd works
					return system.Output{}, nil
				}
				return ctx
			},
			// The second restart is attempted (and refused by the cancelled
			// context); the rollback's two restarts then run regardless.
			step: "restarting the services", restarts: 4, wantInCause: "context canceled",
		},
		{
			name: "new binary cannot be placed",
			setup: func(t *testing.T, f *fixture) context.Context {
				// banger (swapped last) is replaced by a directory, so the
				// third replace fails after two succeeded.
				tg := DefaultInstallTargets(f.root)
				if err := os.Remove(tg.Banger); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(tg.Banger, 0o755); err != nil {
					t.Fatal(err)
				}
				return context.Background()
			},
			step: "replacing the binaries", restarts: 0, wantInCause: "2 of 3 replaced",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := tc.setup(t, f)
			before := u.Snapshot(t, f.root)
			opts := f.opts()
			plan, err := Check(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Apply(ctx, opts, plan)
			var rb *RolledBackError
			if !errors.As(err, &rb) {
				t.Fatalf("err = %v, want a RolledBackError\nprogress:\n%s", err, f.progress.String())
			}
			if rb.RollbackErr != nil || rb.Step != tc.step || !strings.Contains(rb.Err.Error(), tc.wantInCause) {
				t.Fatalf("rollback error = %+v (%v)", rb, err)
			}
			if !strings.Contains(err.Error(), "the previous install was restored") {
				t.Errorf("message = %v", err)
			}
			if len(res.Replaced) != 0 {
				t.Errorf("result still lists replacements after rollback: %+v", res.Replaced)
			}
			if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
				t.Fatalf("rollback did not restore the install:\n%s", strings.Join(d, "\n"))
			}
			var restarts int
			for _, l := range f.runner.CallLines() {
				if strings.HasPrefix(l, "systemctl restart") {
					restarts++
				}
			}
			if restarts != tc.restarts {
				t.Errorf("systemctl restarts = %d, want %d: %v", restarts, tc.restarts, f.runner.CallLines())
			}
		})
	}
}

func TestDoctorFailureAlreadyPresentDoesNotBlock(t *testing.T) {
	f := newFixture(t)
	f.runner.Doctor = func(string) []string { return []string{"kvm"} }
	if _, err := f.update(t, f.opts()); err != nil {
		t.Fatalf("a check failing before and after the update must not roll it back: %v", err)
	}
	if !strings.Contains(f.progress.String(), "doctor already fails on the current install (kvm)") {
		t.Errorf("progress:\n%s", f.progress.String())
	}
}

func TestDoctorRetriesWhileDaemonStarts(t *testing.T) {
	f := newFixture(t)
	calls := 0
	f.runner.Doctor = func(v string) []string {
		if v != newVersion {
			return nil
		}
		calls++
		if calls < 3 {
			return []string{"daemon"}
		}
		return nil
	}
	var slept []time.Duration
	opts := f.opts()
	opts.Sleep = func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	if _, err := f.update(t, opts); err != nil {
		t.Fatal(err)
	}
	if calls != 3 || len(slept) != 2 || slept[0] != DefaultDoctorInterval {
		t.Fatalf("doctor calls = %d, sleeps = %v", calls, slept)
	}
}

func TestConcurrentUpdateRefused(t *testing.T) {
	f := newFixture(t)
	lock, err := system.TryLock(DefaultStagingDir(f.root))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Unlock() }()
	before := u.Snapshot(t, f.root)
	if _, err := f.update(t, f.opts()); err == nil || !strings.Contains(err.Error(), "another `banger update` is running") {
		t.Fatalf("err = %v", err)
	}
	if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
		t.Fatalf("changed: %v", d)
	}
}

func TestFreshRootOnlyGainsStagingDir(t *testing.T) {
	// Without a staging directory from an earlier run, a refusal leaves
	// exactly one thing behind: the empty, private staging directory.
	f := newFixture(t)
	if err := os.RemoveAll(filepath.Join(f.root, "var")); err != nil {
		t.Fatal(err)
	}
	f.srv.Set("/"+newVersion+"/SHA256SUMS.sig", u.NewKey(t).Sign(t, f.srv.Get("/"+newVersion+"/SHA256SUMS")))
	before := u.Snapshot(t, f.root)
	if _, err := f.update(t, f.opts()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v", err)
	}
	d := u.DiffSnapshots(before, u.Snapshot(t, f.root))
	want := []string{"added var", "added var/cache", "added var/cache/banger-update"}
	if !slices.Equal(d, want) {
		t.Fatalf("diff = %v, want %v", d, want)
	}
	st, _ := os.Stat(DefaultStagingDir(f.root))
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("staging mode = %v", st.Mode().Perm())
	}
}

func TestCheckActions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		installed string
		version   string
		channel   string
		want      Action
		release   string
		wantErr   string
	}{
		{name: "newer on stable", installed: oldVersion, want: ActionUpdate, release: newVersion},
		{name: "up to date", installed: newVersion, want: ActionNone, release: newVersion},
		{name: "installed is newer than the channel", installed: "v0.3.0", want: ActionNone, release: newVersion},
		{name: "dev build", installed: "dev", want: ActionUpdate, release: newVersion},
		{name: "explicit reinstall", installed: newVersion, version: newVersion, want: ActionReinstall, release: newVersion},
		{name: "explicit downgrade", installed: newVersion, version: "0.1.0", want: ActionDowngrade, release: oldVersion},
		{name: "unknown version", installed: oldVersion, version: "v9.9.9", wantErr: "no release v9.9.9 (it has: v0.1.0, v0.2.0)"},
		{name: "bad version", installed: oldVersion, version: "latest", wantErr: `"latest" is not a release version`},
		{name: "unknown channel", installed: oldVersion, channel: "nightly", wantErr: `no channel "nightly" (it has: stable)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := f.meta
			m.Version = tc.installed
			if err := installmeta.Write(paths.System(f.root).InstallMetaPath(), m); err != nil {
				t.Fatal(err)
			}
			opts := f.opts()
			opts.Version, opts.Channel = tc.version, tc.channel
			plan, err := Check(ctx, opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.Action != tc.want || plan.Release.Version != tc.release || plan.Current.Version != tc.installed || !plan.Installed {
				t.Fatalf("plan = %+v", plan)
			}
			if plan.Release.URL != f.srv.URL+"/"+tc.release || plan.Release.Arch != testArch {
				t.Fatalf("release = %+v", plan.Release)
			}
		})
	}
}

func TestCheckArchWithoutBuild(t *testing.T) {
	f := newFixture(t)
	opts := f.opts()
	opts.Arch = "arm64"
	if _, err := Check(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "has no build for linux/arm64 (it has: amd64)") {
		t.Fatalf("err = %v", err)
	}
}
