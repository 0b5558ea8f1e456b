package disk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidNameAndOwnerID(t *testing.T) {
	for name, ok := range map[string]bool{
		"banger-0123abcd":                   true,
		"banger-0123abcd-cow":               true,
		"banger-":                           false,
		"banger--x":                         false,
		"other-0123":                        false,
		"banger-ABC":                        false,
		"banger-a b":                        false,
		"banger-" + strings.Repeat("a", 57): false,
		"banger-x;rm -rf":                   false,
	} {
		if got := ValidName(name) == nil; got != ok {
			t.Errorf("ValidName(%q) ok = %v, want %v", name, got, ok)
		}
	}
	for name, want := range map[string]string{"banger-abc": "abc", "banger-abc-base": "abc", "banger-abc-cow": "abc", "loop-x": "", "banger-": ""} {
		if got, _ := OwnerID(name); got != want {
			t.Errorf("OwnerID(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestLoopAttachDetachForReal binds a file to a loop device with ioctls,
// reads it through the device, checks the banger name and read-only flag
// are visible, and detaches.
func TestLoopAttachDetachForReal(t *testing.T) {
	needLoops(t)
	loops := HostLoops()
	backing := filepath.Join(t.TempDir(), "disk.img")
	content := bytes.Repeat([]byte("banger loop test "), 1<<16) // ~1 MiB
	content = content[:1<<20]
	if err := os.WriteFile(backing, content, 0o600); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("banger-test%d-base", os.Getpid())
	l, err := loops.Attach(backing, LoopOptions{Name: name, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	detached := false
	t.Cleanup(func() {
		if !detached {
			_ = loops.Detach(l.Device)
		}
	})
	if !strings.HasPrefix(l.Device, "/dev/loop") {
		t.Fatalf("device %q", l.Device)
	}

	got, err := os.ReadFile(l.Device)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("read %d bytes through %s, content differs", len(got), l.Device)
	}
	if f, err := os.OpenFile(l.Device, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write([]byte("x"))
		f.Close()
		if werr == nil {
			t.Error("wrote to a read-only loop device")
		}
	}

	list, err := loops.List()
	if err != nil {
		t.Fatal(err)
	}
	var found *Loop
	for i := range list {
		if list[i].Device == l.Device {
			found = &list[i]
		}
	}
	if found == nil {
		t.Fatalf("%s not listed in %+v", l.Device, list)
	}
	if found.Name != name || !found.ReadOnly || found.Backing != backing {
		t.Fatalf("listed as %+v, want name %s, read-only, backing %s", *found, name, backing)
	}

	if err := loops.Detach(l.Device); err != nil {
		t.Fatal(err)
	}
	detached = true
	list, _ = loops.List()
	for _, x := range list {
		if x.Device == l.Device && x.Name == name {
			t.Fatalf("%s still attached after detach", l.Device)
		}
	}
	// Detaching twice is not an error: cleanup may race a previous one.
	if err := loops.Detach(l.Device); err != nil {
		t.Fatalf("second detach: %v", err)
	}
}

func TestLoopBadInputs(t *testing.T) {
	loops := HostLoops()
	if _, err := loops.Attach("/nonexistent/disk.img", LoopOptions{Name: "banger-x"}); err == nil || !strings.Contains(err.Error(), "open loop backing file") {
		t.Errorf("missing backing file: %v", err)
	}
	if _, err := loops.Attach("/dev/null", LoopOptions{Name: "not-banger"}); err == nil || !strings.Contains(err.Error(), "not a banger name") {
		t.Errorf("bad name: %v", err)
	}
	if err := loops.Detach("/dev/sda"); err == nil || !strings.Contains(err.Error(), "not a loop device") {
		t.Errorf("detach non-loop: %v", err)
	}
	if err := (Loops{Dev: t.TempDir()}).Available(); err == nil || !strings.Contains(err.Error(), "loop-control") {
		t.Errorf("available without loop-control: %v", err)
	}
}
