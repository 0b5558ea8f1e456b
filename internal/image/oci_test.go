package image

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOCIInit: the init of images made from container images is the
// busybox init with its shell and PATH on /.banger/bin, valid shell, and
// every applet it runs is linked there.
func TestOCIInit(t *testing.T) {
	bb := staticBusybox(t)
	script, err := ociInit()
	if err != nil {
		t.Fatal(err)
	}
	s := string(script)
	if !strings.HasPrefix(s, "#!"+ociBinDir+"/sh\n") || !strings.Contains(s, "export PATH="+ociBinDir+":") {
		t.Fatalf("init does not run from %s:\n%s", ociBinDir, s[:min(len(s), 300)])
	}
	p := filepath.Join(t.TempDir(), "init")
	writeFile(t, p, script)
	if out, err := exec.Command(bb, "sh", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	for _, a := range []string{"sh", "mount", "umount", "grep", "mkdir", "ln", "hostname", "ip", "cat", "usleep",
		"head", "kill", "sync", "poweroff", "reboot", "cut"} {
		if !slices.Contains(ociApplets, a) {
			t.Errorf("the init uses %s, which is not linked in %s", a, ociBinDir)
		}
	}
}
