package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// testGuest runs an in-process agent whose file root is a temp dir and
// returns its socket and root.
func testGuest(t *testing.T) (sock, root string) {
	t.Helper()
	root = t.TempDir()
	return agentWithSetup(t, root, nil), root
}

func dialGuest(t *testing.T, sock string) *agent.Client {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.NewClient(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestGuestSetupInstallsKeyAndPinsHostKeys(t *testing.T) {
	ctx := context.Background()
	configDir := t.TempDir()
	me := currentOwner()
	var events []string
	setup := func(sock, vmID string) error {
		g := guestSetup{
			client: dialGuest(t, sock), vmID: vmID, vmName: "dev", hosts: []string{"dev.banger", "172.30.0.9"},
			owner: me, configDir: configDir, log: slog.New(slog.DiscardHandler),
			progress: func(ev api.Event) { events = append(events, ev.Message) },
		}
		return g.run(ctx)
	}
	sock, root := testGuest(t)
	if err := setup(sock, "vm-1"); err != nil {
		t.Fatal(err)
	}
	// The owner's key is in the login user's authorized_keys (in the
	// guest's root), and the host key is pinned under both names.
	info, err := dialGuest(t, sock).GuestInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	login := loginUser(info, me.Name)
	var home string
	for _, u := range info.Users {
		if u.Name == login {
			home = u.Home
		}
	}
	pub, _ := os.ReadFile(ssh.KeyPath(configDir) + ".pub")
	authorized, err := os.ReadFile(filepath.Join(root, home, ".ssh", "authorized_keys"))
	if err != nil || !strings.Contains(string(authorized), strings.TrimSpace(string(pub))) {
		t.Fatalf("authorized_keys %q (%v) lacks the owner key %q", authorized, err, pub)
	}
	kh := ssh.KnownHosts{Path: ssh.KnownHostsPath(configDir)}
	if pinned, _ := kh.Pinned("vm-1"); len(pinned) != 1 || pinned[0] != info.HostKeys[0] {
		t.Fatalf("pinned %v, want %v", pinned, info.HostKeys)
	}
	if len(events) != 1 || !strings.Contains(events[0], "SSH host key recorded") {
		t.Fatalf("events %q", events)
	}
	// A restart confirms.
	if err := setup(sock, "vm-1"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	// The same VM answering with another key (another disk) is refused.
	other, _ := testGuest(t)
	err = setup(other, "vm-1")
	if !errors.Is(err, ssh.ErrHostKeyMismatch) && !api.IsCode(err, api.CodeFailedPrecondition) {
		t.Fatalf("mismatch: %v", err)
	}
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Hint, "banger-vm=vm-1") {
		t.Fatalf("mismatch error %#v lacks the hint naming the lines to remove", err)
	}
	// A recreated VM (new ID, same name) replaces the pin.
	if err := setup(other, "vm-2"); err != nil {
		t.Fatalf("recreate: %v", err)
	}
	if pinned, _ := kh.Pinned("vm-1"); len(pinned) != 0 {
		t.Fatalf("old VM still pinned: %v", pinned)
	}
}

func TestSyncFilesLandsInGuestHomeAndReportsRefusals(t *testing.T) {
	sock, root := testGuest(t)
	c := dialGuest(t, sock)
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config", "gh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "gh", "hosts.yml"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := c.GuestInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	login := loginUser(info, currentOwner().Name)
	var events []api.Event
	res := syncFiles(context.Background(), c, login, home, []string{"~/.config/gh", "/etc/hostname"}, "dev", func(ev api.Event) { events = append(events, ev) })
	if len(res.Synced) != 1 || res.Synced[0].Files != 1 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "outside your home") {
		t.Fatalf("result %+v", res)
	}
	if b, err := os.ReadFile(filepath.Join(root, res.Synced[0].Dest, "hosts.yml")); err != nil || string(b) != "x\n" {
		t.Fatalf("synced file: %q %v", b, err)
	}
	if len(events) != 2 {
		t.Fatalf("events %+v", events)
	}
}

func TestLoginUser(t *testing.T) {
	info := agent.GuestInfo{Users: []agent.GuestUser{{Name: "root"}, {Name: "alice", UID: 1000}}}
	for owner, want := range map[string]string{"alice": "alice", "bob": "root", "": "root"} {
		if got := loginUser(info, owner); got != want {
			t.Errorf("loginUser(%q) = %q, want %q", owner, got, want)
		}
	}
}

// fakeInstance is a running VMM whose agent is at sock, reached with
// dial (a plain Unix connection when nil).
type fakeInstance struct {
	sock  string
	done  chan struct{}
	dials atomic.Int32
	dial  func(ctx context.Context, sock string) (net.Conn, error)
}

func (f *fakeInstance) PID() int                                  { return 1 }
func (f *fakeInstance) Stop(context.Context, time.Duration) error { return nil }
func (f *fakeInstance) Kill() error                               { return nil }
func (f *fakeInstance) Done() <-chan struct{}                     { return f.done }
func (f *fakeInstance) Exit() vmm.ExitStatus                      { return vmm.ExitStatus{} }
func (f *fakeInstance) DialAgent(ctx context.Context) (net.Conn, error) {
	f.dials.Add(1)
	if f.dial != nil {
		return f.dial(ctx, f.sock)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", f.sock)
}

func TestAgentPoolReusesOneSessionPerVMM(t *testing.T) {
	sock, _ := testGuest(t)
	pool := newAgentPool(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	inst := &fakeInstance{sock: sock, done: make(chan struct{})}
	s1, err := pool.session(ctx, "id", inst)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := pool.session(ctx, "id", inst)
	if err != nil || s2.client != s1.client || inst.dials.Load() != 1 {
		t.Fatalf("second use dialed again (%d dials, %v)", inst.dials.Load(), err)
	}
	// The VMM exits: the session is closed and a new VMM gets a new one.
	close(inst.done)
	select {
	case <-s1.client.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session outlived its VMM")
	}
	inst2 := &fakeInstance{sock: sock, done: make(chan struct{})}
	s3, err := pool.session(ctx, "id", inst2)
	if err != nil || s3.client == s1.client || inst2.dials.Load() != 1 {
		t.Fatalf("after the VMM changed: %v, %d dials", err, inst2.dials.Load())
	}
	if _, err := s3.client.Health(ctx); err != nil {
		t.Fatal(err)
	}
	close(inst2.done)
}

func TestAgentErrorMapsCodes(t *testing.T) {
	for code, want := range map[string]api.Code{
		agent.CodeNotFound: api.CodeNotFound, agent.CodeNoUser: api.CodeNotFound,
		agent.CodeInvalid: api.CodeInvalidArgument, agent.CodePermission: api.CodeFailedPrecondition,
	} {
		err := agentError("dev", &agent.RemoteError{Op: "exec", Code: code, Message: "m"})
		if !api.IsCode(err, want) || err.Error() != `vm "dev": m` {
			t.Errorf("%s: %v (%s)", code, err, api.CodeOf(err))
		}
	}
	if err := agentError("dev", errors.New("broken pipe")); !api.IsCode(err, api.CodeUnavailable) {
		t.Errorf("transport error: %v", err)
	}
}

// silentGuest is a guest agent endpoint that accepts connections and never
// answers: a wedged or hostile guest. It returns the socket.
func silentGuest(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgsil")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		_ = os.RemoveAll(dir)
	})
	return sock
}

// silentDialers are the two places a silent guest can stall a dial: the
// hybrid-vsock CONNECT (Firecracker's socket, whose guest never answers)
// and the agent's hello (a connected stream nobody speaks on).
var silentDialers = map[string]func(ctx context.Context, sock string) (net.Conn, error){
	"hybrid-vsock": func(ctx context.Context, sock string) (net.Conn, error) {
		return firecracker.DialHybridVsock(ctx, sock, agent.DefaultPort)
	},
	"hello": nil,
}

// within waits for ch for at most a generous guard time: a call that
// never returns fails the test instead of hanging it.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("%s never returned", what)
		panic("unreachable")
	}
}

