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

// fakeBackend records every effect Local lets through. Loop backing files are
// looked up in loops; file targets are recorded by inode so tests can check
// the descriptor Local resolved is the file they meant.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string
	// bridgeErr is what CheckBridge says of a bridge (nil: ours).
	bridgeErr map[string]error
	loops     map[string]string // device -> backing file
	// attached records the inode of each backing file loop.attach received.
	attached []inode
	// touched records the inode of each file.chown/file.chmod target.
	touched []inode
	// served is whom each effect acted for.
	served []serving
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

// apply records the effect Local let through as "<op> <request>" (and
// whom it acted for) and answers as the machine would.
func (f *fakeBackend) apply(_ context.Context, op entry, at serving, req any) (any, error) {
	var out any = None{}
	what := fmt.Sprintf("%v", req)
	switch r := req.(type) {
	case LoopAttach:
		f.note(&f.attached, r.Backing)
		out, what = DevicePath{Device: "/dev/loop7"}, fmt.Sprintf("%s ro=%v", r.Name, r.ReadOnly)
	case SnapshotSpec:
		out = DevicePath{Device: "/dev/mapper/" + r.Name}
	case ChownSpec:
		f.note(&f.touched, r.target)
		what = fmt.Sprintf("%s %d:%d", r.target.Name(), r.UID, r.GID)
	case ChmodSpec:
		f.note(&f.touched, r.target)
		what = fmt.Sprintf("%s %#o", r.target.Name(), r.Mode)
	}
	f.mu.Lock()
	f.served = append(f.served, at)
	f.mu.Unlock()
	return out, f.record("%s %s", op.opName(), what)
}

func (f *fakeBackend) CheckBridge(_ context.Context, name string, _ network.Owner) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bridgeErr[name]
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

// note records the inode of a descriptor an effect received.
func (f *fakeBackend) note(into *[]inode, t *os.File) {
	var st unix.Stat_t
	if unix.Fstat(int(t.Fd()), &st) == nil {
		f.mu.Lock()
		*into = append(*into, inode{st.Dev, st.Ino})
		f.mu.Unlock()
	}
}

// Served returns whom each effect acted for, in order.
func (f *fakeBackend) Served() []serving {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]serving(nil), f.served...)
}

// requireRoot skips a test that needs root, saying so.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown to another uid, mounts, dropping privileges); run `make test` as root")
	}
}
