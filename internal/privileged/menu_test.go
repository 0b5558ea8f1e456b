package privileged

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

// wireGolden is, for every operation, a typical request as the daemon
// makes it and the exact bytes the previous release's client sent for it
// (generated with that release's code). An older daemon talks to a newer
// helper in the middle of an update, so these bytes must keep decoding to
// the same request, and a request must keep encoding to them.
func wireGolden(t testing.TB) []struct {
	op    entry
	req   any
	wire  string
	files int
} {
	t.Helper()
	f, err := os.Open(os.DevNull)
	must(t, err)
	t.Cleanup(func() { _ = f.Close() })
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	port := IsolationSpec{Bridge: "banger0", Tap: "bgt-0123abcd456", MAC: "02:00:00:00:00:02", Addr: netip.MustParseAddr("172.30.0.2")}
	isolated := port
	isolated.Isolated = true
	launch := JailerLaunch{VMID: "vm-0123", Console: f, Kernel: f, Initrd: f, VMMLog: true,
		Drives: []JailDrive{{ID: "rootfs", File: f}, {ID: "seed", ReadOnly: true, File: f}}}
	return []struct {
		op    entry
		req   any
		wire  string
		files int
	}{
		{OpInfo, None{}, `{"op":"helper.info"}`, 0},
		{OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: subnet}, `{"op":"bridge.ensure","args":{"name":"banger0","subnet":"172.30.0.0/24"}}`, 0},
		{OpDeleteBridge, Named{Name: "banger0"}, `{"op":"bridge.delete","args":{"name":"banger0"}}`, 0},
		{OpCreateTap, TapSpec{Name: "bgt-0123abcd456", Bridge: "banger0", UID: 1000, GID: 1000}, `{"op":"tap.create","args":{"name":"bgt-0123abcd456","bridge":"banger0","uid":1000,"gid":1000}}`, 0},
		{OpDeleteTap, Named{Name: "bgt-0123abcd456"}, `{"op":"tap.delete","args":{"name":"bgt-0123abcd456"}}`, 0},
		{OpEnsureNAT, NATSpec{Subnet: subnet, Bridge: "banger0"}, `{"op":"nat.ensure","args":{"subnet":"172.30.0.0/24","bridge":"banger0"}}`, 0},
		{OpRemoveNAT, NATSpec{Subnet: subnet, Bridge: "banger0"}, `{"op":"nat.remove","args":{"subnet":"172.30.0.0/24","bridge":"banger0"}}`, 0},
		{OpIsolate, isolated, `{"op":"firewall.isolate","args":{"bridge":"banger0","tap":"bgt-0123abcd456","mac":"02:00:00:00:00:02","addr":"172.30.0.2","isolated":true}}`, 0},
		{OpUnisolate, port, `{"op":"firewall.unisolate","args":{"bridge":"banger0","tap":"bgt-0123abcd456","mac":"02:00:00:00:00:02","addr":"172.30.0.2"}}`, 0},
		{OpApplyEgress, EgressSpec{Bridge: "banger0", Tap: "bgt-0123abcd456", Addr: netip.MustParseAddr("172.30.0.2"), Mode: "allowlist", Allow: []EgressNet{{Net: netip.MustParsePrefix("10.0.0.0/8"), Port: 443}}},
			`{"op":"egress.apply","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addr":"172.30.0.2","mode":"allowlist","allow":"10.0.0.0/8:443"}}`, 0},
		{OpLearnEgress, LearnSpec{Bridge: "banger0", Tap: "bgt-0123abcd456", Addrs: []LearnedAddr{{Addr: netip.MustParseAddr("192.0.2.7"), TTLSeconds: 60}}},
			`{"op":"egress.learn","args":{"bridge":"banger0","tap":"bgt-0123abcd456","addrs":"192.0.2.7:0:60"}}`, 0},
		{OpEnableIPForward, None{}, `{"op":"ipforward.enable"}`, 0},
		{OpConfigureResolver, ResolverSpec{Link: "banger0", Server: netip.MustParseAddr("172.30.0.1"), Domain: "banger"}, `{"op":"resolver.configure","args":{"link":"banger0","server":"172.30.0.1","domain":"banger"}}`, 0},
		{OpRevertResolver, LinkRef{Link: "banger0"}, `{"op":"resolver.revert","args":{"link":"banger0"}}`, 0},
		{OpAttachLoop, LoopAttach{Backing: f, Name: "banger-abc-cow", ReadOnly: true}, `{"op":"loop.attach","args":{"name":"banger-abc-cow","read_only":true}}`, 1},
		{OpDetachLoop, DeviceRef{Device: "/dev/loop3"}, `{"op":"loop.detach","args":{"device":"/dev/loop3"}}`, 0},
		{OpCreateSnapshot, SnapshotSpec{Name: "banger-abc", Origin: "/dev/loop1", COW: "/dev/loop2", SizeBytes: 8 << 30}, `{"op":"snapshot.create","args":{"name":"banger-abc","origin":"/dev/loop1","cow":"/dev/loop2","size_bytes":8589934592}}`, 0},
		{OpRemoveSnapshot, Named{Name: "banger-abc"}, `{"op":"snapshot.remove","args":{"name":"banger-abc"}}`, 0},
		{OpChown, ChownSpec{Path: "/run/banger/vms/abc/fc.sock", UID: 1000, GID: 1000}, `{"op":"file.chown","args":{"path":"/run/banger/vms/abc/fc.sock","uid":1000,"gid":1000}}`, 0},
		{OpChmod, ChmodSpec{Path: "/run/banger/vms/abc/fc.sock", Mode: 0o660}, `{"op":"file.chmod","args":{"path":"/run/banger/vms/abc/fc.sock","mode":432}}`, 0},
		{OpLaunchJailer, launch, `{"op":"jailer.launch","args":{"vm_id":"vm-0123","drives":"rootfs:rw,seed:ro","initrd":true,"vmm_log":true}}`, 5},
		{OpRemoveJail, VMRef{VMID: "vm-0123"}, `{"op":"jail.remove","args":{"vm_id":"vm-0123"}}`, 0},
	}
}

