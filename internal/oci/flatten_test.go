package oci

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/internal/system"
)

var testLimits = Limits{MaxBytes: 64 << 20, MaxEntries: 10000}

// TestFlattenToExt4 unpacks three layers (gzip, zstd, plain) with
// whiteouts, an opaque directory, hard links, symlinks, device nodes,
// ownership, setuid modes and xattrs, makes the ext4, and reads each back
// with debugfs. It runs twice: as the extracting user really is, and
// pretending the extraction ran as uid/gid 4242, so every owner goes
// through the debugfs fixups an unprivileged daemon needs.
func TestFlattenToExt4(t *testing.T) {
	needCmd(t, "mkfs.ext4", "debugfs", "e2fsck")
	for _, tc := range []struct {
		name     string
		uid, gid int
	}{{"as-is", os.Geteuid(), os.Getegid()}, {"unprivileged", 4242, 4242}} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			pax := map[string]string{"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}
			ping := file("bin/ping", "ping", 0o4755)
			ping.PAXRecords = pax
			owned := file("home/app/data", "mine", 0o640)
			owned.Uid, owned.Gid = 1000, 1001
			null := ent{Header: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}}
			fifo := ent{Header: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600}}
			readonly := dir("ro/", 0o555)
			l1 := layerOf(t, work, types.OCILayer,
				dir("./", 0o755), dir("bin/", 0o755), ping, hardlink("bin/ping6", "bin/ping"),
				dir("etc/", 0o755), file("etc/gone", "x", 0o644), dir("etc/old/", 0o755), file("etc/old/a", "a", 0o644),
				dir("opq/", 0o755), file("opq/lower", "lower", 0o644), dir("opq/sub/", 0o755), file("opq/sub/deep", "d", 0o644),
				dir("home/", 0o755), dir("home/app/", 0o750), owned, null, fifo,
				readonly, file("ro/f", "r", 0o444), symlink("abs", "/etc/passwd"), file("tmpfile", "t", 0o1777),
				file("replaced", "one", 0o644), hardlink("keeps-old", "replaced"))
			l2 := layerOf(t, work, types.OCILayerZStd,
				file("etc/.wh.gone", "", 0), file("etc/.wh.old", "", 0),
				dir("opq/", 0o700), file("opq/.wh..wh..opq", "", 0), file("opq/upper", "upper", 0o644),
				file("replaced", "two", 0o600))
			l3 := layerOf(t, work, types.OCIUncompressedLayer, file("etc/gone", "back", 0o644))
			tree, err := Flatten(context.Background(), []Layer{l1, l2, l3}, filepath.Join(work, "rootfs"), tc.uid, tc.gid, testLimits)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tree.Close() }()
			img := filepath.Join(work, "root.ext4")
			if err := tree.WriteExt4(context.Background(), &system.ExecRunner{}, img, tree.SizeFor(0)); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck: %v\n%s", err, out)
			}
			want := map[string]string{
				"/bin/ping":      `Type: regular +Mode: +04755.*User: +0 +Group: +0`,
				"/home/app/data": `Type: regular +Mode: +0640.*User: +1000 +Group: +1001`,
				"/home/app":      `Type: directory +Mode: +0750`,
				"/dev/null":      `Type: character special +Mode: +0666`,
				"/run/fifo":      `Type: FIFO +Mode: +0600`,
				"/ro":            `Type: directory +Mode: +0555`,
				"/ro/f":          `Type: regular +Mode: +0444`,
				"/abs":           `Type: symlink`,
				"/tmpfile":       `Mode: +01777`,
				"/opq":           `Type: directory +Mode: +0700`,
				"/opq/upper":     `Type: regular`,
				"/etc/gone":      `Type: regular`,
				"/replaced":      `Mode: +0600`,
				"/keeps-old":     `Mode: +0644`,
			}
			for p, re := range want {
				s := statOf(t, img, p)
				if !regexp.MustCompile(`(?s)` + re).MatchString(s) {
					t.Errorf("%s: want %s, debugfs says:\n%s", p, re, s)
				}
			}
			for _, gone := range []string{"/etc/old", "/etc/old/a", "/opq/lower", "/opq/sub"} {
				if statOf(t, img, gone) != "" {
					t.Errorf("%s is still there: its whiteout was not applied", gone)
				}
			}
			if s := statOf(t, img, "/bin/ping"); !strings.Contains(s, "Links: 2") {
				t.Errorf("/bin/ping lost its hard link:\n%s", s)
			}
			if s := statOf(t, img, "/dev/null"); !strings.Contains(s, "Device major/minor number: 01:03") && !strings.Contains(s, "Device major/minor number: 1:3") {
				t.Errorf("/dev/null is not 1:3:\n%s", s)
			}
			for p, body := range map[string]string{"/etc/gone": "back", "/replaced": "two", "/keeps-old": "one", "/opq/upper": "upper"} {
				if got := debugfs(t, img, "cat "+p); !strings.Contains(got, body) {
					t.Errorf("%s holds %q, want %q", p, got, body)
				}
			}
			xa := debugfs(t, img, "ea_list /bin/ping")
			if !strings.Contains(xa, "user.note") || !strings.Contains(xa, "security.capability") {
				t.Errorf("/bin/ping lost its xattrs:\n%s", xa)
			}
		})
	}
}

