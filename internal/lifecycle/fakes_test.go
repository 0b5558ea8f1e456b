package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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

	snaps     map[string]Snapshot
	snapDirs  map[string]bool   // snapshot IDs whose files exist
	disks     map[string]string // VM ID → the snapshot ID its disk was copied from
	restores  []string          // "<vm id> <state file>" per Driver.Restore
	goldenKey string            // what GoldenKeys.Key says ("": no warm starts)
	// firstBoots says, per Overlays.Attach, whether the VM was never
	// started (the daemon's overlay then grows its file system).
	firstBoots []bool
}

func newWorld(t *testing.T) *world {
	return &world{t: t, counts: map[string]int{}, failOn: map[string]int{},
		vms: map[string]VM{}, live: map[int]*fakeInst{}, procs: map[string]Process{}, procAlive: map[int]bool{},
		snaps: map[string]Snapshot{}, snapDirs: map[string]bool{}, disks: map[string]string{},
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
		Snapshots: fakeSnapStore{w}, SnapshotFiles: fakeSnapFiles{w}, Identity: fakeIdentity{w}, Golden: fakeGolden{w},
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

// byRef finds a record by ID (its key in m) or by name, as the store does.
func byRef[T any](m map[string]T, ref string, name func(T) string) (T, error) {
	if v, ok := m[ref]; ok {
		return v, nil
	}
	for _, v := range m {
		if name(v) == ref {
			return v, nil
		}
	}
	var zero T
	return zero, ErrNotFound
}

// insertNamed adds v under id, refusing a taken name as the store does.
func insertNamed[T any](m map[string]T, id string, v T, name func(T) string) error {
	for _, o := range m {
		if name(o) == name(v) {
			return ErrExists
		}
	}
	m[id] = v
	return nil
}

// replace rewrites the record under id, which must exist.
func replace[T any](m map[string]T, id string, v T) error {
	if _, ok := m[id]; !ok {
		return ErrNotFound
	}
	m[id] = v
	return nil
}

func vmName(vm VM) string           { return vm.Name }
func snapName(snap Snapshot) string { return snap.Name }

// sortedByID lists m's records in ID (key) order.
func sortedByID[T any](m map[string]T) []T {
	out := make([]T, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out
}

func (s fakeStore) GetVM(_ context.Context, ref string) (VM, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return byRef(s.w.vms, ref, vmName)
}

func (s fakeStore) ListVMs(context.Context) ([]VM, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return sortedByID(s.w.vms), nil
}

func (s fakeStore) InsertVM(_ context.Context, vm VM) error {
	if err := s.w.call("store.insert"); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return insertNamed(s.w.vms, vm.ID, vm, vmName)
}

func (s fakeStore) SaveVM(_ context.Context, vm VM) error {
	if err := s.w.call("store.save:" + string(vm.State)); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return replace(s.w.vms, vm.ID, vm)
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

func (o fakeOverlays) Attach(_ context.Context, vm VM, _ Image) (string, error) {
	o.w.mu.Lock()
	o.w.firstBoots = append(o.w.firstBoots, vm.StartedAt.IsZero())
	o.w.mu.Unlock()
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

func (d fakeDriver) Restore(_ context.Context, spec vmm.LaunchSpec, files vmm.SnapshotFiles) (vmm.Instance, error) {
	d.w.mu.Lock()
	d.w.nextPID++
	pid := d.w.nextPID
	d.w.mu.Unlock()
	if err := spec.OnSpawn(vmm.Process{PID: pid, StartTime: 7}); err != nil {
		return nil, err
	}
	if err := d.w.call("driver.restore"); err != nil {
		return nil, err
	}
	d.w.mu.Lock()
	d.w.restores = append(d.w.restores, spec.VMID+" "+files.State)
	d.w.mu.Unlock()
	return newFakeInst(d.w, pid), nil
}

// bootOnlyDriver is a driver that can boot VMs and nothing more: it does
// not restore, and its VMMs neither pause nor snapshot.
type bootOnlyDriver struct{ d fakeDriver }

func (bootOnlyDriver) Name() string { return "fake" }
func (b bootOnlyDriver) Launch(ctx context.Context, spec vmm.LaunchSpec) (vmm.Instance, error) {
	inst, err := b.d.Launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	return bootOnlyInst{inst}, nil
}

func (b bootOnlyDriver) Attach(ctx context.Context, spec vmm.LaunchSpec, proc vmm.Process) (vmm.Instance, error) {
	return b.d.Attach(ctx, spec, proc)
}

type bootOnlyInst struct{ vmm.Instance }

// fakeInst is a VMM process: Stop ends it cleanly, Kill by SIGKILL, exit()
// as if it ended on its own. It pauses, resumes and snapshots as the
// drivers do: a snapshot only of a paused VM.
type fakeInst struct {
	w        *world
	pid      int
	done     chan struct{}
	once     sync.Once
	status   vmm.ExitStatus
	stubborn bool // Stop and Kill leave it running
	paused   bool // guarded by w.mu
}

func (i *fakeInst) Pause(context.Context) error {
	if err := i.w.call("inst.pause"); err != nil {
		return err
	}
	i.w.mu.Lock()
	defer i.w.mu.Unlock()
	i.paused = true
	return nil
}

// Resume of a running VMM is harmless, as reconcile needs of drivers.
func (i *fakeInst) Resume(context.Context) error {
	if err := i.w.call("inst.resume"); err != nil {
		return err
	}
	i.w.mu.Lock()
	defer i.w.mu.Unlock()
	i.paused = false
	return nil
}

func (i *fakeInst) isPaused() bool {
	i.w.mu.Lock()
	defer i.w.mu.Unlock()
	return i.paused
}

func (i *fakeInst) CreateSnapshot(_ context.Context, files vmm.SnapshotFiles) error {
	if err := i.w.call("inst.snapshot"); err != nil {
		return err
	}
	if !i.isPaused() {
		return errors.New("the VM must be paused to be snapshotted")
	}
	if files.State == "" {
		return errors.New("no state file")
	}
	return nil
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

type fakeSnapStore struct{ w *world }

func (s fakeSnapStore) InsertSnapshot(_ context.Context, snap Snapshot) error {
	if err := s.w.call("snapstore.insert"); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return insertNamed(s.w.snaps, snap.ID, snap, snapName)
}

func (s fakeSnapStore) SaveSnapshot(_ context.Context, snap Snapshot) error {
	if err := s.w.call("snapstore.save:" + string(snap.State)); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return replace(s.w.snaps, snap.ID, snap)
}

func (s fakeSnapStore) GetSnapshot(_ context.Context, ref string) (Snapshot, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return byRef(s.w.snaps, ref, snapName)
}

func (s fakeSnapStore) ListSnapshots(context.Context) ([]Snapshot, error) {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	return sortedByID(s.w.snaps), nil
}

func (s fakeSnapStore) DeleteSnapshot(_ context.Context, id string) error {
	if err := s.w.call("snapstore.delete"); err != nil {
		return err
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if _, ok := s.w.snaps[id]; !ok {
		return ErrNotFound
	}
	delete(s.w.snaps, id)
	return nil
}

// fakeSnapFiles keeps which snapshots have files (snapDirs) and which VM
// disks were copied from which snapshot (disks).
type fakeSnapFiles struct{ w *world }

func (fakeSnapFiles) Paths(id string) vmm.SnapshotFiles {
	return vmm.SnapshotFiles{State: "/snap/" + id + "/state", Memory: "/snap/" + id + "/memory"}
}

func (f fakeSnapFiles) CheckFits(string, int64) error { return f.w.call("snapfiles.fits") }

func (f fakeSnapFiles) Make(id string) error {
	if err := f.w.call("snapfiles.make"); err != nil {
		return err
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	f.w.snapDirs[id] = true
	return nil
}

func (f fakeSnapFiles) SaveDisk(_ context.Context, vmID, id string) error {
	if err := f.w.call("snapfiles.savedisk"); err != nil {
		return err
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if !f.w.snapDirs[id] {
		return errors.New("no snapshot dir")
	}
	return nil
}

func (f fakeSnapFiles) RestoreDisk(_ context.Context, id, vmID string) error {
	if err := f.w.call("snapfiles.restoredisk"); err != nil {
		return err
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if !f.w.snapDirs[id] {
		return errors.New("no snapshot files")
	}
	f.w.disks[vmID] = id
	return nil
}

func (f fakeSnapFiles) Verify(s Snapshot) error {
	if err := f.w.call("snapfiles.verify"); err != nil {
		return err
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if !f.w.snapDirs[s.ID] {
		return errors.New("its files are missing")
	}
	return nil
}

func (fakeSnapFiles) Size(string) int64 { return 4096 }

func (f fakeSnapFiles) Remove(id string) error {
	if err := f.w.call("snapfiles.remove"); err != nil {
		return err
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	delete(f.w.snapDirs, id)
	return nil
}

func (f fakeSnapFiles) CleanLeftovers(known map[string]bool) {
	_ = f.w.call("snapfiles.leftovers")
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	for id := range f.w.snapDirs {
		if !known[id] {
			delete(f.w.snapDirs, id)
		}
	}
}

type fakeIdentity struct{ w *world }

func (i fakeIdentity) Reidentify(context.Context, VM, vmm.Instance, Progress) error {
	return i.w.call("identity.reidentify")
}

type fakeGolden struct{ w *world }

func (g fakeGolden) Key(VM, Image) string {
	g.w.mu.Lock()
	defer g.w.mu.Unlock()
	return g.w.goldenKey
}

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
