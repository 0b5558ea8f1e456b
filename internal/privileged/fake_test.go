package privileged

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// fakeBackend records every call Local lets through. Loop backing files are
// looked up in loops; file targets are recorded by inode so tests can check
// the descriptor Local resolved is the file they meant.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string
	// bridgeErr is what CheckBridge says of a bridge (nil: ours).
	bridgeErr map[string]error
	loops     map[string]string // device -> backing file
	// attached records the inode of each backing file AttachLoop received.
	attached []inode
	// touched records the inode of each Chown/Chmod target.
	touched []inode
	// started are the jailers StartJailer "ran".
	started []*fakeProcess
	fail    error
	// beforeCall, if set, sees each call before it is recorded (to check
	// the state of the world at the moment the backend acts).
	beforeCall func(call string)
}

type inode struct{ dev, ino uint64 }

func inodeOf(t *testing.T, f *os.File) inode {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return inode{st.Dev, st.Ino}
}

func inodeAt(t *testing.T, path string) inode {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return inode{st.Dev, st.Ino}
}

func (f *fakeBackend) record(format string, args ...any) error {
	call := fmt.Sprintf(format, args...)
	if f.beforeCall != nil {
		f.beforeCall(call)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.fail
}

// setLoop and the accessors below lock, as the server calls the fake
// from its own goroutines.
func (f *fakeBackend) setLoop(dev, backing string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loops[dev] = backing
}

func (f *fakeBackend) Attached() []inode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]inode(nil), f.attached...)
}

func (f *fakeBackend) Touched() []inode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]inode(nil), f.touched...)
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) EnsureBridge(_ context.Context, s BridgeSpec, o network.Owner) error {
	return f.record("EnsureBridge %s %s %s", s.Name, s.Subnet, o.Alias())
}
func (f *fakeBackend) DeleteBridge(_ context.Context, n string, o network.Owner) error {
	return f.record("DeleteBridge %s %s", n, o.Alias())
}
func (f *fakeBackend) CheckBridge(_ context.Context, name string, o network.Owner) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bridgeErr[name]
}
func (f *fakeBackend) CreateTap(_ context.Context, s TapSpec) error {
	return f.record("CreateTap %s %s %d:%d", s.Name, s.Bridge, s.UID, s.GID)
}
func (f *fakeBackend) DeleteTap(_ context.Context, n string, o Owner) error {
	return f.record("DeleteTap %s %d", n, o.UID)
}
func (f *fakeBackend) EnsureNAT(_ context.Context, s NATSpec) error {
	return f.record("EnsureNAT %s %s", s.Subnet, s.Bridge)
}
func (f *fakeBackend) RemoveNAT(_ context.Context, s NATSpec) error {
	return f.record("RemoveNAT %s %s", s.Subnet, s.Bridge)
}
func (f *fakeBackend) Isolate(_ context.Context, s IsolationSpec) error {
	return f.record("Isolate %s %s", s.Tap, s.Addr)
}
func (f *fakeBackend) Unisolate(_ context.Context, s IsolationSpec) error {
	return f.record("Unisolate %s %s", s.Tap, s.Addr)
}
func (f *fakeBackend) EnableIPForward(context.Context) error { return f.record("EnableIPForward") }
func (f *fakeBackend) ConfigureResolver(_ context.Context, s ResolverSpec) error {
	return f.record("ConfigureResolver %s %s %s", s.Link, s.Server, s.Domain)
}
func (f *fakeBackend) RevertResolver(_ context.Context, l string) error {
	return f.record("RevertResolver %s", l)
}

func (f *fakeBackend) AttachLoop(_ context.Context, s LoopAttach) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.Backing.Fd()), &st); err != nil {
		return "", err
	}
	f.mu.Lock()
	f.attached = append(f.attached, inode{st.Dev, st.Ino})
	f.mu.Unlock()
	return "/dev/loop7", f.record("AttachLoop %s ro=%v", s.Name, s.ReadOnly)
}

func (f *fakeBackend) LoopBackingFile(_ context.Context, dev string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.loops[dev]
	if !ok {
		return "", fmt.Errorf("%s: no such loop device", dev)
	}
	return b, nil
}

func (f *fakeBackend) DetachLoop(_ context.Context, d string) error {
	return f.record("DetachLoop %s", d)
}

func (f *fakeBackend) CreateSnapshot(_ context.Context, s SnapshotSpec, o Owner) (string, error) {
	return "/dev/mapper/" + s.Name, f.record("CreateSnapshot %s %s %s %d owner=%d", s.Name, s.Origin, s.COW, s.SizeBytes, o.UID)
}

func (f *fakeBackend) RemoveSnapshot(_ context.Context, n string) error {
	return f.record("RemoveSnapshot %s", n)
}

func (f *fakeBackend) Chown(_ context.Context, t *os.File, uid, gid int) error {
	f.noteTarget(t)
	return f.record("Chown %s %d:%d", t.Name(), uid, gid)
}

func (f *fakeBackend) Chmod(_ context.Context, t *os.File, mode uint32) error {
	f.noteTarget(t)
	return f.record("Chmod %s %#o", t.Name(), mode)
}

func (f *fakeBackend) noteTarget(t *os.File) {
	var st unix.Stat_t
	if unix.Fstat(int(t.Fd()), &st) == nil {
		f.mu.Lock()
		f.touched = append(f.touched, inode{st.Dev, st.Ino})
		f.mu.Unlock()
	}
}

// requireRoot skips a test that needs root, saying so.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown to another uid, mounts, dropping privileges); run `make test` as root")
	}
}
