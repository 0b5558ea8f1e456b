package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/store"
)

// recordingNetOps records the privileged network calls a vmNetwork makes
// and changes nothing.
type recordingNetOps struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingNetOps) rec(format string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
	return nil
}

func (r *recordingNetOps) EnsureBridge(_ context.Context, s privileged.BridgeSpec) error {
	return r.rec("EnsureBridge %s", s.Name)
}
func (r *recordingNetOps) CreateTap(_ context.Context, s privileged.TapSpec) error {
	return r.rec("CreateTap %s", s.Name)
}
func (r *recordingNetOps) DeleteTap(_ context.Context, name string) error {
	return r.rec("DeleteTap %s", name)
}
func (r *recordingNetOps) EnsureNAT(context.Context, privileged.NATSpec) error {
	return r.rec("EnsureNAT")
}
func (r *recordingNetOps) EnableIPForward(context.Context) error { return r.rec("EnableIPForward") }
func (r *recordingNetOps) ConfigureResolver(context.Context, privileged.ResolverSpec) error {
	return r.rec("ConfigureResolver")
}
func (r *recordingNetOps) Isolate(_ context.Context, s privileged.IsolationSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return r.rec("Isolate %s %s %s isolated=%v", s.Tap, s.MAC, s.Addr, s.Isolated)
}
func (r *recordingNetOps) Unisolate(_ context.Context, s privileged.IsolationSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return r.rec("Unisolate %s %s", s.Tap, s.Addr)
}

func (r *recordingNetOps) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

func newTestNetwork(t *testing.T, bridge string) (*vmNetwork, *recordingNetOps) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ops := &recordingNetOps{}
	return &vmNetwork{
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), ops: ops, store: st,
		bridge: network.Bridge{Name: bridge, Subnet: netip.MustParsePrefix("172.30.0.0/24")},
		domain: "banger", uid: os.Getuid(), gid: os.Getgid(),
	}, ops
}

func createTestVM(t *testing.T, st *store.Store, name string, isolated bool) store.VM {
	t.Helper()
	vm := store.VM{ID: store.NewID(), Name: name, VCPUs: 1, MemoryMiB: 128, VMM: "firecracker",
		Network: netSettings{Isolated: isolated}.json()}
	if err := st.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

// TestNetworkAdmitsEveryVMPort: every VM's tap is pinned to its MAC and
// address before the VMM gets it, isolated or not, and unpinned when it
// goes; the MAC pinned is the one the VMM is given.
func TestNetworkAdmitsEveryVMPort(t *testing.T) {
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	for _, isolated := range []bool{false, true} {
		vm := createTestVM(t, n.store, fmt.Sprintf("vm-%v", isolated), isolated)
		iface, _, err := n.attach(ctx, vm, isolated)
		if err != nil {
			t.Fatal(err)
		}
		l, err := n.store.GetLease(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		tap := network.TapName(vm.ID)
		if iface.MAC != network.MACAddress(vm.ID).String() || iface.TapName != tap {
			t.Errorf("launch interface %+v, want tap %s with MAC %s", iface, tap, network.MACAddress(vm.ID))
		}
		want := []string{"CreateTap " + tap, fmt.Sprintf("Isolate %s %s %s isolated=%v", tap, iface.MAC, l.IP, isolated)}
		if got := ops.take(); !slices.Equal(got, want) {
			t.Errorf("attach (isolated=%v) calls %q, want %q", isolated, got, want)
		}
		n.detach(ctx, vm.ID)
		want = []string{fmt.Sprintf("Unisolate %s %s", tap, l.IP), "DeleteTap " + tap}
		if got := ops.take(); !slices.Equal(got, want) {
			t.Errorf("detach calls %q, want %q", got, want)
		}
	}
}

// TestNetworkReadmitsRunningVMsTaps: at daemon start the taps of VMs that
// kept running are admitted again (the firewall may have been rebuilt
// without their bindings), and stale taps lose theirs with the tap.
func TestNetworkReadmitsRunningVMsTaps(t *testing.T) {
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	if err := network.EnsureBridge(ctx, n.bridge); err != nil {
		t.Fatal(err)
	}
	running := createTestVM(t, n.store, "running", true)
	stale := createTestVM(t, n.store, "stale", false)
	leases := map[string]store.Lease{}
	for _, vm := range []store.VM{running, stale} {
		l, err := n.lease(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		leases[vm.ID] = l
		if err := network.CreateTap(ctx, network.TapName(vm.ID), n.bridge.Name, n.uid, n.gid); err != nil {
			t.Fatal(err)
		}
	}
	n.removeStaleTaps(ctx, map[string]bool{running.ID: true})
	runTap, staleTap := network.TapName(running.ID), network.TapName(stale.ID)
	want := []string{
		fmt.Sprintf("Isolate %s %s %s isolated=true", runTap, leases[running.ID].MAC, leases[running.ID].IP),
		fmt.Sprintf("Unisolate %s %s", staleTap, leases[stale.ID].IP),
		"DeleteTap " + staleTap,
	}
	got := ops.take()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
