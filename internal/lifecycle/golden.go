package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// goldenPlan is what a create knows of the golden snapshot of its image
// and shape, and, after a boot, what became of the one it was to make.
type goldenPlan struct {
	key string
	// from is the ready golden snapshot with key; nil: none yet, and the
	// boot makes it once the agent answers (the golden boot step).
	from *Snapshot
	made *Snapshot // the golden snapshot the boot made
	err  error     // why the boot made none
}

// goldenPlan says how a create of vm from img may use golden snapshots;
// nil when it cannot (no golden keys, snapshots, identity or restoring
// driver, or no key for this image and shape).
func (m *Manager) goldenPlan(ctx context.Context, vm VM, img Image) *goldenPlan {
	if m.cfg.GoldenPerImage < 0 || m.ports.Golden == nil || m.ports.Identity == nil || m.snapshotsAvailable() != nil {
		return nil
	}
	if _, err := m.restorer(); err != nil {
		return nil
	}
	key := m.ports.Golden.Key(vm, img)
	if key == "" {
		return nil
	}
	from, err := m.findGolden(ctx, key, vm.VMM)
	if err != nil {
		m.ports.Log.Warn("look for a golden snapshot; booting cold", "vm", vm.Name, "err", err)
		return nil
	}
	return &goldenPlan{key: key, from: from}
}

// findGolden is the ready golden snapshot with key saved by driver, or nil.
func (m *Manager) findGolden(ctx context.Context, key, driver string) (*Snapshot, error) {
	all, err := m.ports.Snapshots.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if s.Golden && s.Key == key && s.State == SnapshotReady && s.VMM == driver {
			return &s, nil
		}
	}
	return nil, nil
}

