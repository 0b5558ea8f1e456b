package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/test/ocireg"
)

// TestRealBootOCI boots a container image: a busybox-based OCI image is
// pushed to a real registry (Debian's docker-registry on 127.0.0.1), pulled
// by a builder installation (timed, then pulled again from the blob
// cache), and imported from its OCI layout by the suite's daemon, whose
// namespace cannot reach the registry; its VM boots banger's init and
// agent, and `vm exec` runs with the image's Env and WorkingDir.
func TestRealBootOCI(t *testing.T) {
	vmm := needRealBoot(t)
	for _, tool := range []string{"docker-registry", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the container image flow needs %s (apt-get install docker-registry skopeo)", tool)
		}
	}
	before := snapshotHost()
	h := newRealHost(t, vmm, busyboxBootTimeout)
	builder := newBuilderHost(t, h)
	base := builder.buildImage("base", "busybox")
	dir := busyboxOCILayout(t)
	ref := ocireg.Start(t, false).Host + "/e2e/busybox:1"
	pushLayout(t, dir, "1", ref)

	start := time.Now()
	pulled := pullImage(t, builder, ref, "pulled")
	cold := time.Since(start)
	start = time.Now()
	pullImage(t, builder, ref, "again")
	warm := time.Since(start)
	t.Logf("image pull (registry → ext4): %s cold, %s with every blob cached", cold.Round(10*time.Millisecond), warm.Round(10*time.Millisecond))
	if pulled.Origin == nil || !strings.HasPrefix(pulled.Origin.Digest, "sha256:") || pulled.Origin.Platform != "linux/amd64" {
		t.Fatalf("pulled image origin = %+v", pulled.Origin)
	}
	builder.run("daemon", "stop")

	h.importImage("base", base)
	h.must("image", "import", "bb", "--oci-layout", dir+":1", "--boot-from", "base")
	show := h.must("image", "show", "bb")
	for _, want := range []string{"digest:", "platform:", "linux/amd64", "workdir:", "/srv", "GREETING=hello-from-oci"} {
		if !strings.Contains(show, want) {
			t.Errorf("image show lacks %q:\n%s", want, show)
		}
	}
	start = time.Now()
	h.must("vm", "create", "--name", "oci", "--image", "bb")
	t.Logf("container image VM created and agent-ready in %s", time.Since(start).Round(100*time.Millisecond))
	if got := h.mustExec("oci", "sh", "-c", `echo "$GREETING $(pwd)"`); got != "hello-from-oci /srv\n" {
		t.Errorf("vm exec saw %q, want the image's Env and WorkingDir (hello-from-oci /srv)", got)
	}
	if got := h.mustExec("oci", "cat", "/etc/motd"); got != "from a container image\n" {
		t.Errorf("/etc/motd = %q", got)
	}
	if got := h.mustExec("oci", "sh", "-c", "cd /tmp && pwd"); got != "/tmp\n" {
		t.Errorf("an explicit cd is overridden: %q", got)
	}
	h.must("vm", "delete", "--force", "oci")
	nothingLeft(t, h.on(t), before)
}

// pullImage runs `banger image pull` on the builder.
func pullImage(t *testing.T, h *realHost, ref, name string) api.Image {
	t.Helper()
	out := h.must("image", "pull", ref, "--name", name, "--insecure-registry", "--boot-from", "base", "--json")
	var im api.Image
	if err := json.Unmarshal([]byte(out), &im); err != nil {
		t.Fatalf("image pull output: %v\n%s", err, out)
	}
	return im
}

