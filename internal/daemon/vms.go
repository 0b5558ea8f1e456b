package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/network/portforward"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// vmNamePattern is the one rule for VM names: it must be a DNS label, since
// every VM gets <name>.<domain>.
var (
	vmNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	vmIDPattern   = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// agentPort is the vsock port the guest agent listens on.
const agentPort = 1024

// vmManager runs VM lifecycles. Operations on one VM are serialized by that
// VM's lock; operations on different VMs run concurrently.
type vmManager struct {
	d      *Daemon
	driver vmm.Driver
	log    *slog.Logger

	mu        sync.Mutex
	locks     map[string]*sync.Mutex  // VM ID → operation lock
	instances map[string]vmm.Instance // VM ID → running VMM
	watching  map[vmm.Instance]bool
	orphans   []api.OrphanVMM
	forwards  map[string][]*portforward.Forwarder // VM ID → live forwards
}

func newVMManager(d *Daemon, driver vmm.Driver) *vmManager {
	return &vmManager{
		d: d, driver: driver, log: d.log,
		locks:     map[string]*sync.Mutex{},
		instances: map[string]vmm.Instance{},
		watching:  map[vmm.Instance]bool{},
		forwards:  map[string][]*portforward.Forwarder{},
	}
}

// lock takes the operation lock of VM id and returns its release.
func (m *vmManager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *vmManager) instance(id string) vmm.Instance {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.instances[id]
}

func (m *vmManager) setInstance(id string, inst vmm.Instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst == nil {
		delete(m.instances, id)
		return
	}
	m.instances[id] = inst
}

// get loads a VM by name or ID, turning "not found" into a user-facing error.
func (m *vmManager) get(ctx context.Context, name string) (store.VM, error) {
	if name == "" {
		return store.VM{}, api.Errorf(api.CodeInvalidArgument, "no VM name given")
	}
	vm, err := m.d.store.GetVM(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return vm, api.Errorf(api.CodeNotFound, "no VM named %q", name).WithHint("`banger vm list` shows your VMs")
	}
	return vm, err
}

func (m *vmManager) driverOrErr() (vmm.Driver, error) {
	if m.driver == nil {
		return nil, api.Errorf(api.CodeUnavailable, "no VMM is available on this host").
			WithHint("install firecracker (or qemu-system-x86), or set `vmm` and `firecracker.binary` in the config; `banger doctor` says what is missing")
	}
	return m.driver, nil
}

// Create validates the request, records the VM, gives it a disk and (unless
// NoStart) boots it. Anything that fails before the boot is undone entirely;
// a boot that fails leaves the VM recorded as failed with the reason, and no
// process or socket behind.
func (m *vmManager) Create(ctx context.Context, req api.VMCreateRequest, p api.Progress) (api.VM, error) {
	cfg := m.d.opts.Config
	if !vmNamePattern.MatchString(req.Name) {
		return api.VM{}, api.Errorf(api.CodeInvalidArgument, "invalid VM name %q: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit", req.Name)
	}
	if vmIDPattern.MatchString(req.Name) {
		// Lookups accept a name or an ID; a name shaped like an ID would be ambiguous.
		return api.VM{}, api.Errorf(api.CodeInvalidArgument, "invalid VM name %q: 16 hex digits look like a VM ID; pick another name", req.Name)
	}
	spec := store.VM{
		ID: store.NewID(), Name: req.Name, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB,
		DiskSizeBytes: req.DiskSizeBytes, Autostart: req.Autostart, State: store.VMCreating,
	}
	if spec.VCPUs == 0 {
		spec.VCPUs = cfg.VM.VCPUs
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = cfg.VM.MemoryMiB
	}
	if spec.DiskSizeBytes == 0 {
		spec.DiskSizeBytes = int64(cfg.VM.DiskSize)
	}
	if err := validateSizes(spec); err != nil {
		return api.VM{}, err
	}
	if err := m.checkDiskFits(spec.DiskSizeBytes); err != nil {
		return api.VM{}, err
	}
	if len(req.Publish) > 0 || req.Isolated {
		if m.d.net == nil {
			return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "--publish and --isolated need VM networking, which is off on this daemon").
				WithHint("see network.enabled in `banger config defaults`")
		}
		fwd, err := parseForwards(req.Publish)
		if err != nil {
			return api.VM{}, err
		}
		spec.Network = netSettings{Forwards: fwd, Isolated: req.Isolated}.json()
	}
	imageName := req.Image
	if imageName == "" {
		imageName = cfg.VM.Image
	}
	img, err := m.d.store.GetImage(ctx, imageName)
	if errors.Is(err, store.ErrNotFound) {
		return api.VM{}, api.Errorf(api.CodeNotFound, "no image named %q", imageName).
			WithHint("`banger image list` shows images; add one with `banger image import`")
	}
	if err != nil {
		return api.VM{}, err
	}
	if spec.DiskSizeBytes < img.RootfsSizeBytes {
		return api.VM{}, api.Errorf(api.CodeInvalidArgument, "disk size %d bytes is smaller than image %q (%d bytes)", spec.DiskSizeBytes, img.Name, img.RootfsSizeBytes)
	}
	driver, err := m.driverOrErr()
	if err != nil && !req.NoStart {
		return api.VM{}, err
	}
	spec.ImageID, spec.ImageName = img.ID, img.Name
	if driver != nil {
		spec.VMM = driver.Name()
	}

	unlock := m.lock(spec.ID)
	defer unlock()
	if err := m.d.store.CreateVM(ctx, spec); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return api.VM{}, api.Errorf(api.CodeAlreadyExists, "a VM named %q already exists", req.Name).
				WithHint("pick another name, or remove it with `banger vm delete " + req.Name + "`")
		}
		return api.VM{}, fmt.Errorf("record vm %q: %w", req.Name, err)
	}
	m.d.events.publish(api.Event{Time: m.d.now(), Kind: "vm.state", VM: spec.Name, State: api.VMCreating, Stage: "creating", Message: "vm " + spec.Name + " is creating"})
	m.crashPoint(CrashCreateRecorded)
	p(api.Event{VM: spec.Name, Stage: "disk", Message: fmt.Sprintf("cloning image %s into a %s disk", img.Name, humanBytes(spec.DiskSizeBytes))})
	if err := m.prepareDisk(ctx, spec, img); err != nil {
		m.undoCreate(spec)
		return api.VM{}, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	m.crashPoint(CrashCreateDiskReady)
	vm, err := m.d.store.GetVM(ctx, spec.ID)
	if err != nil {
		m.undoCreate(spec)
		return api.VM{}, err
	}
	if req.NoStart {
		upd := vm.Observed()
		upd.State = store.VMStopped
		if err := m.update(ctx, vm, upd); err != nil {
			m.undoCreate(spec)
			return api.VM{}, err
		}
		return m.view(ctx, vm.ID)
	}
	if err := m.boot(ctx, vm, img, p); err != nil {
		return api.VM{}, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	return m.view(ctx, vm.ID)
}

func validateSizes(vm store.VM) error {
	switch {
	case vm.VCPUs < 1 || vm.VCPUs > 32:
		return api.Errorf(api.CodeInvalidArgument, "invalid vcpus %d: use 1 to 32", vm.VCPUs)
	case vm.MemoryMiB < 128 || vm.MemoryMiB > 256*1024:
		return api.Errorf(api.CodeInvalidArgument, "invalid memory %d MiB: use 128 to 262144", vm.MemoryMiB)
	case vm.DiskSizeBytes < 64<<20:
		return api.Errorf(api.CodeInvalidArgument, "invalid disk size %d bytes: use at least 64M", vm.DiskSizeBytes)
	case vm.DiskSizeBytes > 16<<40:
		return api.Errorf(api.CodeInvalidArgument, "invalid disk size %d bytes: use at most 16T", vm.DiskSizeBytes)
	}
	return nil
}

// undoCreate removes everything a create made before the boot. It runs with
// a fresh context: a client that hung up must not stop the cleanup.
func (m *vmManager) undoCreate(vm store.VM) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = os.RemoveAll(m.d.opts.Layout.VMRunDir(vm.ID))
	_ = os.RemoveAll(m.d.opts.Layout.VMStateDir(vm.ID))
	if err := m.deleteRow(ctx, vm); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Error("undo create: delete row", "vm", vm.Name, "err", err)
	}
}

