package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// wireRecorder stands in for the root helper on a socket: it decodes each
// request as strictly as the helper does, records it as "op args-json",
// and answers with the canned result for its op (nothing when none).
type wireRecorder struct {
	socket  string
	results map[string]any
	got     chan string
}

func newWireRecorder(t *testing.T, results map[string]any) *wireRecorder {
	t.Helper()
	r := &wireRecorder{socket: filepath.Join(t.TempDir(), "helper.sock"), results: results, got: make(chan string, 16)}
	ln, err := net.Listen("unix", r.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.serve(c)
		}
	}()
	return r
}

func (r *wireRecorder) serve(c net.Conn) {
	defer func() { _ = c.Close() }()
	data, _ := io.ReadAll(c)
	req, err := privileged.DecodeRequest(data)
	resp := privileged.Response{OK: err == nil}
	if err != nil {
		resp.Error = &privileged.WireError{Code: privileged.CodeInvalidArgument, Message: err.Error()}
		r.got <- "refused: " + err.Error()
	} else {
		args, _ := json.Marshal(req.Args)
		r.got <- req.Op + " " + string(args)
		if res, ok := r.results[req.Op]; ok {
			resp.Result, _ = json.Marshal(res)
		}
	}
	_ = json.NewEncoder(c).Encode(resp)
}

func (r *wireRecorder) next(t *testing.T) string {
	t.Helper()
	return <-r.got
}

