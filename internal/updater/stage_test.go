package updater

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

func writeTarball(t testing.TB, dir string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, "release.tar.gz")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStageTarball(t *testing.T) {
	dir := t.TempDir()
	old := umask(0o077) // the umask must not decide the mode
	defer umask(old)
	s, err := StageTarball(writeTarball(t, dir, u.Tarball(t, u.Binaries("v0.2.0"))), filepath.Join(dir, "release"))
	if err != nil {
		t.Fatal(err)
	}
	for path, name := range map[string]string{s.Banger: "banger", s.Bangerd: "bangerd", s.VsockAgent: "banger-vsock-agent"} {
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode = %v, want a regular 0755 file", path, st.Mode())
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, u.FakeBinary(name, "v0.2.0")) {
			t.Errorf("%s = %q", path, got)
		}
	}
	st, _ := os.Stat(s.Dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("staging dir mode = %v, want 0700", st.Mode().Perm())
	}
	// The destination must be fresh: staging never merges into old files.
	if _, err := StageTarball(writeTarball(t, dir, u.Tarball(t, u.Binaries("v0.2.0"))), s.Dir); !errors.Is(err, os.ErrExist) {
		t.Fatalf("staging into an existing dir: err = %v", err)
	}
}

func TestStageTarballRefusals(t *testing.T) {
	bins := u.Binaries("v0.2.0")
	with := func(extra ...u.Entry) []u.Entry { return append(append([]u.Entry{}, bins...), extra...) }
	replace0 := func(e u.Entry) []u.Entry { return append([]u.Entry{e}, bins[1:]...) }
	good := u.Tar(t, bins)
	for _, tc := range []struct {
		name string
		data func(t *testing.T) []byte
		max  int64
		want string
	}{
		{"not gzip", func(t *testing.T) []byte { return good }, 0, "not a gzip stream"},
		{"truncated gzip", func(t *testing.T) []byte { z := u.Gzip(t, good); return z[:len(z)/2] }, 0, "unexpected EOF"},
		{"missing gzip trailer", func(t *testing.T) []byte { z := u.Gzip(t, good); return z[:len(z)-4] }, 0, "unexpected EOF"},
		{"corrupt gzip checksum", func(t *testing.T) []byte { z := u.Gzip(t, good); z[len(z)-6] ^= 1; return z }, 0, "checksum"},
		{"second gzip member", func(t *testing.T) []byte { return append(u.Gzip(t, good), u.Gzip(t, good)...) }, 0, "unexpected data after the gzip stream"},
		{"garbage after gzip", func(t *testing.T) []byte { return append(u.Gzip(t, good), 'x') }, 0, "unexpected data after the gzip stream"},
		{"data after tar end", func(t *testing.T) []byte { return u.Gzip(t, append(bytes.Clone(good), 'x')) }, 0, "unexpected data after the archive end"},
		{"empty archive", func(t *testing.T) []byte { return u.Tarball(t, nil) }, 0, "missing banger, bangerd, banger-vsock-agent"},
		{"extra", func(t *testing.T) []byte { return u.Tarball(t, with(u.Entry{Name: "x", Body: []byte("x")})) }, 0, `unexpected entry "x"`},
		{"dot slash name", func(t *testing.T) []byte { return u.Tarball(t, replace0(u.Entry{Name: "./banger", Body: []byte("x")})) }, 0, `unexpected entry "./banger"`},
		{"nested name", func(t *testing.T) []byte {
			return u.Tarball(t, replace0(u.Entry{Name: "bin/banger", Body: []byte("x")}))
		}, 0, `unexpected entry "bin/banger"`},
		{"duplicate", func(t *testing.T) []byte { return u.Tarball(t, with(bins[2])) }, 0, "appears twice"},
		{"traversal", func(t *testing.T) []byte { return u.Tarball(t, with(u.Entry{Name: "a/../../b", Body: []byte("x")})) }, 0, "escapes the archive"},
		{"absolute", func(t *testing.T) []byte {
			return u.Tarball(t, with(u.Entry{Name: "/etc/cron.d/x", Body: []byte("x")}))
		}, 0, "absolute path"},
		{"symlink", func(t *testing.T) []byte {
			return u.Tarball(t, replace0(u.Entry{Name: "banger", Type: tar.TypeSymlink, Linkname: "../../etc/shadow"}))
		}, 0, "is a symlink"},
		{"hardlink", func(t *testing.T) []byte {
			return u.Tarball(t, replace0(u.Entry{Name: "banger", Type: tar.TypeLink, Linkname: "/etc/shadow"}))
		}, 0, "is a hard link"},
		{"block device", func(t *testing.T) []byte { return u.Tarball(t, replace0(u.Entry{Name: "banger", Type: tar.TypeBlock})) }, 0, "block device"},
		{"fifo", func(t *testing.T) []byte { return u.Tarball(t, replace0(u.Entry{Name: "banger", Type: tar.TypeFifo})) }, 0, "named pipe"},
		{"empty file", func(t *testing.T) []byte { return u.Tarball(t, replace0(u.Entry{Name: "banger"})) }, 0, "is empty"},
		{"oversize by header", func(t *testing.T) []byte {
			return u.Tarball(t, replace0(u.Entry{Name: "banger", Body: []byte("x"), Size: MaxBinarySize + 1}))
		}, 0, "more than the 268435456 allowed"},
		{"oversize by content", func(t *testing.T) []byte { return u.Tarball(t, bins) }, 10, "is 19 bytes, more than the 10 allowed"},
		{"truncated entry", func(t *testing.T) []byte {
			return u.Tarball(t, replace0(u.Entry{Name: "banger", Body: []byte("x"), Size: 4096}))
		}, 0, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			max := tc.max
			if max == 0 {
				max = MaxBinarySize
			}
			dst := filepath.Join(dir, "release")
			_, err := stageTarball(writeTarball(t, dir, tc.data(t)), dst, max)
			if !errors.Is(err, ErrBadTarball) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadTarball mentioning %q", err, tc.want)
			}
			if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("a refused tarball left its staging dir behind")
			}
		})
	}
}