// boot launches the VMM for vm and waits for the guest agent. The caller
// holds vm's lock. On failure the VMM is gone and the VM is recorded failed.
func (m *vmManager) boot(ctx context.Context, vm store.VM, img store.Image, p api.Progress) error {
	driver, err := m.driverOrErr()
	if err != nil {
		return err
	}
	spec := m.launchSpec(vm, img)
	upd := vm.Observed()
	upd.State, upd.VMM, upd.RunDir, upd.LastError, upd.ExitStatus = store.VMStarting, driver.Name(), spec.RunDir, "", ""
	clearProcess(&upd)
	if err := m.update(ctx, vm, upd); err != nil {
		return err
	}
	m.crashPoint(CrashBootStarting)
	// The boot continues even if the client hangs up: a half-started VM is
	// worse than a started one nobody watched.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.d.opts.Config.VM.BootTimeout.Std())
	defer cancel()

	p(api.Event{VM: vm.Name, Stage: "boot", Message: "starting " + driver.Name()})
	// First, before anything else is attached: a disk another VMM still
	// has open must not get a second one.
	diskLock, err := lockDisk(m.lockedDiskPath(vm.ID))
	if err != nil {
		return m.bootRefused(vm, err)
	}
	// The VMM inherits the lock; our copy goes once the launch is over.
	defer diskLock.Close()
	spec.HeldFiles = []*os.File{diskLock}
	m.crashPoint(CrashBootDiskLocked)
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		return m.bootFailed(vm, fmt.Errorf("create run dir: %w", err), nil)
	}
	if o := m.d.overlays; o != nil {
		dev, err := o.attach(bctx, vm, img, m.d.opts.Layout.VMStateDir(vm.ID), vm.StartedAt.IsZero())
		if err != nil {
			return m.bootFailed(vm, err, nil)
		}
		spec.RootDrive.Path = dev
		m.crashPoint(CrashBootDiskAttached)
	}
	if net := m.d.net; net != nil {
		p(api.Event{VM: vm.Name, Stage: "network", Message: "attaching to " + net.bridge.Name})
		iface, args, err := net.attach(bctx, vm, settingsOf(vm).Isolated)
		if err != nil {
			return m.bootFailed(vm, err, nil)
		}
		spec.Network = []vmm.NetInterface{iface}
		spec.BootArgs += " " + strings.Join(args, " ")
		m.crashPoint(CrashBootNetworkAttached)
	}
	// The process is recorded before the driver configures it, so a daemon
	// that dies from here on leaves a VMM the next one can find and stop.
	spec.OnSpawn = func(proc vmm.Process) error {
		m.crashPoint(CrashBootSpawned)
		upd.PID, upd.PIDStart = proc.PID, proc.StartTime
		if err := m.update(bctx, vm, upd); err != nil {
			return err
		}
		m.crashPoint(CrashBootPIDRecorded)
		return nil
	}
	inst, err := driver.Launch(bctx, spec)
	if err != nil {
		return m.bootFailed(vm, err, nil)
	}
	upd.APISocket = apiSocketOf(inst)
	if err := m.update(bctx, vm, upd); err != nil {
		return m.bootFailed(vm, err, inst)
	}
	m.crashPoint(CrashBootLaunched)
	p(api.Event{VM: vm.Name, Stage: "agent", Message: fmt.Sprintf("waiting for the guest agent (pid %d)", inst.PID())})
	info, err := waitForAgent(bctx, inst)
	if err != nil {
		return m.bootFailed(vm, err, inst)
	}
	// Its time splits a boot into the VMM and guest's part and banger's.
	p(api.Event{VM: vm.Name, Stage: "agent-ready", Message: "guest agent " + info.AgentVersion + " is up; setting up the guest"})
	m.crashPoint(CrashBootAgentReady)
	if err := m.afterAgentReady(bctx, vm, inst, p); err != nil {
		return m.bootFailed(vm, err, inst)
	}
	upd.State, upd.StartedAt = store.VMRunning, m.d.now()
	if err := m.update(bctx, vm, upd); err != nil {
		return m.bootFailed(vm, err, inst)
	}
	m.crashPoint(CrashBootRunning)
	m.setInstance(vm.ID, inst)
	m.watch(vm.ID, vm.Name, inst)
	m.startForwards(bctx, vm)
	m.log.Info("vm running", "vm", vm.Name, "pid", inst.PID(), "agent", info.AgentVersion)
	p(api.Event{VM: vm.Name, Stage: "ready", Message: "guest agent answered"})
	return nil
}