// busyboxOCILayout writes an OCI layout (tag 1) of a busybox image: the
// static busybox with its applets in /bin, /etc/passwd, /etc/motd, /srv,
// and a config with Env and WorkingDir.
func busyboxOCILayout(t *testing.T) string {
	t.Helper()
	bbPath, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static")
	}
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(bbPath, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h tar.Header, body []byte) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(body)
	}
	for _, d := range []string{"bin/", "etc/", "root/", "srv/"} {
		add(tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb)
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			add(tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
		}
	}
	add(tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	add(tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:\n"))
	add(tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("from a container image\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return ocireg.WriteLayout(t, l, "1", v1.Config{
		Env:        []string{"PATH=/bin", "GREETING=hello-from-oci"},
		WorkingDir: "/srv",
		Cmd:        []string{"/bin/sh"},
	})
}

// pushLayout copies layout:tag to ref with skopeo, blobs as they are.
func pushLayout(t *testing.T, dir, tag, ref string) {
	t.Helper()
	out, err := exec.Command("skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+dir+":"+tag, "docker://"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
}

// TestRealBootOCIDebian boots a Debian rootfs packed as a container image:
// a debootstrap tree (systemd, udev and all; its .debs come from the suite's
// cache) becomes a one-layer OCI layout with an Env and a WorkingDir, is
// imported with --oci-layout and boots. Container images boot banger's init
// (init=/.banger/init), never the image's own /sbin/init, even when, as
// here, that is a working systemd: the agent comes up the same way for
// every container image, and the image's services stay off as under docker.
func TestRealBootOCIDebian(t *testing.T) {
	vmm := needRealBoot(t)
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("the Debian container image flow needs debootstrap")
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Head("http://deb.debian.org/debian/dists/bookworm/Release")
	if err != nil {
		t.Skipf("the Debian mirror is not reachable: %v", err)
	}
	_ = resp.Body.Close()
	before := snapshotHost()
	h := newRealHost(t, vmm, busyboxBootTimeout)
	builder := newBuilderHost(t, h)
	base := builder.buildImage("base", "busybox")
	builder.run("daemon", "stop")

	start := time.Now()
	dir := debianOCILayout(t)
	t.Logf("Debian tree debootstrapped and packed as an OCI layout in %s", time.Since(start).Round(time.Second))

	h.importImage("base", base)
	start = time.Now()
	h.must("image", "import", "debian-oci", "--oci-layout", dir+":12", "--boot-from", "base")
	t.Logf("Debian OCI layout imported (flattened into ext4) in %s", time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	// The tree (systemd and all) is larger than the default 256 MiB disk.
	h.must("vm", "create", "--name", "deboci", "--image", "debian-oci", "--disk", "1G")
	t.Logf("Debian container image VM created and agent-ready in %s", time.Since(start).Round(100*time.Millisecond))
	if got := h.mustExec("deboci", "sh", "-c", `echo "$GREETING $(pwd)"`); got != "hello-from-debian /opt/app\n" {
		t.Errorf("vm exec saw %q, want the image's Env and WorkingDir (hello-from-debian /opt/app)", got)
	}
	if got := h.mustExec("deboci", "sh", "-c", ". /etc/os-release && echo $ID $VERSION_ID"); got != "debian 12\n" {
		t.Errorf("/etc/os-release says %q, want debian 12", got)
	}
	// The image's own tools (bash, dpkg from the layer) run, and PID 1 is
	// banger's init, not the image's systemd.
	if got := h.mustExec("deboci", "bash", "-c", "dpkg-query -W -f '${Status}' systemd"); got != "install ok installed" {
		t.Errorf("dpkg-query in the guest: %q", got)
	}
	if got := strings.TrimSpace(h.mustExec("deboci", "cat", "/proc/1/cmdline")); !strings.Contains(got, "/.banger/init") {
		t.Errorf("PID 1 runs %q, want banger's /.banger/init", got)
	}
	h.must("vm", "delete", "--force", "deboci")
	nothingLeft(t, h.on(t), before)
}

// debianOCILayout debootstraps a Debian bookworm tree (as the Debian image
// build does, its .debs cached in the suite's debootstrap cache) and writes
// it as an OCI layout (tag 12): one layer made by tar with numeric owners
// and xattrs, a config with Env, WorkingDir and Cmd.
func debianOCILayout(t *testing.T) string {
	t.Helper()
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	spec := image.RootfsSpec{
		Dir: tree, Mirror: "http://deb.debian.org/debian", Suite: "bookworm", User: "root",
		CacheDir: filepath.Join(testCache(t), "debootstrap-e2e", "bookworm"), AgentBinary: bins.Agent,
	}
	if err := image.Debootstrap(context.Background(), system.ExecRunner{}, spec, func(string, string) {}); err != nil {
		t.Fatalf("debootstrap: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(tree, "opt", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	layerTar := filepath.Join(work, "layer.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", tree, "-cf", layerTar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar the tree: %v\n%s", err, out)
	}
	l, err := tarball.LayerFromFile(layerTar, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return ocireg.WriteLayout(t, l, "12", v1.Config{
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello-from-debian"},
		WorkingDir: "/opt/app",
		Cmd:        []string{"bash"},
	})
}
