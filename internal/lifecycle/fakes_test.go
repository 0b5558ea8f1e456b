package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// world is the fake outside of a Manager: every port records its calls in
// one journal, and failOn makes the n-th call of a name fail.
type world struct {
	t  *testing.T
	mu sync.Mutex

	journal []string
	counts  map[string]int
	failOn  map[string]int // call → which occurrence fails (1 = the first)

	vms     map[string]VM
	images  map[string]Image
	events  []string
	crashes []string

	nextPID   int
	live      map[int]*fakeInst // VMM processes Driver.Attach can adopt
	procs     map[string]Process
	procAlive map[int]bool
	agentGate chan struct{} // when set, Agent.Wait blocks until it is closed
	silent    bool          // Agent.Wait fails for adopted VMMs
	locks     []*os.File
	ids       int
}

func newWorld(t *testing.T) *world {
	return &world{t: t, counts: map[string]int{}, failOn: map[string]int{},
		vms: map[string]VM{}, live: map[int]*fakeInst{}, procs: map[string]Process{}, procAlive: map[int]bool{},
		images:  map[string]Image{"img1": {ID: "img1", Name: "base", Kernel: "/k", Rootfs: "/r", RootfsSizeBytes: 64 << 20}},
		nextPID: 1000}
}

var errInjected = errors.New("injected failure")

// call records name and says whether this occurrence must fail.
func (w *world) call(name string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.journal = append(w.journal, name)
	w.counts[name]++
	if n, ok := w.failOn[name]; ok && n == w.counts[name] {
		return fmt.Errorf("%s: %w", name, errInjected)
	}
	return nil
}

func (w *world) count(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[name]
}

func (w *world) log() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.journal)
}

// manager returns a Manager over w, with overlays and networking.
func (w *world) manager() *Manager {
	return New(Config{VCPUs: 1, MemoryMiB: 256, DiskSizeBytes: 1 << 30, Image: "base",
		BootTimeout: 10 * time.Second, StopTimeout: time.Second, FormatBytes: func(n int64) string { return fmt.Sprint(n) }}, Ports{
		Store: fakeStore{w}, Files: fakeFiles{w}, Overlays: fakeOverlays{w}, Network: fakeNetwork{w},
		Forwards: fakeForwards{w}, Driver: fakeDriver{w}, Specs: fakeSpecs{w}, Agent: fakeAgent{w},
		Guest: fakeGuest{w}, Processes: fakeProcs{w}, Events: fakeEvents{w},
		Now: func() time.Time { return time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC) },
		NewID: func() string {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.ids++
			return fmt.Sprintf("%016x", w.ids)
		},
		CrashPoint: func(step string) {
			w.mu.Lock()
			w.crashes = append(w.crashes, step)
			w.mu.Unlock()
		},
	})
}

func (w *world) vm(id string) VM {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.vms[id]
}

type fakeStore struct{ w *world }

func (s fakeStore) GetVM(_ context.Context, ref string) (VM, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if vm, ok := s.w.vms[ref]; ok {
		return vm, nil
	}
	for _, vm := range s.w.vms {
		if vm.Name == ref {
			return vm, nil
		}
	}
	return VM{}, ErrNotFound
}