// waitForAgent polls the guest agent until it answers, the VMM exits, or ctx
// ends.
func waitForAgent(ctx context.Context, inst vmm.Instance) (agent.HealthInfo, error) {
	dialer, ok := inst.(vmm.AgentDialer)
	if !ok {
		return agent.HealthInfo{}, errors.New("this VMM driver cannot reach a guest agent")
	}
	// Same polling shape as the driver's API wait: tight first, then back off.
	delay, start := 2*time.Millisecond, time.Now()
	var lastErr error
	for {
		select {
		case <-inst.Done():
			return agent.HealthInfo{}, fmt.Errorf("the VMM exited during boot (%s)", inst.Exit())
		default:
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := dialer.DialAgent(actx)
		if err == nil {
			var info agent.HealthInfo
			info, err = agent.Health(actx, conn)
			conn.Close()
			if err == nil {
				cancel()
				return info, nil
			}
		}
		cancel()
		lastErr = err
		select {
		case <-ctx.Done():
			return agent.HealthInfo{}, fmt.Errorf("the guest agent did not answer in time (last error: %v)", lastErr)
		case <-inst.Done():
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 100*time.Millisecond)
		}
	}
}

// bootFailed kills the VMM if there is one, records the VM as failed with the
// reason and the tail of its serial console, and returns the error to show.
func (m *vmManager) bootFailed(vm store.VM, cause error, inst vmm.Instance) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exit := ""
	if inst != nil {
		if err := inst.Kill(); err != nil {
			m.log.Error("kill vmm after failed boot", "vm", vm.Name, "err", err)
		}
		exit = inst.Exit().String()
	}
	m.releaseRuntime(ctx, vm.ID)
	msg := cause.Error()
	// Add the console tail unless the driver's error already quotes it.
	if tail := bootConsoleExcerpt(m.serialLogPath(vm.ID)); tail != "" && !strings.Contains(msg, lastLine(tail)) {
		msg += "; serial console ends with:\n" + tail
	}
	cur, err := m.d.store.GetVM(ctx, vm.ID)
	if err == nil {
		upd := cur.Observed()
		upd.State, upd.LastError, upd.ExitStatus, upd.StoppedAt = store.VMFailed, cause.Error(), exit, m.d.now()
		clearProcess(&upd)
		if err := m.update(ctx, vm, upd); err != nil {
			m.log.Error("record failed boot", "vm", vm.Name, "err", err)
		}
	}
	m.log.Warn("vm boot failed", "vm", vm.Name, "err", cause)
	return api.Errorf(api.CodeFailedPrecondition, "vm %q failed to boot: %s", vm.Name, msg).
		WithHint(fmt.Sprintf("`banger vm logs %s` shows the console; `banger vm start %s` retries, `banger vm delete %s` removes it", vm.Name, vm.Name, vm.Name))
}