func TestEnsureAndCleanStaging(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "cache", "banger-update")
	if err := EnsureStagingDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStagingDir(dir); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("mode = %v, want tightened to 0700", st.Mode().Perm())
	}
	for _, p := range []string{"release/banger", "x.tar.gz", ".x.part-1"} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := PrepareCleanStaging(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left: %v", entries)
	}

	// A parent others can write to could have the staged files swapped.
	open := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStagingDir(filepath.Join(open, "update")); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("err = %v", err)
	}
	sticky := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(sticky, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStagingDir(filepath.Join(sticky, "update")); err != nil {
		t.Fatalf("a sticky parent (like /tmp) is safe: %v", err)
	}
	if os.Geteuid() == 0 {
		// A parent owned by another user (the owner's cache dir).
		owned := filepath.Join(t.TempDir(), "owned")
		if err := os.Mkdir(owned, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(owned, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		if err := EnsureStagingDir(filepath.Join(owned, "update")); err == nil || !strings.Contains(err.Error(), "belongs to uid 1000") {
			t.Fatalf("err = %v", err)
		}
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStagingDir(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzStageTarball feeds arbitrary tar streams (gzipped by the harness,
// since mutating gzip bytes mostly tests the CRC) and raw bytes to the
// stager. Whatever it accepts must be exactly the three binaries as
// regular 0755 files matching what the archive holds; whatever it refuses
// must leave no staging dir.
func FuzzStageTarball(f *testing.F) {
	bins := u.Binaries("v0.2.0")
	f.Add(u.Tar(f, bins), false)
	f.Add(u.Tar(f, append(bins, bins[0])), false)
	f.Add(u.Tar(f, append(bins[1:], u.Entry{Name: "banger", Type: tar.TypeSymlink, Linkname: "/bin/sh"})), false)
	f.Add(u.Tar(f, append(bins, u.Entry{Name: "../x", Body: []byte("x")})), false)
	f.Add(u.Tarball(f, bins), true)
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		dir := t.TempDir()
		in := data
		if !raw {
			in = u.Gzip(t, data)
		}
		dst := filepath.Join(dir, "release")
		s, err := stageTarball(writeTarball(t, dir, in), dst, 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadTarball) {
				t.Fatalf("refusal without ErrBadTarball: %v", err)
			}
			if _, serr := os.Lstat(dst); !errors.Is(serr, os.ErrNotExist) {
				t.Fatal("refused tarball left the staging dir")
			}
			return
		}
		entries, err := os.ReadDir(dst)
		if err != nil || len(entries) != 3 {
			t.Fatalf("staged %d entries (%v)", len(entries), err)
		}
		for _, p := range []string{s.Banger, s.Bangerd, s.VsockAgent} {
			st, err := os.Lstat(p)
			if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 || st.Size() == 0 || st.Size() > 1<<20 {
				t.Fatalf("%s: %v %v", p, st, err)
			}
		}
		if raw {
			return
		}
		// What was staged is what archive/tar reads from the same stream.
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			var want bytes.Buffer
			if _, err := want.ReadFrom(tr); err != nil {
				t.Fatalf("%s: %v", h.Name, err)
			}
			got, _ := os.ReadFile(filepath.Join(dst, h.Name))
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("%s differs from the archive", h.Name)
			}
		}
	})
}