// The adapters send each port call to the helper as the operation and
// arguments the helper's menu defines, and read its answers back.
func TestPrivilegedPortsSpeakTheHelpersMenu(t *testing.T) {
	ctx := context.Background()
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	rec := newWireRecorder(t, map[string]any{
		"loop.attach":     map[string]string{"device": "/dev/loop7"},
		"snapshot.create": map[string]string{"device": "/dev/mapper/banger-abc"},
		"jailer.launch":   map[string]any{"pid": 42, "root": "/j/root", "kernel": "/j/root/vmlinux", "drives": map[string]string{"rootfs": "/j/root/drives/drive-rootfs"}},
	})
	ops := privileged.NewClient(rec.socket)
	netw, disks, jails := netPort(ops), privilegedDisks{ops}, privilegedJails{ops}
	port := guestPort{Bridge: "banger0", Tap: "bgt-0123abcd456", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2"), Isolated: true}
	backing, err := os.CreateTemp(t.TempDir(), "cow")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = backing.Close() }()

	calls := []struct {
		call func() (string, error)
		want string
	}{
		{func() (string, error) {
			return "", netw.EnsureBridge(ctx, network.Bridge{Name: "banger0", Subnet: subnet})
		},
			`bridge.ensure {"name":"banger0","subnet":"172.30.0.0/24"}`},
		{func() (string, error) { return "", netw.EnableIPForward(ctx) }, `ipforward.enable null`},
		{func() (string, error) {
			return "", netw.EnsureNAT(ctx, network.Bridge{Name: "banger0", Subnet: subnet})
		},
			`nat.ensure {"subnet":"172.30.0.0/24","bridge":"banger0"}`},
		{func() (string, error) {
			return "", netw.RouteDNS(ctx, dnsRoute{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"})
		}, `resolver.configure {"link":"banger0","server":"172.30.0.1","domain":"banger"}`},
		{func() (string, error) {
			return "", netw.CreateTap(ctx, tapRequest{Name: "bgt-0123abcd456", Bridge: "banger0", UID: 1000, GID: 1000})
		}, `tap.create {"name":"bgt-0123abcd456","bridge":"banger0","uid":1000,"gid":1000}`},
		{func() (string, error) { return "", netw.DeleteTap(ctx, "bgt-0123abcd456") }, `tap.delete {"name":"bgt-0123abcd456"}`},
		{func() (string, error) { return "", netw.Admit(ctx, port) },
			`firewall.isolate {"bridge":"banger0","tap":"bgt-0123abcd456","mac":"02:00:00:00:00:02","addr":"172.30.0.2","isolated":true}`},
		{func() (string, error) { return "", netw.Evict(ctx, port) },
			`firewall.unisolate {"bridge":"banger0","tap":"bgt-0123abcd456","mac":"02:00:00:00:00:02","addr":"172.30.0.2","isolated":true}`},
		{func() (string, error) {
			return "", netw.ApplyEgress(ctx, firewall.Egress{Bridge: "banger0", Tap: "bgt-0123abcd456", Addr: port.Addr, Mode: "allowlist",
				Allow: []firewall.EgressRule{{Net: netip.MustParsePrefix("10.0.0.0/8"), Port: 443}, {Net: netip.MustParsePrefix("192.0.2.7/32")}}})
		}, `egress.apply {"bridge":"banger0","tap":"bgt-0123abcd456","addr":"172.30.0.2","mode":"allowlist","allow":"10.0.0.0/8:443,192.0.2.7/32:0"}`},
		{func() (string, error) {
			return "", netw.LearnEgress(ctx, firewall.LearnSpec{Bridge: "banger0", Tap: "bgt-0123abcd456",
				Addrs: []firewall.Learned{{Addr: netip.MustParseAddr("192.0.2.7"), Port: 443, TTL: 5 * time.Second}}})
		}, `egress.learn {"bridge":"banger0","tap":"bgt-0123abcd456","addrs":"192.0.2.7:443:30"}`},
		{func() (string, error) {
			return disks.AttachLoop(ctx, loopRequest{Backing: backing, Name: "banger-abc-cow"})
		}, `loop.attach {"name":"banger-abc-cow","read_only":false}`},
		{func() (string, error) { return "", disks.DetachLoop(ctx, "/dev/loop7") }, `loop.detach {"device":"/dev/loop7"}`},
		{func() (string, error) {
			return disks.CreateSnapshot(ctx, snapshotRequest{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2"})
		}, `snapshot.create {"name":"banger-abc","origin":"/dev/loop1","cow":"/dev/loop2","size_bytes":0}`},
		{func() (string, error) { return "", disks.RemoveSnapshot(ctx, "banger-abc") }, `snapshot.remove {"name":"banger-abc"}`},
		{func() (string, error) {
			j, err := jails.LaunchJailer(ctx, firecracker.JailLaunch{VMID: "vm-1", Console: backing, Kernel: backing,
				Drives: []firecracker.JailDrive{{ID: "rootfs", File: backing}}})
			return fmt.Sprintf("%d %s %s", j.PID, j.Kernel, j.Drives["rootfs"]), err
		}, `jailer.launch {"vm_id":"vm-1","drives":"rootfs:rw","initrd":false,"vmm_log":false}`},
		{func() (string, error) { return "", jails.RemoveJail(ctx, "vm-1") }, `jail.remove {"vm_id":"vm-1"}`},
	}
	var results []string
	for _, c := range calls {
		res, err := c.call()
		if err != nil {
			t.Fatalf("%s: %v", c.want, err)
		}
		if got := rec.next(t); got != c.want {
			t.Errorf("sent %s\n want %s", got, c.want)
		}
		if res != "" {
			results = append(results, res)
		}
	}
	want := []string{"/dev/loop7", "/dev/mapper/banger-abc", "42 /j/root/vmlinux /j/root/drives/drive-rootfs"}
	if !slices.Equal(results, want) {
		t.Errorf("results %q, want %q", results, want)
	}
}

// Without privileged operations there is no network port, and the disk
// port says what to install.
func TestPortsWithoutPrivilege(t *testing.T) {
	if netPort(privileged.Unavailable()) != nil || netPort(nil) != nil || diskPort(privileged.Unavailable()) != nil {
		t.Fatal("a network or disk port without privileged operations")
	}
	err := privilegedDisks{privileged.Unavailable()}.DetachLoop(context.Background(), "/dev/loop7")
	if !errors.Is(err, privileged.ErrNoPrivilege) {
		t.Fatalf("disks without privilege: %v", err)
	}
}