// watch records the VM as stopped or failed when its VMM exits on its own
// (the guest powered off, or the process was killed behind our back).
func (m *vmManager) watch(id, name string, inst vmm.Instance) {
	m.mu.Lock()
	if m.watching[inst] {
		m.mu.Unlock()
		return
	}
	m.watching[inst] = true
	m.mu.Unlock()
	go func() {
		<-inst.Done()
		unlock := m.lock(id)
		defer unlock()
		m.mu.Lock()
		delete(m.watching, inst)
		current := m.instances[id]
		m.mu.Unlock()
		if current != inst {
			return // an operation (stop, delete) already handled this exit
		}
		m.setInstance(id, nil)
		exit := inst.Exit()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		vm, err := m.d.store.GetVM(ctx, id)
		if err != nil {
			return
		}
		upd := vm.Observed()
		clearProcess(&upd)
		upd.StoppedAt, upd.ExitStatus = m.d.now(), exit.String()
		switch {
		case exit.Clean():
			upd.State = store.VMStopped
		case exit.NotChild:
			// A guest that powered off and a SIGKILL look the same from here.
			upd.State = store.VMFailed
			upd.LastError = "the VMM exited and how it ended is unknown: it is not the daemon's child (it was adopted after a daemon restart, or started by the jailer), so its exit status cannot be read; `banger vm logs " + name + "` shows how the guest ended"
		default:
			upd.State = store.VMFailed
			upd.LastError = "the VMM exited unexpectedly: " + exit.String()
		}
		m.releaseRuntime(ctx, id)
		if err := m.update(ctx, vm, upd); err != nil {
			m.log.Error("record vmm exit", "vm", name, "err", err)
		}
		m.log.Warn("vmm exited", "vm", name, "exit", exit.String(), "state", upd.State)
	}()
}

// Start boots a stopped or failed VM.
func (m *vmManager) Start(ctx context.Context, name string, p api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if vm, err = m.d.store.GetVM(ctx, vm.ID); err != nil {
		return api.VM{}, err
	}
	switch vm.State {
	case store.VMRunning:
		return m.view(ctx, vm.ID)
	case store.VMStopped, store.VMFailed:
	default:
		return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "vm %q is %s; wait for it to settle", vm.Name, vm.State)
	}
	img, err := m.d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return api.VM{}, fmt.Errorf("vm %q: image %q: %w", vm.Name, vm.ImageName, err)
	}
	if err := m.boot(ctx, vm, img, p); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, vm.ID)
}