// TestFlattenRefuses: entries that escape the root or go through a
// symlink, unknown media types, bombs and truncated layers are refused
// with a sentence, and nothing outside the tree is touched.
func TestFlattenRefuses(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name   string
		layers func(work string) []Layer
		want   string
	}{
		{"dotdot", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, file("a/../../escape", "x", 0o644))}
		}, `climbs out of the image root`},
		{"through symlink", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, symlink("link", outside), file("link/pwned", "x", 0o644))}
		}, `goes through the symlink /link`},
		{"through symlink, later layer", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, symlink("etc", outside)), layerOf(t, w, types.OCILayer, file("etc/passwd", "x", 0o644))}
		}, `goes through the symlink /etc`},
		{"hard link outside", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, hardlink("h", "../../etc/passwd"))}
		}, `climbs out`},
		{"hard link to nothing", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, hardlink("h", "nope"))}
		}, `does not hold`},
		{"unknown media type", func(w string) []Layer {
			return []Layer{layerOf(t, w, "application/vnd.example.layer.v1+bzip2", file("a", "x", 0o644))}
		}, `not one banger unpacks`},
		{"bytes bomb", func(w string) []Layer {
			return []Layer{layerOf(t, w, types.OCILayer, file("zeros", strings.Repeat("\x00", 2<<20), 0o644))}
		}, `decompression bomb`},
		{"entries bomb", func(w string) []Layer {
			var es []ent
			for i := range 50 {
				es = append(es, file("f"+strings.Repeat("x", i), "", 0o644))
			}
			return []Layer{layerOf(t, w, types.OCILayer, es...)}
		}, `more than 20 entries`},
		{"truncated gzip", func(w string) []Layer {
			blob := compress(t, tarBytes(t, []ent{file("a", strings.Repeat("y", 100000), 0o644)}), types.OCILayer)
			return []Layer{layerFile(t, w, blob[:len(blob)/2], types.OCILayer)}
		}, `truncated or corrupt`},
		{"not gzip", func(w string) []Layer {
			return []Layer{layerFile(t, w, []byte("<html>nope</html>"), types.OCILayer)}
		}, `not a valid`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			lim := Limits{MaxBytes: 1 << 20, MaxEntries: 20}
			_, err := Flatten(context.Background(), tc.layers(work), filepath.Join(work, "rootfs"), os.Geteuid(), os.Getegid(), lim)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(tc.want, "bomb") && !errors.Is(err, ErrTooLarge) {
				t.Errorf("bomb error %v does not wrap ErrTooLarge", err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("the extraction wrote outside its tree: %v", ents)
			}
		})
	}
}