func TestWireFormatUnchanged(t *testing.T) {
	cases := wireGolden(t)
	if len(cases) != len(menu()) {
		t.Fatalf("golden covers %d ops, the menu has %d", len(cases), len(menu()))
	}
	for _, c := range cases {
		t.Run(c.op.opName(), func(t *testing.T) {
			must(t, c.op.validate(c.req))
			args, files := c.op.encode(c.req)
			data, err := EncodeRequest(c.op.opName(), args)
			must(t, err)
			if string(data) != c.wire || len(files) != c.files {
				t.Fatalf("encodes to %s with %d descriptors, want %s with %d", data, len(files), c.wire, c.files)
			}
			dec, err := DecodeRequest([]byte(c.wire))
			must(t, err)
			if dec.op != c.op || dec.op.fileCount(dec.Args) != c.files {
				t.Fatalf("decodes to %s taking %d descriptors", dec.Op, dec.op.fileCount(dec.Args))
			}
			back, err := dec.op.decode(dec.Args, files)
			must(t, err)
			if !reflect.DeepEqual(back, c.req) {
				t.Fatalf("decodes to %+v, want %+v", back, c.req)
			}
		})
	}
}

func TestResultsWireFormatUnchanged(t *testing.T) {
	for _, c := range []struct {
		op   entry
		resp any
		wire string
	}{
		{OpAttachLoop, DevicePath{Device: "/dev/loop7"}, `{"device":"/dev/loop7"}`},
		{OpLaunchJailer, JailedVMM{PID: 42, Root: "/j/root", APISocket: "/j/root/api.socket", Kernel: "/j/root/kernel", Drives: map[string]string{"rootfs": "/j/root/drives/drive-rootfs"}},
			`{"pid":42,"root":"/j/root","api_socket":"/j/root/api.socket","kernel":"/j/root/kernel","drives":{"rootfs":"/j/root/drives/drive-rootfs"}}`},
	} {
		got, err := c.op.decodeResult([]byte(c.wire))
		if err != nil || !reflect.DeepEqual(got, c.resp) {
			t.Errorf("%s: result %s read as %+v, %v", c.op.opName(), c.wire, got, err)
		}
	}
	// Operations that return nothing send no result at all.
	if r := OpEnsureNAT.result(None{}); r != nil {
		t.Errorf("nat.ensure answers %v, want no result", r)
	}
}

// Every operation is fully declared: one name, what it does, a check that
// refuses an empty request for whatever it takes, its effect, and only
// helper.info (the server's own answer) open to uid 0 and not run by Local.
func TestMenuEntriesComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range wireGolden(t) {
		e, name := c.op, c.op.opName()
		if seen[name] {
			t.Errorf("%s is on the menu twice", name)
		}
		seen[name] = true
		if e.what() == "" {
			t.Errorf("%s does not say what it does", name)
		}
		zero := reflect.Zero(reflect.TypeOf(c.req)).Interface()
		if _, none := zero.(None); !none && e.validate(zero) == nil {
			t.Errorf("%s accepts an empty request", name)
		}
		if public := e.mayCall(false); public != (e == entry(OpInfo)) {
			t.Errorf("%s: callable by others than the owner = %v", name, public)
		}
		// An operation's effect on the machine is declared in its entry;
		// only the helper's own answer and the jail operations (composed of
		// other effects) have none.
		composed := e == entry(OpInfo) || e == entry(OpLaunchJailer) || e == entry(OpRemoveJail)
		if effect := !reflect.ValueOf(e).Elem().FieldByName("effect").IsNil(); effect == composed {
			t.Errorf("%s: has an effect of its own = %v", name, effect)
		}
	}
	if _, err := OpInfo.runLocal(context.Background(), &Local{}, None{}); !errors.Is(err, ErrNotAvailable) {
		t.Errorf("helper.info in Local: %v", err)
	}
}

func TestUnavailableNamesEveryOperation(t *testing.T) {
	for _, c := range wireGolden(t) {
		_, err := Unavailable().perform(context.Background(), c.op, c.req)
		if !errors.Is(err, ErrNoPrivilege) || !strings.Contains(err.Error(), c.op.what()) || !strings.Contains(err.Error(), "banger system install") {
			t.Errorf("%s: %v", c.op.opName(), err)
		}
	}
}
