package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/oci"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/test/ocireg"
)

// ociLayoutWith writes a one-layer OCI layout tagged v1 whose layer has
// the files, with media type mt, and the config's Env, WorkingDir and
// User set.
func ociLayoutWith(t *testing.T, files map[string]string, mt types.MediaType) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[name]))}); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(tw, files[name])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return ocireg.WriteLayout(t, l, "v1", v1.Config{
		Env:        []string{"PATH=/usr/bin:/bin", "GREETING=hello"},
		WorkingDir: "/srv",
		User:       "app:app",
		Cmd:        []string{"/bin/app"},
	})
}

// pullTestDaemon is imageTestDaemon with a built kernel and an agent, so a
// pull needs nothing from the network.
func pullTestDaemon(t *testing.T) *Daemon {
	t.Helper()
	for _, c := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("needs %s (%v)", c, err)
		}
	}
	if p, err := exec.LookPath("busybox"); err != nil || exec.Command("busybox", "--list").Run() != nil {
		t.Skipf("needs busybox-static (%s, %v)", p, err)
	}
	d := imageTestDaemon(t)
	seedMicroVMKernel(t, d)
	agent := filepath.Join(d.opts.Layout.SystemRoot, "usr", "local", "lib", "banger", agentBinaryName)
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// TestImagePullFromLayout makes an image from an OCI layout: the row
// records the origin and config, the rootfs holds the image's files plus
// banger's init, busybox and agent, VMs boot init=/.banger/init, and
// prune keeps the blobs until the image is deleted.
func TestImagePullFromLayout(t *testing.T) {
	d := pullTestDaemon(t)
	ctx := context.Background()
	dir := ociLayoutWith(t, map[string]string{"etc/os-release": "ID=pulled\n", "srv/readme": "hi"}, types.OCILayer)
	var stages []string
	im, err := d.imagePull(ctx, api.ImagePullRequest{OCILayout: dir + ":v1", Name: "app"}, func(ev api.Event) { stages = append(stages, ev.Stage) })
	if err != nil {
		t.Fatal(err)
	}
	if im.Source != store.ImageSourceOCI || im.Origin == nil || im.Origin.Platform != "linux/amd64" ||
		!strings.HasPrefix(im.Origin.Digest, "sha256:") || im.Origin.Ref != "oci-layout:"+dir+":v1" {
		t.Fatalf("image = %+v origin %+v", im, im.Origin)
	}
	for _, want := range []string{"resolve", "download", "rootfs", "ext4"} {
		if !slices.Contains(stages, want) {
			t.Errorf("progress stages %q lack %s", stages, want)
		}
	}
	if got := debugfsCat(t, im.Rootfs, "/etc/os-release"); got != "ID=pulled\n" {
		t.Errorf("/etc/os-release = %q", got)
	}
	if got := debugfsCat(t, im.Rootfs, image.OCIInitPath); !strings.HasPrefix(got, "#!/.banger/bin/sh\n") || !strings.Contains(got, "banger-vsock-agent") {
		t.Errorf("%s = %q", image.OCIInitPath, got)
	}
	if got := debugfsCat(t, im.Rootfs, "/usr/local/bin/banger-vsock-agent"); !strings.Contains(got, "echo agent") {
		t.Errorf("agent = %q", got)
	}
	shown, err := d.imageShow(ctx, api.ImageRef{Name: "app"}, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(shown.Origin.Config, &cfg); err != nil || cfg.Config.WorkingDir != "/srv" {
		t.Errorf("image show config = %s (%v)", shown.Origin.Config, err)
	}
	row, err := d.store.GetImage(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if got := imageBootArgs(row); got != "init="+image.OCIInitPath {
		t.Errorf("boot args add %q", got)
	}
	if res, err := d.imagePrune(ctx, struct{}{}, noProgress); err != nil || res.Blobs != 0 {
		t.Fatalf("prune with the image present = %+v, %v; want nothing removed", res, err)
	}
	// (imageDelete also removes golden snapshots, which needs the VM
	// manager this daemon lacks; the row is what prune reads.)
	if err := d.store.DeleteImage(ctx, row.ID); err != nil {
		t.Fatal(err)
	}
	res, err := d.imagePrune(ctx, struct{}{}, noProgress)
	if err != nil || res.Blobs != 2 { // the layer and the config
		t.Fatalf("prune after delete = %+v, %v; want 2 blobs removed", res, err)
	}
}

// TestImagePullRefusesBadInput: bad requests and bad images are refused
// with a sentence, register nothing and leave no files.
func TestImagePullRefusesBadInput(t *testing.T) {
	d := pullTestDaemon(t)
	// The bomb case: 8 MiB of zeros compress ~1000×; allow 40×.
	d.oci.limits = func(compressed int64) oci.Limits { return oci.Limits{MaxBytes: 40 * compressed, MaxEntries: 1000} }
	ctx := context.Background()
	good := ociLayoutWith(t, map[string]string{"a": "b"}, types.OCILayer)
	bomb := ociLayoutWith(t, map[string]string{"zeros": strings.Repeat("\x00", 8<<20)}, types.OCILayer)
	odd := ociLayoutWith(t, map[string]string{"a": "b"}, "application/vnd.example.layer.v1.tar+lz4")
	for _, tc := range []struct {
		req  api.ImagePullRequest
		want string
	}{
		{api.ImagePullRequest{}, "exactly one of"},
		{api.ImagePullRequest{Ref: "x", OCILayout: good}, "exactly one of"},
		{api.ImagePullRequest{OCILayout: "rel/dir"}, "must be absolute"},
		{api.ImagePullRequest{OCILayout: good, Name: "Bad_Name"}, "invalid image name"},
		{api.ImagePullRequest{OCILayout: good + ":nope", Name: "x"}, `no image tagged "nope"`},
		{api.ImagePullRequest{OCILayout: good, Name: "x", Platform: "linux/arm64"}, "it is a linux/amd64 image, not linux/arm64"},
		{api.ImagePullRequest{OCILayout: odd, Name: "x"}, "not one banger unpacks"},
		{api.ImagePullRequest{OCILayout: bomb, Name: "x"}, "decompression bomb"},
	} {
		_, err := d.imagePull(ctx, tc.req, noProgress)
		if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want invalid argument containing %q", tc.req, err, tc.want)
		}
	}
	assertNoImageLeftovers(t, d, 0)
	if ents, _ := os.ReadDir(filepath.Join(d.ociCache().Dir, "tmp")); len(ents) != 0 {
		t.Errorf("the cache kept partial blobs: %v", ents)
	}
}

// TestDefaultLimitsBoundRatio: the daemon lets layers inflate 40 times,
// capped at 64 GiB.
func TestDefaultLimitsBoundRatio(t *testing.T) {
	if l := oci.DefaultLimits(1 << 30); l.MaxBytes != 40<<30 {
		t.Errorf("1 GiB compressed may unpack to %d, want 40 GiB", l.MaxBytes)
	}
	if l := oci.DefaultLimits(1 << 40); l.MaxBytes != 64<<30 {
		t.Errorf("the cap is %d, want 64 GiB", l.MaxBytes)
	}
}

// TestApplyContainerConfig: the image's Env comes first (requests
// override), its WorkingDir and User fill what the request leaves out.
func TestApplyContainerConfig(t *testing.T) {
	raw := json.RawMessage(`{"config":{"Env":["PATH=/opt/bin:/bin","A=1"],"WorkingDir":"/srv","User":"app:staff"}}`)
	got := applyContainerConfig(raw, api.VMExecRequest{Env: []string{"A=2"}})
	if !slices.Equal(got.Env, []string{"PATH=/opt/bin:/bin", "A=1", "A=2"}) || got.Dir != "/srv" || got.User != "app" {
		t.Errorf("defaults applied = %+v", got)
	}
	got = applyContainerConfig(raw, api.VMExecRequest{Dir: "/tmp", User: "root"})
	if got.Dir != "/tmp" || got.User != "root" {
		t.Errorf("the request's own Dir/User were overridden: %+v", got)
	}
	if got := applyContainerConfig(nil, api.VMExecRequest{Dir: "/x"}); got.Dir != "/x" || got.Env != nil {
		t.Errorf("no config changed the request: %+v", got)
	}
}

func TestImageNameFor(t *testing.T) {
	for src, want := range map[oci.Source]string{
		{Remote: "debian:12"}:                         "debian-12",
		{Remote: "ghcr.io/org/My_App@sha256:abcd"}:    "my-app",
		{Remote: "localhost:5000/tools/busybox:1.36"}: "busybox-1-36",
		{Layout: "/tmp/app-oci/"}:                     "app-oci",
		{DockerArchive: "/tmp/Saved.tar"}:             "saved",
		{Remote: "x/" + strings.Repeat("a", 80)}:      strings.Repeat("a", 63),
	} {
		if got := imageNameFor(src); got != want {
			t.Errorf("imageNameFor(%+v) = %q, want %q", src, got, want)
		}
	}
}

// TestImagePullBootFrom: --boot-from takes an existing image's kernel and
// initrd, so nothing is fetched for them; unknown names and --kernel with
// it are refused.
func TestImagePullBootFrom(t *testing.T) {
	d := pullTestDaemon(t)
	ctx := context.Background()
	src := t.TempDir()
	kernel, initrd := filepath.Join(src, "vmlinux"), filepath.Join(src, "initrd.img")
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, self, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, []byte("initrd bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.store.CreateImage(ctx, store.Image{ID: store.NewID(), Name: "base", KernelPath: kernel, InitrdPath: initrd, RootfsPath: "/r", Source: store.ImageSourceBuild}); err != nil {
		t.Fatal(err)
	}
	dir := ociLayoutWith(t, map[string]string{"a": "b"}, types.OCILayer)
	if _, err := d.imagePull(ctx, api.ImagePullRequest{OCILayout: dir, Name: "x", BootFrom: "nope"}, noProgress); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("unknown --boot-from: %v", err)
	}
	if _, err := d.imagePull(ctx, api.ImagePullRequest{OCILayout: dir, Name: "x", BootFrom: "base", Kernel: "debian"}, noProgress); !api.IsCode(err, api.CodeInvalidArgument) {
		t.Errorf("--boot-from with --kernel: %v", err)
	}
	im, err := d.imagePull(ctx, api.ImagePullRequest{OCILayout: dir, Name: "x", BootFrom: "base"}, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(im.Initrd); string(got) != "initrd bytes" {
		t.Errorf("initrd %s = %q, want base's", im.Initrd, got)
	}
}

// TestContainerImageBootsBangerInit: the lifecycle sees an image made from
// a container image with init= on its kernel command line, and the launch
// spec carries it; other images boot their own /sbin/init.
func TestContainerImageBootsBangerInit(t *testing.T) {
	d := imageTestDaemon(t)
	ctx := context.Background()
	for name, source := range map[string]string{"oci": store.ImageSourceOCI, "plain": store.ImageSourceBuild} {
		if err := d.store.CreateImage(ctx, store.Image{ID: store.NewID(), Name: name, KernelPath: "/k", RootfsPath: "/r", Source: source}); err != nil {
			t.Fatal(err)
		}
	}
	specs := lcSpecs{layout: d.opts.Layout}
	for name, want := range map[string]bool{"oci": true, "plain": false} {
		img, err := lcStore{st: d.store}.GetImage(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		spec := specs.LaunchSpec(lifecycle.VM{ID: "0123456789abcdef", Name: "vm"}, img)
		if got := slices.Contains(strings.Fields(spec.BootArgs), "init="+image.OCIInitPath); got != want {
			t.Errorf("image %s: boot args %q, init=%s present %v, want %v", name, spec.BootArgs, image.OCIInitPath, got, want)
		}
	}
}