// Stop shuts a VM down: the guest is asked first unless force, and the VM is
// recorded stopped only once its VMM process is gone.
func (m *vmManager) Stop(ctx context.Context, req api.VMStopRequest, p api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if err := m.stopLocked(ctx, vm.ID, req.Force, time.Duration(req.TimeoutSeconds)*time.Second, p); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, vm.ID)
}

func (m *vmManager) stopLocked(ctx context.Context, id string, force bool, timeout time.Duration, p api.Progress) error {
	vm, err := m.d.store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	inst := m.instance(id)
	if inst == nil {
		if vm.State == store.VMRunning || vm.State == store.VMStarting || vm.State == store.VMStopping {
			// Recorded as running but not ours: reconcile missed it; record the truth.
			upd := vm.Observed()
			upd.State, upd.StoppedAt = store.VMStopped, m.d.now()
			clearProcess(&upd)
			return m.update(ctx, vm, upd)
		}
		return nil
	}
	if timeout <= 0 {
		timeout = m.d.opts.Config.VM.StopTimeout.Std()
	}
	upd := vm.Observed()
	upd.State = store.VMStopping
	if err := m.update(ctx, vm, upd); err != nil {
		return err
	}
	m.crashPoint(CrashStopStopping)
	sctx := context.WithoutCancel(ctx)
	if force {
		p(api.Event{VM: vm.Name, Stage: "stop", Message: "killing the VMM"})
		err = inst.Kill()
	} else {
		p(api.Event{VM: vm.Name, Stage: "stop", Message: fmt.Sprintf("asking the guest to shut down (up to %s)", timeout)})
		err = inst.Stop(sctx, timeout)
	}
	select {
	case <-inst.Done():
	default:
		// The process is still there: report it, keep the VM recorded as it is.
		upd.State = store.VMRunning
		_ = m.update(sctx, vm, upd)
		return fmt.Errorf("stop vm %q: the VMM (pid %d) is still running: %v", vm.Name, inst.PID(), err)
	}
	m.crashPoint(CrashStopVMMGone)
	m.setInstance(id, nil)
	m.releaseRuntime(sctx, id)
	m.crashPoint(CrashStopReleased)
	upd.State, upd.StoppedAt, upd.ExitStatus = store.VMStopped, m.d.now(), inst.Exit().String()
	clearProcess(&upd)
	return m.update(sctx, vm, upd)
}

// Restart stops (if running) and boots the VM again.
func (m *vmManager) Restart(ctx context.Context, name string, p api.Progress) (api.VM, error) {
	vm, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if err := m.stopLocked(ctx, vm.ID, false, 0, p); err != nil {
		return api.VM{}, err
	}
	if vm, err = m.d.store.GetVM(ctx, vm.ID); err != nil {
		return api.VM{}, err
	}
	img, err := m.d.store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return api.VM{}, fmt.Errorf("vm %q: image %q: %w", vm.Name, vm.ImageName, err)
	}
	if err := m.boot(ctx, vm, img, p); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, vm.ID)
}

