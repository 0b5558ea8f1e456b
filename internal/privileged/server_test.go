package privileged

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// The test binary doubles as a helper client run under another uid: the
// test re-executes itself through /proc/self/exe with dropped credentials
// and these variables saying what to call.
const (
	childSocketEnv = "BANGER_PRIVTEST_SOCKET"
	childOpEnv     = "BANGER_PRIVTEST_OP"
	// childReadEnv names a file the child opens and reads, as an owner
	// holding a kept link would.
	childReadEnv = "BANGER_PRIVTEST_READ"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(childSocketEnv); sock != "" {
		os.Exit(childCall(sock, os.Getenv(childOpEnv)))
	}
	if path := os.Getenv(childReadEnv); path != "" {
		os.Exit(childRead(path))
	}
	if spec := os.Getenv(childFloodEnv); spec != "" {
		os.Exit(childFlood(os.Getenv(childFloodSocketEnv), spec))
	}
	os.Exit(m.Run())
}

// childResult is what the child prints: the error class it got.
type childResult struct {
	UID     int    `json:"uid"`
	OK      bool   `json:"ok"`
	Refused bool   `json:"refused"`
	Message string `json:"message"`
}

func childCall(sock, op string) int {
	c := NewClient(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	switch op {
	case "info":
		_, err = c.Info(ctx)
	case "tap":
		err = Do(ctx, c, OpCreateTap, TapSpec{Name: "bgt-child", Bridge: "banger0", UID: os.Getuid(), GID: os.Getgid()})
	default:
		err = fmt.Errorf("unknown child op %q", op)
	}
	res := childResult{UID: os.Getuid(), OK: err == nil, Refused: errors.Is(err, ErrRefused)}
	if err != nil {
		res.Message = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// childRead opens path read-write (as the VMM opens a drive; read-only when
// that is refused) and reports the first bytes or the error.
func childRead(path string) int {
	res := childResult{UID: os.Getuid()}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		f, err = os.Open(path)
	}
	if err == nil {
		buf := make([]byte, 64)
		var n int
		n, err = f.Read(buf)
		res.Message = string(bytes.TrimRight(buf[:max(n, 0)], "\x00"))
		_ = f.Close()
	}
	res.OK = err == nil
	if err != nil {
		res.Message = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// runChild runs the test binary as uid/gid with env and decodes its report.
func runChild(t *testing.T, env []string, uid, gid uint32) childResult {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid %d: %v\n%s", uid, err, stderr.String())
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if res.UID != int(uid) {
		t.Fatalf("child ran as uid %d, want %d", res.UID, uid)
	}
	return res
}

// callAs runs op against sock from a child process with uid/gid.
func callAs(t *testing.T, sock, op string, uid, gid uint32) childResult {
	t.Helper()
	return runChild(t, []string{childSocketEnv + "=" + sock, childOpEnv + "=" + op}, uid, gid)
}

// lockedBuffer collects log output written from server goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type helperFixture struct {
	socket string
	tree   *testTree
	logs   *lockedBuffer
}

// startHelper serves a Local (over a fake backend) owned by owner on a real
// socket in a directory every uid can search, so a dropped-privilege child
// can reach it and be judged by SO_PEERCRED alone.
func startHelper(t *testing.T, owner Owner) *helperFixture {
	t.Helper()
	return startHelperWith(t, owner, nil)
}

// startHelperWith is startHelper with tune (if not nil) adjusting the
// server's options first.
func startHelperWith(t *testing.T, owner Owner, tune func(*ServerOptions)) *helperFixture {
	t.Helper()
	tr := newTree(t, false)
	tr.owner = owner
	tr.local.policy.Owner = owner
	dir, err := os.MkdirTemp("", "banger-helper-test-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	sock := filepath.Join(dir, "root-helper.sock")
	logs := &lockedBuffer{}
	opts := ServerOptions{
		Ops:         tr.local,
		Owner:       owner,
		Info:        HelperInfo{Version: "v-test"},
		Log:         slog.New(slog.NewTextHandler(logs, nil)),
		ReadTimeout: 2 * time.Second,
	}
	if tune != nil {
		tune(&opts)
	}
	srv, err := NewServer(opts)
	must(t, err)
	ln, err := Listen(sock, os.Getgid())
	must(t, err)
	// Open the socket to everyone in the test only: the mode is defence in
	// depth, and the check under test is SO_PEERCRED.
	must(t, os.Chmod(sock, 0o666))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &helperFixture{socket: sock, tree: tr, logs: logs}
}

func TestHelperServesOwnerOverSocket(t *testing.T) {
	me := Owner{UID: os.Getuid(), GID: os.Getgid()}
	h := startHelper(t, me)
	c := NewClient(h.socket)
	ctx := context.Background()

	info, err := c.Info(ctx)
	if err != nil || info.OwnerUID != me.UID || info.Version != "v-test" || info.PID != os.Getpid() {
		t.Fatalf("info = %+v, %v", info, err)
	}
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	must(t, Do(ctx, c, OpEnsureBridge, BridgeSpec{Name: "banger0", Subnet: subnet}))
	must(t, Do(ctx, c, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger0", UID: me.UID, GID: me.GID}))
	must(t, Do(ctx, c, OpEnsureNAT, NATSpec{Subnet: subnet, Bridge: "banger0"}))
	must(t, Do(ctx, c, OpEnableIPForward, None{}))
	sock := filepath.Join(h.tree.run, "vms", "abc", "fc.sock")
	socketAt(t, sock)
	must(t, Do(ctx, c, OpChmod, ChmodSpec{Path: sock, Mode: 0o600}))
	h.tree.fake.setLoop("/dev/loop3", filepath.Join(h.tree.state, "vms", "abc", "x.img"))
	must(t, Do(ctx, c, OpDetachLoop, DeviceRef{Device: "/dev/loop3"}))

	want := []string{
		"bridge.ensure {banger0 172.30.0.0/24}",
		fmt.Sprintf("tap.create {bgt-abc banger0 %d %d}", me.UID, me.GID),
		"nat.ensure {172.30.0.0/24 banger0}",
		"ipforward.enable {}",
		"file.chmod " + sock + " 0600",
		"loop.detach {/dev/loop3}",
	}
	if got := h.tree.fake.Calls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("backend calls:\n got %q\nwant %q", got, want)
	}
	if mark, want := h.tree.fake.Served()[0].instance.Alias(), fmt.Sprintf("banger uid=%d state=%s", me.UID, h.tree.state); mark != want {
		t.Errorf("bridge marked %q, want %q", mark, want)
	}

	// The policy's refusals come back across the socket as the same class:
	// a tap for another uid and a symlinked path are checked server-side
	// (the client cannot know the owner or the file system).
	err = Do(ctx, c, OpCreateTap, TapSpec{Name: "bgt-abc", Bridge: "banger0", UID: me.UID + 1, GID: me.GID})
	var re *RemoteError
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &re) {
		t.Fatalf("tap for another uid: %v", err)
	}
	must(t, os.Symlink("/etc", filepath.Join(h.tree.run, "vms", "abc", "etc")))
	err = Do(ctx, c, OpChmod, ChmodSpec{Path: filepath.Join(h.tree.run, "vms", "abc", "etc", "shadow"), Mode: 0o600})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlink escape over the socket: %v", err)
	}
	if n := len(h.tree.fake.Calls()); n != len(want) {
		t.Fatalf("refused requests reached the backend: %v", h.tree.fake.Calls())
	}
}

func TestHelperRefusesOtherUIDs(t *testing.T) {
	requireRoot(t)
	const ownerUID, nobody = 4242, 65534
	h := startHelper(t, Owner{UID: ownerUID, GID: ownerUID})

	// A different uid is refused, for operations and for info alike.
	for _, op := range []string{"tap", "info"} {
		res := callAs(t, h.socket, op, nobody, nobody)
		if res.OK || !res.Refused {
			t.Fatalf("uid %d calling %s: %+v, want refused", nobody, op, res)
		}
		if !strings.Contains(res.Message, "uid 65534 may not use the root helper") {
			t.Errorf("refusal message: %q", res.Message)
		}
	}
	// The owner's uid, from a real unprivileged process, is served.
	if res := callAs(t, h.socket, "tap", ownerUID, ownerUID); !res.OK {
		t.Fatalf("owner uid %d refused: %+v", ownerUID, res)
	}
	// Root may ask who the helper serves but not operate it.
	c := NewClient(h.socket)
	if info, err := c.Info(context.Background()); err != nil || info.OwnerUID != ownerUID {
		t.Fatalf("root asking for info: %+v, %v", info, err)
	}
	err := Do(context.Background(), c, OpCreateTap, TapSpec{Name: "bgt-root", Bridge: "banger0", UID: ownerUID, GID: ownerUID})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("root operating the helper: %v, want refused", err)
	}

	if got := h.tree.fake.Calls(); len(got) != 1 || got[0] != "tap.create {bgt-child banger0 4242 4242}" {
		t.Fatalf("backend calls %q, want only the owner's tap", got)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "refused root helper request"); n != 3 {
		t.Errorf("%d refusals logged, want 3:\n%s", n, logs)
	}
	if !strings.Contains(logs, "uid=65534") || !strings.Contains(logs, "op=tap.create uid=0") {
		t.Errorf("refusal log lacks the caller:\n%s", logs)
	}
}

func TestHelperPassesBackingFileDescriptor(t *testing.T) {
	me := Owner{UID: os.Getuid(), GID: os.Getgid()}
	h := startHelper(t, me)
	f := ownedFile(t, filepath.Join(h.tree.state, "vms", "abc"), "rootfs.ext4", os.O_RDWR)
	dev, err := Call(context.Background(), NewClient(h.socket), OpAttachLoop, LoopAttach{Backing: f, Name: "banger-abc-cow"})
	if err != nil || dev.Device != "/dev/loop7" {
		t.Fatalf("attach over the socket: %q, %v", dev, err)
	}
	if len(h.tree.fake.Attached()) != 1 || h.tree.fake.Attached()[0] != inodeOf(t, f) {
		t.Fatal("the helper attached a different file than the client passed")
	}
	// A file outside the state dir is refused even though the caller can
	// open it: the descriptor proves access, the policy limits the place.
	out := ownedFile(t, h.tree.root, "elsewhere.img", os.O_RDWR)
	if _, err := Call(context.Background(), NewClient(h.socket), OpAttachLoop, LoopAttach{Backing: out, Name: "banger-abc-cow"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("attach of a file outside the state dir: %v", err)
	}
}

// rawCall sends data (and fds) on a fresh connection and returns the reply.
func rawCall(t *testing.T, sock string, data []byte, fds ...int) Response {
	t.Helper()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	must(t, err)
	defer func() { _ = conn.Close() }()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = conn.WriteMsgUnix(data, oob, nil)
	must(t, err)
	must(t, conn.CloseWrite())
	var resp Response
	must(t, json.NewDecoder(conn).Decode(&resp))
	return resp
}

func TestHelperRejectsMalformedRequests(t *testing.T) {
	h := startHelper(t, Owner{UID: os.Getuid(), GID: os.Getgid()})
	f, err := os.Open(os.DevNull)
	must(t, err)
	defer func() { _ = f.Close() }()
	fd := int(f.Fd())
	cases := []struct {
		name string
		data string
		fds  []int
	}{
		{"garbage", "\x00\x01rm -rf /", nil},
		{"unknown op", `{"op":"exec","args":{"cmd":"id"}}`, nil},
		{"descriptor on an op without one", `{"op":"tap.delete","args":{"name":"bgt-a"}}`, []int{fd}},
		{"loop attach without descriptor", `{"op":"loop.attach","args":{"name":"banger-a-cow","read_only":true}}`, nil},
		{"two descriptors", `{"op":"loop.attach","args":{"name":"banger-a-cow","read_only":true}}`, []int{fd, fd}},
		{"jailer launch with too few descriptors", `{"op":"jailer.launch","args":{"vm_id":"a","drives":"rootfs:rw"}}`, []int{fd}},
		{"jailer launch with a malformed drive list", `{"op":"jailer.launch","args":{"vm_id":"a","drives":"rootfs:rx"}}`, []int{fd, fd, fd}},
		{"jailer launch naming its own binary", `{"op":"jailer.launch","args":{"vm_id":"a","drives":"rootfs:rw","exec_file":"/bin/sh"}}`, []int{fd, fd, fd}},
		{"too many descriptors", `{"op":"loop.attach","args":{"name":"banger-a-cow","read_only":true}}`, []int{fd, fd, fd, fd, fd, fd, fd, fd}},
		{"oversize", `{"op":"tap.delete","args":{"name":"` + strings.Repeat("a", 2*MaxRequestSize) + `"}}`, nil},
	}
	for _, c := range cases {
		resp := rawCall(t, h.socket, []byte(c.data), c.fds...)
		if resp.OK || resp.Error == nil || resp.Error.Code != CodeInvalidArgument {
			t.Errorf("%s: reply %+v, want invalid_argument", c.name, resp)
		}
	}
	if calls := h.tree.fake.Calls(); len(calls) != 0 {
		t.Fatalf("malformed requests reached the backend: %v", calls)
	}
}

func TestHelperSlowClientDoesNotBlockOthers(t *testing.T) {
	h := startHelper(t, Owner{UID: os.Getuid(), GID: os.Getgid()})
	idle, err := net.Dial("unix", h.socket)
	must(t, err)
	defer func() { _ = idle.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := NewClient(h.socket).Info(ctx); err != nil {
		t.Fatalf("info while another client idles: %v", err)
	}
	// The idle client gets an answer once its read time is up, and the
	// helper keeps serving.
	must(t, idle.SetReadDeadline(time.Now().Add(10*time.Second)))
	var resp Response
	if err := json.NewDecoder(idle).Decode(&resp); err != nil || resp.OK || resp.Error == nil {
		t.Fatalf("idle client: %+v, %v", resp, err)
	}
	if _, err := NewClient(h.socket).Info(ctx); err != nil {
		t.Fatalf("info after a timed-out client: %v", err)
	}
}

func TestDispatchCoversEveryOp(t *testing.T) {
	rec := &recordingOps{}
	srv, err := NewServer(ServerOptions{Ops: rec, Owner: Owner{UID: 1}})
	must(t, err)
	f, err := os.Open(os.DevNull)
	must(t, err)
	defer func() { _ = f.Close() }()
	for op, args := range validRequests(t) {
		data, err := EncodeRequest(op, args)
		must(t, err)
		req, err := DecodeRequest(data)
		must(t, err)
		var files []*os.File
		for range req.op.fileCount(req.Args) {
			files = append(files, f)
		}
		if _, err := srv.dispatch(context.Background(), req, files); err != nil {
			t.Errorf("%s: %v", op, err)
		}
	}
	// Every op but helper.info reaches Ops, each exactly once.
	if len(rec.ops) != len(menu())-1 {
		t.Fatalf("Ops saw %d calls for %d ops: %v", len(rec.ops), len(menu())-1, rec.ops)
	}
}

func TestClientUnreachable(t *testing.T) {
	err := Do(context.Background(), NewClient(filepath.Join(t.TempDir(), "none.sock")), OpEnableIPForward, None{})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "banger-root-helper") {
		t.Fatalf("got %v", err)
	}
}

func TestListenReplacesOnlyStaleSockets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "h.sock")
	must(t, os.WriteFile(p, []byte("not a socket"), 0o600))
	if _, err := Listen(p, os.Getgid()); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	must(t, os.Remove(p))
	socketAt(t, p) // left behind by a crash
	ln, err := Listen(p, os.Getgid())
	must(t, err)
	defer func() { _ = ln.Close() }()
	fi, err := os.Stat(p)
	must(t, err)
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, want 0660", fi.Mode().Perm())
	}
}

