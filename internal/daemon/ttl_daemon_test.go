package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/paths"
)

// startDaemonAt runs a daemon on layout with clock, until the returned
// stop is called (or the test ends).
func startDaemonAt(t *testing.T, layout paths.Layout, clock func() time.Time) (*api.Client, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	opts := Options{Layout: layout, Config: testConfig(), Build: buildinfo.Info{Version: "v0.0.1"}, Now: clock}
	go func() { done <- Run(ctx, opts, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon failed to start: %v", err)
	}
	c := api.NewClient(layout.SocketPath())
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		c.Close()
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return c, stop
}

// TestVMLifetimeThroughTheDaemon creates a (stopped) VM with a TTL over
// the API, extends and clears TTLs with vm.ttl, and checks that a VM
// whose TTL ran out while no daemon ran is deleted when the next one
// starts.
func TestVMLifetimeThroughTheDaemon(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	ctx := context.Background()
	layout := testLayout(t)
	clock := &fakeClock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	c, stop := startDaemonAt(t, layout, clock.Now)

	dir := t.TempDir()
	// Any ELF passes for a kernel the VM never boots: the test binary.
	kernel, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rootfs, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if _, err := c.ImageImport(ctx, api.ImageImportRequest{Name: "default", Kernel: kernel, Rootfs: rootfs}, nil); err != nil {
		t.Fatal(err)
	}
	create := func(name string, ttl time.Duration) api.VM {
		t.Helper()
		vm, err := c.VMCreate(ctx, api.VMCreateRequest{Name: name, NoStart: true, TTLSeconds: int64(ttl / time.Second)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return vm
	}
	doomed := create("doomed", 30*time.Minute)
	if l := doomed.Lifetime; l == nil || l.ExpiresAt == nil || !l.ExpiresAt.Equal(clock.Now().Add(30*time.Minute)) || l.Action != "delete" {
		t.Fatalf("created with --ttl 30m: lifetime %+v", l)
	}
	create("extended", 30*time.Minute)
	create("cleared", 30*time.Minute)
	if vm, err := c.VMTTL(ctx, api.VMTTLRequest{Name: "extended", TTLSeconds: 3 * 3600}); err != nil || !vm.Lifetime.ExpiresAt.Equal(clock.Now().Add(3*time.Hour)) {
		t.Fatalf("vm ttl extended 3h: %+v, %v", vm.Lifetime, err)
	}
	if vm, err := c.VMTTL(ctx, api.VMTTLRequest{Name: "cleared"}); err != nil || vm.Lifetime != nil {
		t.Fatalf("vm ttl cleared none: %+v, %v", vm.Lifetime, err)
	}
	if _, err := c.VMTTL(ctx, api.VMTTLRequest{Name: "cleared", TTLSeconds: -5}); err == nil {
		t.Error("a negative TTL was accepted")
	}
	stop()

	clock.advance(time.Hour) // no daemon runs while doomed's TTL ends
	c, _ = startDaemonAt(t, layout, clock.Now)
	deadline := time.Now().Add(30 * time.Second)
	for {
		vms, err := c.VMList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, vm := range vms {
			names[vm.Name] = true
		}
		if !names["doomed"] {
			if !names["extended"] || !names["cleared"] {
				t.Errorf("VMs left %v, want extended and cleared", names)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the VM whose TTL ran out while no daemon ran was not deleted by the next daemon")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