// Delete stops the VM if needed and removes it, its disk and its files.
func (m *vmManager) Delete(ctx context.Context, name string, p api.Progress) error {
	vm, err := m.get(ctx, name)
	if err != nil {
		return err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	ctx = context.WithoutCancel(ctx)
	if inst := m.instance(vm.ID); inst != nil {
		p(api.Event{VM: vm.Name, Stage: "stop", Message: "stopping the VM"})
		if err := m.stopLocked(ctx, vm.ID, false, 0, p); err != nil {
			return err
		}
	}
	if vm, err = m.d.store.GetVM(ctx, vm.ID); err != nil {
		return err
	}
	upd := vm.Observed()
	upd.State = store.VMDeleting
	if err := m.update(ctx, vm, upd); err != nil {
		return err
	}
	m.crashPoint(CrashDeleteDeleting)
	p(api.Event{VM: vm.Name, Stage: "delete", Message: "removing disk and files"})
	if err := m.removeFiles(vm.ID); err != nil {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	m.crashPoint(CrashDeleteFilesRemoved)
	if err := m.deleteRow(ctx, vm); err != nil {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	if m.d.net != nil {
		m.d.net.forget(vm.Name)
	}
	// The VM's pinned host keys go with it (a recreate would replace them anyway).
	_ = ssh.KnownHosts{Path: ssh.KnownHostsPath(m.d.opts.Layout.OwnerDir())}.Forget(vm.ID)
	m.mu.Lock()
	delete(m.locks, vm.ID)
	m.mu.Unlock()
	m.log.Info("vm deleted", "vm", vm.Name)
	return nil
}

func (m *vmManager) removeFiles(id string) error {
	if err := os.RemoveAll(m.d.opts.Layout.VMRunDir(id)); err != nil {
		return err
	}
	// A jailed VM's chroot (<state>/jail/<vmm binary>/<id>) holds links to its disk.
	jails, _ := filepath.Glob(filepath.Join(m.d.opts.Layout.StateDir, "jail", "*", id))
	for _, j := range jails {
		if err := os.RemoveAll(j); err != nil {
			return err
		}
	}
	return os.RemoveAll(m.d.opts.Layout.VMStateDir(id))
}

// List returns every VM.
func (m *vmManager) List(ctx context.Context) ([]api.VM, error) {
	vms, err := m.d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := m.d.store.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	byVM := map[string]*store.Lease{}
	for i := range leases {
		byVM[leases[i].VMID] = &leases[i]
	}
	out := make([]api.VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, m.toAPI(vm, byVM[vm.ID]))
	}
	return out, nil
}

// view loads a VM with its lease for display.
func (m *vmManager) view(ctx context.Context, id string) (api.VM, error) {
	vm, err := m.d.store.GetVM(ctx, id)
	if err != nil {
		return api.VM{}, err
	}
	var lease *store.Lease
	if l, err := m.d.store.GetLease(ctx, id); err == nil {
		lease = &l
	}
	return m.toAPI(vm, lease), nil
}

func (m *vmManager) toAPI(vm store.VM, lease *store.Lease) api.VM {
	out := api.VM{
		ID: vm.ID, Name: vm.Name, State: api.VMState(vm.State), Image: vm.ImageName,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskSizeBytes: vm.DiskSizeBytes, Autostart: vm.Autostart,
		VMM: vm.VMM, PID: vm.PID, CreatedAt: vm.CreatedAt, LastError: vm.LastError, ExitStatus: vm.ExitStatus,
		SerialLog: m.serialLogPath(vm.ID),
		DNSName:   vm.Name + "." + m.d.opts.Config.Network.Domain,
		Forwards:  forwardsOf(vm),
		Isolated:  settingsOf(vm).Isolated,
	}
	if lease != nil {
		out.IP, out.MAC = lease.IP.String(), lease.MAC
	}
	if !vm.StartedAt.IsZero() {
		t := vm.StartedAt
		out.StartedAt = &t
	}
	if !vm.StoppedAt.IsZero() {
		t := vm.StoppedAt
		out.StoppedAt = &t
	}
	return out
}

// Logs returns the tail of the VM's serial console.
func (m *vmManager) Logs(ctx context.Context, req api.VMLogsRequest, _ api.Progress) (api.VMLogs, error) {
	vm, err := m.get(ctx, req.Name)
	if err != nil {
		return api.VMLogs{}, err
	}
	lines := req.Lines
	if lines <= 0 {
		lines = 200
	}
	path := m.serialLogPath(vm.ID)
	return api.VMLogs{Path: path, Text: tailFile(path, lines)}, nil
}

func (m *vmManager) serialLogPath(id string) string {
	return m.d.opts.Layout.VMStateDir(id) + "/serial.log"
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dM", n>>20)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

// tailFile returns up to n trailing lines of path ("" if unreadable).
func tailFile(path string, n int) string {
	// The window stays inside the half of the cap a console trim keeps.
	const window = 256 << 10
	b, err := vmmproc.ReadTail(path, window)
	if err != nil {
		return ""
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return ""
	}
	all := strings.Split(s, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n") + "\n"
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// releaseRuntime frees what a VM holds only while it runs: its tap and its
// run dir (sockets). Its disk, lease and name stay.
func (m *vmManager) releaseRuntime(ctx context.Context, id string) {
	m.stopForwards(id)
	if m.d.overlays != nil {
		if err := m.d.overlays.detach(ctx, id); err != nil {
			m.log.Warn("release vm disk", "vm_id", id, "err", err)
		}
	}
	if m.d.net != nil {
		m.d.net.detach(ctx, id)
	}
	_ = os.RemoveAll(m.d.opts.Layout.VMRunDir(id))
}