// createWarm starts the new VM vm, recorded creating, from golden snapshot
// g: a copy of its disk, its VMM restored, its own identity given. On
// failure the VMM is gone and vm is recorded creating again.
func (m *Manager) createWarm(ctx context.Context, vm *VM, img Image, g Snapshot, p Progress) error {
	s, unlock, err := m.lockedSnapshot(ctx, g.ID, false)
	if isKind(err, NotFound) {
		return brokenGolden{err} // deleted since: the cold boot makes another
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.checkRestorable(s, vm.VMM); err != nil {
		return brokenGolden{err}
	}
	if err := m.diskFromSnapshot(ctx, *vm, s, p); err != nil {
		return err
	}
	m.crash(CrashCreateDiskReady)
	if err := m.bootIn(ctx, vm, img, bootMode{from: &s, reidentify: true, failTo: Creating}, p); err != nil {
		return err
	}
	m.markUsed(ctx, s)
	return nil
}

// markUsed records that a warm create just restored golden snapshot s
// (whose lock the caller holds shared, so no writer changed it since it
// was read), for pruning to keep the most recently used. A failure is only
// logged: the VM is running.
func (m *Manager) markUsed(ctx context.Context, s Snapshot) {
	s.LastUsedAt = m.ports.Now().UTC()
	if err := m.ports.Snapshots.SaveSnapshot(context.WithoutCancel(ctx), s); err != nil {
		m.ports.Log.Warn("record the golden snapshot's use", "snapshot", s.Name, "err", err)
	}
}

// brokenGolden is a golden snapshot that cannot be restored (its files
// fail verification): it is deleted, and the cold boot makes a new one.
type brokenGolden struct{ error }

func (e brokenGolden) Unwrap() error { return e.error }

// beforeColdBoot readies vm, whose warm start failed with cause, for a
// cold boot: its files go (the disk was the golden snapshot's), and a
// broken golden snapshot is deleted for the boot to make a new one. It
// returns the cold boot's plan.
func (m *Manager) beforeColdBoot(ctx context.Context, vm *VM, plan *goldenPlan, cause error, p Progress) (*goldenPlan, error) {
	m.ports.Log.Warn("warm start failed; booting cold", "vm", vm.Name, "snapshot", plan.from.Name, "err", cause)
	p(Report{VM: vm.Name, Stage: "warm", Message: "warm start failed (" + cause.Error() + "); booting cold"})
	var broken brokenGolden
	if errors.As(cause, &broken) {
		if err := m.DeleteSnapshot(ctx, plan.from.ID); err != nil && !isKind(err, NotFound) {
			m.ports.Log.Warn("delete broken golden snapshot", "snapshot", plan.from.Name, "err", err)
		}
		plan = &goldenPlan{key: plan.key}
	} else {
		plan = nil // the golden snapshot is whole: this restore failed, not it
	}
	if err := m.ports.Files.RemoveAll(vm.ID); err != nil {
		return nil, fmt.Errorf("remove the warm start's files: %w", err)
	}
	// The cold boot is the VM's first (the overlay grows its file system).
	vm.StartedAt = time.Time{}
	return plan, nil
}

// makeGolden is the golden boot step: it saves the golden snapshot of the
// booting VM's image and shape, right after its agent answered and before
// the guest setup makes the guest this VM's. A failure is only logged (and
// kept in the plan): the VM boots on.
func (m *Manager) makeGolden(ctx context.Context, b *booting) error {
	plan := b.mode.golden
	s := m.newSnapshot(*b.vm, goldenName(b.img.Name, plan.key))
	// A VM's network settings (forwards) are its own, not the image's.
	s.Golden, s.Key, s.Network = true, plan.key, nil
	b.p(Report{VM: b.vm.Name, Stage: "golden", Message: "saving golden snapshot " + s.Name + " for warm starts of image " + b.img.Name})
	made, err := m.save(ctx, b.vm, b.inst, s, b.p)
	if err != nil {
		plan.err = err
		m.ports.Log.Warn("golden snapshot not made", "vm", b.vm.Name, "image", b.img.Name, "err", err)
		return nil
	}
	plan.made = &made
	m.retireGoldens(ctx, made)
	return nil
}

// retireGoldens deletes the golden snapshots that current makes
// unnecessary: those of the same image and shape with another key (stale:
// the image, kernel, agent or VMM changed since), then, while the image has
// more than cfg.GoldenPerImage, the least recently used (last warm create,
// else when made). current itself always stays. Failures are only logged.
func (m *Manager) retireGoldens(ctx context.Context, current Snapshot) {
	all, err := m.ports.Snapshots.ListSnapshots(ctx)
	if err != nil {
		m.ports.Log.Warn("list golden snapshots to retire", "err", err)
		return
	}
	var kept []Snapshot
	for _, s := range all {
		if !s.Golden || s.ID == current.ID || s.State != SnapshotReady ||
			(s.ImageID != current.ImageID && s.ImageName != current.ImageName) {
			continue
		}
		stale := s.Key != current.Key &&
			s.VCPUs == current.VCPUs && s.MemoryMiB == current.MemoryMiB && s.DiskSizeBytes == current.DiskSizeBytes
		if !stale {
			kept = append(kept, s)
			continue
		}
		m.retireGolden(ctx, s, "deleted stale golden snapshot", current)
	}
	excess := len(kept) + 1 - m.cfg.GoldenPerImage
	if m.cfg.GoldenPerImage <= 0 || excess <= 0 {
		return
	}
	slices.SortFunc(kept, func(a, b Snapshot) int { return lastUse(a).Compare(lastUse(b)) })
	for _, s := range kept[:excess] {
		m.retireGolden(ctx, s, "deleted least recently used golden snapshot", current)
	}
}

func (m *Manager) retireGolden(ctx context.Context, s Snapshot, why string, current Snapshot) {
	if err := m.DeleteSnapshot(ctx, s.ID); err != nil && !isKind(err, NotFound) {
		m.ports.Log.Warn("delete golden snapshot", "snapshot", s.Name, "err", err)
		return
	}
	m.ports.Log.Info(why, "snapshot", s.Name, "image", current.ImageName, "made", current.Name)
}

// lastUse is when golden snapshot s last started a VM, or was made.
func lastUse(s Snapshot) time.Time {
	if s.LastUsedAt.After(s.CreatedAt) {
		return s.LastUsedAt
	}
	return s.CreatedAt
}

// isKind reports whether err is an Error of kind.
func isKind(err error, kind ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}

// WarmRequest names the image and shape a golden snapshot is made for;
// zero fields take the defaults, as for a create.
type WarmRequest struct {
	Image         string
	VCPUs         int
	MemoryMiB     int
	DiskSizeBytes int64
}

// Warm makes the golden snapshot of an image and shape, or returns the
// current one. It boots a throwaway VM for it, deleted afterwards.
func (m *Manager) Warm(ctx context.Context, req WarmRequest, p Progress) (Snapshot, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return Snapshot{}, err
	}
	if _, err := m.restorer(); err != nil {
		return Snapshot{}, err
	}
	if m.ports.Golden == nil {
		return Snapshot{}, Errorf(Unavailable, "this daemon cannot start VMs warm").
			WithHint("`banger doctor` says what is missing")
	}
	if m.cfg.GoldenPerImage < 0 {
		return Snapshot{}, Errorf(Unavailable, "warm starts are off on this host (image.golden_snapshots is 0)").
			WithHint("`banger config set image.golden_snapshots 3` turns them on")
	}
	creq := CreateRequest{Name: "warm-" + m.ports.NewID()[:8], Image: req.Image, VCPUs: req.VCPUs,
		MemoryMiB: req.MemoryMiB, DiskSizeBytes: req.DiskSizeBytes}
	vm, img, err := m.newVM(ctx, creq)
	if err != nil {
		return Snapshot{}, err
	}
	key := m.ports.Golden.Key(vm, img)
	if key == "" {
		return Snapshot{}, Errorf(Unavailable, "image %q cannot start warm on this host", img.Name).
			WithHint("`banger doctor` shows what the VMM driver supports")
	}
	current, err := m.findGolden(ctx, key, vm.VMM)
	if err != nil {
		return Snapshot{}, err
	}
	if current != nil {
		err := m.checkRestorable(*current, vm.VMM)
		if err == nil {
			p(Report{Stage: "golden", Message: "golden snapshot " + current.Name + " is current"})
			return *current, nil
		}
		m.ports.Log.Warn("replacing a broken golden snapshot", "snapshot", current.Name, "err", err)
		if err := m.DeleteSnapshot(ctx, current.ID); err != nil && !isKind(err, NotFound) {
			return Snapshot{}, err
		}
	}
	plan := &goldenPlan{key: key}
	_, err = m.create(ctx, vm, img, false, plan, p)
	// The throwaway VM goes however its boot ended (a failed create left
	// nothing, or a failed VM).
	if derr := m.Delete(context.WithoutCancel(ctx), vm.ID, true, func(Report) {}); derr != nil && !isKind(derr, NotFound) {
		m.ports.Log.Warn("delete the warm-up vm", "vm", vm.Name, "err", derr)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("warm image %q: %w", img.Name, err)
	}
	if plan.made == nil {
		if plan.err == nil {
			plan.err = errors.New("the boot made no golden snapshot")
		}
		return Snapshot{}, fmt.Errorf("warm image %q: %w", img.Name, plan.err)
	}
	return *plan.made, nil
}

// goldenName is golden-<image>-<key[:8]>, the image's name cut so that the
// whole stays within the name rule.
func goldenName(image, key string) string {
	short := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, strings.ToLower(key))
	short = short[:min(8, len(short))]
	if room := 63 - len("golden--") - len(short); len(image) > room {
		image = strings.TrimRight(image[:room], "-")
	}
	if short == "" {
		return "golden-" + image
	}
	return "golden-" + image + "-" + short
}