func TestAgentPoolGivesUpOnASilentAgent(t *testing.T) {
	for name, dial := range silentDialers {
		t.Run(name, func(t *testing.T) {
			pool := newAgentPool(slog.New(slog.DiscardHandler))
			pool.answerTimeout = 200 * time.Millisecond
			inst := &fakeInstance{sock: silentGuest(t), done: make(chan struct{}), dial: dial}
			res := make(chan error, 1)
			go func() {
				_, err := pool.session(context.Background(), "id", inst)
				res <- err
			}()
			err := within(t, res, "a session to a silent agent")
			if !errors.Is(err, errAgentSilent) {
				t.Fatalf("session to a silent agent: %v, want errAgentSilent", err)
			}
			apiErr := agentUnreachable("dev", err, pool.answerTimeout)
			var ae *api.Error
			if !errors.As(apiErr, &ae) || ae.Code != api.CodeUnavailable ||
				ae.Message != `the guest agent of vm "dev" did not answer within 200ms; the VM may be overloaded or its agent stopped` ||
				!strings.Contains(ae.Hint, "banger vm logs dev") {
				t.Fatalf("user-facing error: %#v", apiErr)
			}
		})
	}
}

func TestAgentPoolWaiterGivesUpWithItsContext(t *testing.T) {
	for name, dial := range silentDialers {
		t.Run(name, func(t *testing.T) {
			pool := newAgentPool(slog.New(slog.DiscardHandler))
			pool.answerTimeout = time.Hour // the first call stays stuck dialing
			inst := &fakeInstance{sock: silentGuest(t), done: make(chan struct{}), dial: dial}
			firstCtx, cancelFirst := context.WithCancel(context.Background())
			defer cancelFirst()
			first := make(chan error, 1)
			go func() {
				_, err := pool.session(firstCtx, "id", inst)
				first <- err
			}()
			for inst.dials.Load() == 0 { // the first call holds the slot
				time.Sleep(time.Millisecond)
			}
			secondCtx, cancelSecond := context.WithCancel(context.Background())
			second := make(chan error, 1)
			go func() {
				_, err := pool.session(secondCtx, "id", inst)
				second <- err
			}()
			cancelSecond()
			if err := within(t, second, "a waiter whose context ended"); !errors.Is(err, context.Canceled) {
				t.Fatalf("waiter: %v, want context.Canceled", err)
			}
			select {
			case err := <-first:
				t.Fatalf("the first call ended (%v) before the waiter; it should still be dialing", err)
			default:
			}
			if inst.dials.Load() != 1 {
				t.Fatalf("the waiter dialed too (%d dials)", inst.dials.Load())
			}
			cancelFirst()
			if err := within(t, first, "the first call after its context ended"); !errors.Is(err, context.Canceled) || errors.Is(err, errAgentSilent) {
				t.Fatalf("first call: %v, want its own cancellation", err)
			}
		})
	}
}
