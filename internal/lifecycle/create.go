package lifecycle

import (
	"context"
	"errors"
	"fmt"
)

// CreateRequest is what a user asks for; zero fields take the defaults.
type CreateRequest struct {
	Name          string
	Image         string
	VCPUs         int
	MemoryMiB     int
	DiskSizeBytes int64
	Autostart     bool
	// NoStart records the VM stopped instead of booting it.
	NoStart bool
	// Network is the VM's network settings (see VM.Network).
	Network []byte
	// Cold boots the VM even when a golden snapshot could start it warm.
	Cold bool
	// Labels are the VM's key=value tags (see ValidateLabels).
	Labels map[string]string
}

// Create validates the request, records the VM, gives it a disk and (unless
// NoStart) boots it. Anything that fails before the boot is undone entirely;
// a boot that fails leaves the VM recorded as failed with the reason, and no
// process or socket behind.
//
// Unless Cold, a VM whose image and shape have a golden snapshot starts
// warm from it (restored, then given its own identity), and falls back to
// a boot if that fails; one that boots makes the golden snapshot for the
// next ones (see goldenPlan).
func (m *Manager) Create(ctx context.Context, req CreateRequest, p Progress) (VM, error) {
	vm, img, err := m.newVM(ctx, req)
	if err != nil {
		return VM{}, err
	}
	var plan *goldenPlan
	if !req.Cold && !req.NoStart {
		plan = m.goldenPlan(ctx, vm, img)
	}
	return m.create(ctx, vm, img, req.NoStart, plan, p)
}

