package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/banger-dev/banger/test/ocireg"
)

// TestRunContainerImageEntrypoint: `banger run --image` of a container
// image runs as docker run does: Entrypoint + Cmd with no command,
// Entrypoint + the words after -- with one, with the image's Env and
// WorkingDir. (The fake guest runs the commands on this host, so the
// Entrypoint is the host's sh.)
func TestRunContainerImageEntrypoint(t *testing.T) {
	if bb, err := exec.LookPath("busybox"); err != nil || !staticELF(bb) {
		t.Skip("importing a container image needs a static busybox (apt-get install busybox-static)")
	}
	h := newHost(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("from a container image\n")
	if err := tw.WriteHeader(&tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(body)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	dir := ocireg.WriteLayout(t, l, "1", v1.Config{
		Env:        []string{"GREETING=hi"},
		WorkingDir: "/tmp",
		Entrypoint: []string{"sh", "-c", `echo "ep[$*] $GREETING $(pwd)"`, "ep"},
		Cmd:        []string{"from-cmd"},
	})
	h.must("image", "import", "app", "--oci-layout", dir+":1", "--boot-from", "default")

	if out, errOut, code := h.run(runArgs("--image", "app")...); code != 0 || out != "ep[from-cmd] hi /tmp\n" {
		t.Errorf("run with no command: exit %d, stdout %q, stderr %q; want the Entrypoint with the Cmd", code, out, errOut)
	}
	if out, errOut, code := h.run(runArgs("--image", "app", "--", "one", "two words")...); code != 0 || out != "ep[one two words] hi /tmp\n" {
		t.Errorf("run with a command: exit %d, stdout %q, stderr %q; want the Entrypoint with the command's words", code, out, errOut)
	}
	// An image that is no container image still needs a command, and says so
	// before making a VM.
	_, errOut, code := h.run(runArgs("--image", "default")...)
	if code == 0 || !strings.Contains(errOut, "give the command to run after --") {
		t.Errorf("run of a plain image with no command: exit %d, stderr %q", code, errOut)
	}
	if names := h.vmNames(); len(names) != 0 {
		t.Fatalf("VMs left: %v", names)
	}
}