func TestForDaemon(t *testing.T) {
	root := t.TempDir()
	layout := paths.System(root)
	ops, how, err := ForDaemon(layout, Identity{UID: 0}, &fakeBackend{}, nil)
	if _, ok := ops.(*Local); err != nil || !ok {
		t.Fatalf("root daemon: %T (%s), %v", ops, how, err)
	}
	ops, _, err = ForDaemon(layout, Identity{UID: 1000, GID: 1000}, &fakeBackend{}, nil)
	must(t, err)
	if err := Do(context.Background(), ops, OpEnableIPForward, None{}); !errors.Is(err, ErrNoPrivilege) || !strings.Contains(err.Error(), "banger system install") {
		t.Fatalf("no install: %v", err)
	}
	must(t, installmeta.Write(layout.InstallMetaPath(), installmeta.Meta{OwnerUser: "alice", OwnerUID: 1000, OwnerGID: 1000}))
	ops, how, err = ForDaemon(layout, Identity{UID: 1000, GID: 1000}, &fakeBackend{}, nil)
	if c, ok := ops.(*Client); err != nil || !ok || c.Socket() != layout.HelperSocketPath() {
		t.Fatalf("installed: %T (%s), %v", ops, how, err)
	}
}

// recordingOps is an Ops that records which operations reached it.
type recordingOps struct{ ops []string }

func (r *recordingOps) perform(_ context.Context, op entry, req any) (any, error) {
	if err := op.validate(req); err != nil {
		return nil, err
	}
	r.ops = append(r.ops, op.opName())
	return nil, nil
}