func (s fakeStore) ListVMs(context.Context) ([]VM, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	var out []VM
	for _, vm := range s.w.vms {
		out = append(out, vm)
	}
	slices.SortFunc(out, func(a, b VM) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (s fakeStore) InsertVM(_ context.Context, vm VM) error {
	if err := s.w.call("store.insert"); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	for _, o := range s.w.vms {
		if o.Name == vm.Name {
			return ErrExists
		}
	}
	s.w.vms[vm.ID] = vm
	return nil
}

func (s fakeStore) SaveVM(_ context.Context, vm VM) error {
	if err := s.w.call("store.save:" + string(vm.State)); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if _, ok := s.w.vms[vm.ID]; !ok {
		return ErrNotFound
	}
	s.w.vms[vm.ID] = vm
	return nil
}

func (s fakeStore) DeleteVM(_ context.Context, id string) error {
	if err := s.w.call("store.delete"); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if _, ok := s.w.vms[id]; !ok {
		return ErrNotFound
	}
	delete(s.w.vms, id)
	return nil
}

func (s fakeStore) GetImage(_ context.Context, ref string) (Image, error) {
	for _, img := range s.w.images {
		if img.ID == ref || img.Name == ref {
			return img, nil
		}
	}
	return Image{}, ErrNotFound
}

type fakeFiles struct{ w *world }

func (f fakeFiles) CheckFits(int64) error { return f.w.call("files.fits") }
func (f fakeFiles) Prepare(context.Context, VM, Image) error {
	return f.w.call("files.prepare")
}

func (f fakeFiles) LockDisk(string) (*os.File, error) {
	if err := f.w.call("files.lock"); err != nil {
		return nil, err
	}
	lock, err := os.Create(filepath.Join(f.w.t.TempDir(), "disk"))
	if err != nil {
		return nil, err
	}
	f.w.mu.Lock()
	f.w.locks = append(f.w.locks, lock)
	f.w.mu.Unlock()
	return lock, nil
}

func (f fakeFiles) MakeRunDir(string) error        { return f.w.call("files.mkrundir") }
func (f fakeFiles) RemoveRunDir(string)            { _ = f.w.call("files.rmrundir") }
func (f fakeFiles) RemoveAll(string) error         { return f.w.call("files.rmall") }
func (f fakeFiles) CleanLeftovers(map[string]bool) { _ = f.w.call("files.leftovers") }

type fakeOverlays struct{ w *world }

func (o fakeOverlays) Attach(context.Context, VM, Image) (string, error) {
	return "/dev/mapper/x", o.w.call("overlays.attach")
}
func (o fakeOverlays) Detach(context.Context, string)                { _ = o.w.call("overlays.detach") }
func (o fakeOverlays) CleanOrphans(context.Context, map[string]bool) { _ = o.w.call("overlays.clean") }

type fakeNetwork struct{ w *world }

func (n fakeNetwork) Bridge() string { return "br0" }
func (n fakeNetwork) Attach(context.Context, VM) (vmm.NetInterface, []string, error) {
	return vmm.NetInterface{ID: "eth0"}, []string{"banger.ip=x"}, n.w.call("network.attach")
}
func (n fakeNetwork) Detach(context.Context, string) { _ = n.w.call("network.detach") }
func (n fakeNetwork) Forget(string)                  { _ = n.w.call("network.forget") }
func (n fakeNetwork) RemoveStaleTaps(context.Context, map[string]bool) {
	_ = n.w.call("network.staletaps")
}

type fakeForwards struct{ w *world }

func (f fakeForwards) Start(context.Context, VM) { _ = f.w.call("forwards.start") }
func (f fakeForwards) Stop(string)               { _ = f.w.call("forwards.stop") }

type fakeSpecs struct{ w *world }

func (fakeSpecs) LaunchSpec(vm VM, _ Image) vmm.LaunchSpec {
	return vmm.LaunchSpec{VMID: vm.ID, Name: vm.Name, RunDir: "/run/" + vm.ID}
}
func (fakeSpecs) ConsoleExcerpt(string) string { return "" }

type fakeAgent struct{ w *world }

func (a fakeAgent) Wait(ctx context.Context, inst vmm.Instance) (string, error) {
	a.w.mu.Lock()
	gate, silent := a.w.agentGate, a.w.silent
	a.w.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if silent {
		_ = a.w.call("agent.wait")
		return "", errors.New("agent silent")
	}
	return "1.0", a.w.call("agent.wait")
}

type fakeGuest struct{ w *world }

func (g fakeGuest) Setup(context.Context, VM, vmm.Instance, Progress) error {
	return g.w.call("guest.setup")
}
func (g fakeGuest) Forget(VM) { _ = g.w.call("guest.forget") }

type fakeProcs struct{ w *world }

func (p fakeProcs) Scan() map[string]Process {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	out := map[string]Process{}
	for id, proc := range p.w.procs {
		if p.w.procAlive[proc.PID] {
			out[id] = proc
		}
	}
	return out
}

func (p fakeProcs) Alive(pid int) bool {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	return p.w.procAlive[pid]
}

type fakeEvents struct{ w *world }

func (e fakeEvents) Changed(vm VM) {
	e.w.mu.Lock()
	e.w.events = append(e.w.events, vm.Name+" "+string(vm.State))
	e.w.mu.Unlock()
}

func (e fakeEvents) Deleted(vm VM) {
	e.w.mu.Lock()
	e.w.events = append(e.w.events, vm.Name+" deleted")
	e.w.mu.Unlock()
}

type fakeDriver struct{ w *world }

func (fakeDriver) Name() string { return "fake" }

func (d fakeDriver) Launch(_ context.Context, spec vmm.LaunchSpec) (vmm.Instance, error) {
	d.w.mu.Lock()
	d.w.nextPID++
	pid := d.w.nextPID
	d.w.mu.Unlock()
	if err := spec.OnSpawn(vmm.Process{PID: pid, StartTime: 7}); err != nil {
		return nil, err
	}
	if err := d.w.call("driver.launch"); err != nil {
		return nil, err
	}
	return newFakeInst(d.w, pid), nil
}

func (d fakeDriver) Attach(_ context.Context, _ vmm.LaunchSpec, proc vmm.Process) (vmm.Instance, error) {
	_ = d.w.call(fmt.Sprintf("driver.attach:%d", proc.PID))
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if inst, ok := d.w.live[proc.PID]; ok {
		return inst, nil
	}
	return nil, errors.New("not this VM's VMM")
}

// fakeInst is a VMM process: Stop ends it cleanly, Kill by SIGKILL, exit()
// as if it ended on its own.
type fakeInst struct {
	w        *world
	pid      int
	done     chan struct{}
	once     sync.Once
	status   vmm.ExitStatus
	stubborn bool // Stop and Kill leave it running
}

func newFakeInst(w *world, pid int) *fakeInst {
	return &fakeInst{w: w, pid: pid, done: make(chan struct{})}
}

func (i *fakeInst) exit(s vmm.ExitStatus) {
	i.once.Do(func() {
		i.status = s
		i.w.mu.Lock()
		delete(i.w.procAlive, i.pid)
		i.w.mu.Unlock()
		close(i.done)
	})
}

func vmmExit(code int, signal string, notChild bool) vmm.ExitStatus {
	return vmm.ExitStatus{Code: code, Signal: signal, NotChild: notChild}
}

func (i *fakeInst) PID() int { return i.pid }
func (i *fakeInst) Stop(context.Context, time.Duration) error {
	_ = i.w.call("inst.stop")
	if i.stubborn {
		return errors.New("still running")
	}
	i.exit(vmm.ExitStatus{})
	return nil
}

func (i *fakeInst) Kill() error {
	_ = i.w.call("inst.kill")
	if i.stubborn {
		return errors.New("still running")
	}
	i.exit(vmm.ExitStatus{Code: -1, Signal: "killed"})
	return nil
}
func (i *fakeInst) Done() <-chan struct{} { return i.done }
func (i *fakeInst) Exit() vmm.ExitStatus  { return i.status }

// noProgress discards progress.
func noProgress(Report) {}

// eventually polls cond until it holds (a watcher runs in a goroutine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