// create records vm (checked by newVM), gives it a disk and boots it, warm
// when plan has a golden snapshot, else cold (making the golden snapshot
// when plan asks for one).
func (m *Manager) create(ctx context.Context, vm VM, img Image, noStart bool, plan *goldenPlan, p Progress) (VM, error) {
	unlock := m.Lock(vm.ID)
	defer unlock()
	if err := m.insertVM(ctx, vm); err != nil {
		return VM{}, err
	}
	m.crash(CrashCreateRecorded)
	if plan != nil && plan.from != nil {
		err := m.createWarm(ctx, &vm, img, *plan.from, p)
		if err == nil {
			return vm, nil
		}
		if plan, err = m.beforeColdBoot(ctx, &vm, plan, err, p); err != nil {
			m.undoCreate(vm)
			return VM{}, fmt.Errorf("create vm %q: %w", vm.Name, err)
		}
	}
	p(Report{VM: vm.Name, Stage: "disk", Message: fmt.Sprintf("cloning image %s into a %s disk", img.Name, m.cfg.FormatBytes(vm.DiskSizeBytes))})
	if err := m.ports.Files.Prepare(ctx, vm, img); err != nil {
		m.undoCreate(vm)
		return VM{}, fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	m.crash(CrashCreateDiskReady)
	if noStart {
		if err := m.record(ctx, &vm, Stopped); err != nil {
			m.undoCreate(vm)
			return VM{}, err
		}
		return vm, nil
	}
	if err := m.bootIn(ctx, &vm, img, bootMode{golden: plan}, p); err != nil {
		return VM{}, fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	return vm, nil
}

// insertVM records the new VM vm and tells watchers.
func (m *Manager) insertVM(ctx context.Context, vm VM) error {
	if err := m.ports.Store.InsertVM(ctx, vm); err != nil {
		if errors.Is(err, ErrExists) {
			return Errorf(Exists, "a VM named %q already exists", vm.Name).
				WithHint("pick another name, or remove it with `banger vm delete " + vm.Name + "`")
		}
		return fmt.Errorf("record vm %q: %w", vm.Name, err)
	}
	m.ports.Events.Changed(vm)
	return nil
}

// newVM checks a create request and builds the VM it asks for, not yet
// recorded, with its image.
func (m *Manager) newVM(ctx context.Context, req CreateRequest) (VM, Image, error) {
	if err := ValidateName(req.Name); err != nil {
		return VM{}, Image{}, err
	}
	if err := ValidateLabels(req.Labels); err != nil {
		return VM{}, Image{}, err
	}
	vm := VM{
		ID: m.ports.NewID(), Name: req.Name, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB,
		DiskSizeBytes: req.DiskSizeBytes, Autostart: req.Autostart, Network: req.Network, Labels: req.Labels,
		State: Creating, CreatedAt: m.ports.Now().UTC(),
	}
	if vm.VCPUs == 0 {
		vm.VCPUs = m.cfg.VCPUs
	}
	if vm.MemoryMiB == 0 {
		vm.MemoryMiB = m.cfg.MemoryMiB
	}
	defaultDisk := vm.DiskSizeBytes == 0
	if defaultDisk {
		vm.DiskSizeBytes = m.cfg.DiskSizeBytes
	}
	if err := validateSizes(vm); err != nil {
		return VM{}, Image{}, err
	}
	imageName := req.Image
	if imageName == "" {
		imageName = m.cfg.Image
	}
	img, err := m.ports.Store.GetImage(ctx, imageName)
	if errors.Is(err, ErrNotFound) {
		return VM{}, Image{}, Errorf(NotFound, "no image named %q", imageName).
			WithHint("`banger image list` shows images; add one with `banger image import`")
	}
	if err != nil {
		return VM{}, Image{}, err
	}
	if vm.DiskSizeBytes < img.RootfsSizeBytes {
		if !defaultDisk {
			size := m.cfg.FormatBytes(img.RootfsSizeBytes)
			return VM{}, Image{}, Errorf(Invalid, "disk size %s is smaller than image %q (%s)", m.cfg.FormatBytes(vm.DiskSizeBytes), img.Name, size).
				WithHint("give a disk of at least " + size + " (`--disk " + size + "`), or leave --disk out to get the image's size")
		}
		// The default is a floor, not a ceiling: an image bigger than it
		// (a pulled container image, say) gets a disk of its own size.
		vm.DiskSizeBytes = img.RootfsSizeBytes
	}
	if err := m.ports.Files.CheckFits(vm.DiskSizeBytes); err != nil {
		return VM{}, Image{}, err
	}
	driver, err := m.driver()
	if err != nil && !req.NoStart {
		return VM{}, Image{}, err
	}
	vm.ImageID, vm.ImageName = img.ID, img.Name
	if driver != nil {
		vm.VMM = driver.Name()
	}
	return vm, img, nil
}

func validateSizes(vm VM) error {
	switch {
	case vm.VCPUs < 1 || vm.VCPUs > 32:
		return Errorf(Invalid, "invalid vcpus %d: use 1 to 32", vm.VCPUs)
	case vm.MemoryMiB < 128 || vm.MemoryMiB > 256*1024:
		return Errorf(Invalid, "invalid memory %d MiB: use 128 to 262144", vm.MemoryMiB)
	case vm.DiskSizeBytes < 64<<20:
		return Errorf(Invalid, "invalid disk size %d bytes: use at least 64M", vm.DiskSizeBytes)
	case vm.DiskSizeBytes > 16<<40:
		return Errorf(Invalid, "invalid disk size %d bytes: use at most 16T", vm.DiskSizeBytes)
	}
	return nil
}

// undoCreate removes everything a create (or fork) made of a VM that
// never ran: its files and record, and the name, address and host keys a
// failed start from a snapshot may have given it.
func (m *Manager) undoCreate(vm VM) {
	ctx, cancel := cleanupContext()
	defer cancel()
	if err := m.ports.Files.RemoveAll(vm.ID); err != nil {
		m.ports.Log.Error("undo create: remove files", "vm", vm.Name, "err", err)
	}
	if err := m.deleteRecord(ctx, vm); err != nil && !errors.Is(err, ErrNotFound) {
		m.ports.Log.Error("undo create: delete record", "vm", vm.Name, "err", err)
	}
	if m.ports.Network != nil {
		m.ports.Network.Forget(vm.Name)
	}
	m.ports.Guest.Forget(vm)
}
