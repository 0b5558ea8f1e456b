package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LoopAttacher is the part of Loops that overlays use; tests fake it.
type LoopAttacher interface {
	Attach(backing string, o LoopOptions) (Loop, error)
	Detach(device string) error
	List() ([]Loop, error)
}

// Overlays makes per-VM dm-snapshot disks: the image stays read-only on a
// loop device and the VM's writes land in a sparse copy-on-write file, so a
// new disk costs O(1) in the image size (the Ignite approach).
type Overlays struct {
	Loops LoopAttacher
	DM    DMRunner
}

// HostOverlays is the real thing: ioctls for loops, dmsetup via r for dm.
func HostOverlays(r Runner) Overlays {
	return Overlays{Loops: HostLoops(), DM: HostDMSetup(r)}
}

// OverlaySpec describes one VM's disk.
type OverlaySpec struct {
	// ID names the devices: dm "banger-<ID>", loops "banger-<ID>-base" and
	// "banger-<ID>-cow". Lowercase letters and digits (a store ID).
	ID string
	// Base is the image's rootfs; it is attached read-only and never written.
	Base string
	// COW is the VM's copy-on-write file. It is created sparse when missing
	// and reused when present: a persistent snapshot over the same base
	// comes back with the VM's writes, so a VM restart re-creates the overlay
	// from the same file.
	COW string
	// SizeBytes is the disk size the VM sees; at least the base's size.
	SizeBytes int64
}

// Overlay is an active dm-snapshot disk.
type Overlay struct {
	ID string
	// Device is what the VMM opens: /dev/mapper/banger-<ID>.
	Device   string
	BaseLoop string
	COWLoop  string
	// COWCreated says Create made the COW file (a first start).
	COWCreated bool
}

// snapshotChunkSectors is the dm-snapshot chunk size: 8 sectors = 4 KiB,
// the ext4 block size, so one guest block write copies one chunk.
const snapshotChunkSectors = "8"

// mapperDir is where device-mapper devices appear; tables name devices by
// these paths, and ValidateTable accepts no others.
const mapperDir = "/dev/mapper"

// Names derived from an overlay ID.
func overlayName(id string) string { return NamePrefix + id }
func originName(id string) string  { return NamePrefix + id + "-origin" }
func baseLoopName(id string) string {
	return NamePrefix + id + "-base"
}
func cowLoopName(id string) string { return NamePrefix + id + "-cow" }

// cowSize leaves room for dm-snapshot's exception metadata (16 bytes per
// 4 KiB chunk, plus header) on top of a full rewrite of the disk. The file
// is sparse, so the headroom costs nothing until used.
func cowSize(disk int64) int64 { return disk + disk/128 + 8<<20 }

// Create builds the overlay. On failure everything it made is undone.
func (o Overlays) Create(ctx context.Context, s OverlaySpec) (ov Overlay, err error) {
	if err := ValidName(overlayName(s.ID) + "-origin"); err != nil || strings.Contains(s.ID, "-") {
		return Overlay{}, fmt.Errorf("overlay id %q must be lowercase letters and digits", s.ID)
	}
	if err := o.DM.Available(); err != nil {
		return Overlay{}, err
	}
	// Devices left by a crash (or a host that lost track) would make the
	// creates below fail; they are banger's own, so clear them. One still
	// in use (a running VMM) refuses removal, which stops us here.
	if err := o.Remove(ctx, s.ID); err != nil {
		return Overlay{}, fmt.Errorf("clear stale devices of disk %s: %w", s.ID, err)
	}
	st, err := os.Stat(s.Base)
	if err != nil {
		return Overlay{}, fmt.Errorf("image rootfs: %w", err)
	}
	baseSectors, err := sectors(st.Size())
	if err != nil {
		return Overlay{}, fmt.Errorf("image rootfs %s: %w", s.Base, err)
	}
	if s.SizeBytes < st.Size() {
		return Overlay{}, fmt.Errorf("disk size %d bytes is smaller than the image (%d bytes)", s.SizeBytes, st.Size())
	}
	diskSectors, err := sectors(s.SizeBytes)
	if err != nil {
		return Overlay{}, fmt.Errorf("disk size: %w", err)
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	ov = Overlay{ID: s.ID, Device: filepath.Join(mapperDir, overlayName(s.ID))}

	if f, cerr := os.OpenFile(s.COW, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); cerr == nil {
		ov.COWCreated = true
		undo = append(undo, func() { _ = os.Remove(s.COW) })
		terr := f.Truncate(cowSize(s.SizeBytes))
		if cerr := f.Close(); terr == nil {
			terr = cerr
		}
		if terr != nil {
			return Overlay{}, fmt.Errorf("create COW file: %w", terr)
		}
	} else if !errors.Is(cerr, os.ErrExist) {
		return Overlay{}, fmt.Errorf("create COW file: %w", cerr)
	}

	base, err := o.Loops.Attach(s.Base, LoopOptions{Name: baseLoopName(s.ID), ReadOnly: true})
	if err != nil {
		return Overlay{}, err
	}
	ov.BaseLoop = base.Device
	undo = append(undo, func() { _ = o.Loops.Detach(base.Device) })
	cow, err := o.Loops.Attach(s.COW, LoopOptions{Name: cowLoopName(s.ID)})
	if err != nil {
		return Overlay{}, err
	}
	ov.COWLoop = cow.Device
	undo = append(undo, func() { _ = o.Loops.Detach(cow.Device) })

	// A snapshot is as large as its origin, so a disk larger than the image
	// needs an origin extended with zeros; resize2fs then grows the file
	// system into that space inside the snapshot.
	origin := base.Device
	if diskSectors > baseSectors {
		table := []DMTarget{
			{Start: 0, Length: baseSectors, Type: "linear", Args: []string{base.Device, "0"}},
			{Start: baseSectors, Length: diskSectors - baseSectors, Type: "zero"},
		}
		if err := o.DM.Create(ctx, originName(s.ID), table); err != nil {
			return Overlay{}, err
		}
		undo = append(undo, func() { _ = o.DM.Remove(context.WithoutCancel(ctx), originName(s.ID)) })
		origin = filepath.Join(mapperDir, originName(s.ID))
	}
	table := []DMTarget{{Start: 0, Length: diskSectors, Type: "snapshot",
		Args: []string{origin, cow.Device, "P", snapshotChunkSectors}}}
	if err := o.DM.Create(ctx, overlayName(s.ID), table); err != nil {
		return Overlay{}, err
	}
	return ov, nil
}

// Remove tears down the overlay of id (dm devices, then loops) and keeps
// the COW file: it is the VM's disk. Removing what is already gone is not
// an error, so Remove also finishes a half-done teardown.
func (o Overlays) Remove(ctx context.Context, id string) error {
	if _, ok := OwnerID(overlayName(id)); !ok || strings.Contains(id, "-") {
		return fmt.Errorf("overlay id %q must be lowercase letters and digits", id)
	}
	var errs []error
	if o.DM.Available() == nil {
		names, err := o.DM.List(ctx)
		if err != nil {
			return err
		}
		for _, n := range []string{overlayName(id), originName(id)} {
			if contains(names, n) {
				errs = append(errs, o.DM.Remove(ctx, n))
			}
		}
	}
	loops, err := o.Loops.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range loops {
		if l.Name == baseLoopName(id) || l.Name == cowLoopName(id) {
			errs = append(errs, o.Loops.Detach(l.Device))
		}
	}
	return errors.Join(errs...)
}

// Orphans is what CleanupOrphans removed.
type Orphans struct {
	DMDevices []string
	Loops     []string
	COWFiles  []string
}

// CleanupOrphans removes banger's dm devices, loop devices and COW files
// whose owner ID live does not know, e.g. after a crash between creating an
// overlay and recording it. Names without the banger prefix are never
// touched. cowGlob (may be empty) matches COW files; a file's owner is the
// ID in its base name (banger-<id>.cow).
func (o Overlays) CleanupOrphans(ctx context.Context, live func(id string) bool, cowGlob string) (Orphans, error) {
	var (
		out  Orphans
		errs []error
	)
	orphan := func(name string) bool {
		id, ok := OwnerID(name)
		return ok && !live(id)
	}
	if o.DM != nil && o.DM.Available() == nil {
		names, err := o.DM.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		// Snapshots sit on their origins: remove them first.
		sort.SliceStable(names, func(i, j int) bool {
			return !strings.HasSuffix(names[i], "-origin") && strings.HasSuffix(names[j], "-origin")
		})
		for _, n := range names {
			if ValidName(n) == nil && orphan(n) {
				if err := o.DM.Remove(ctx, n); err != nil {
					errs = append(errs, err)
					continue
				}
				out.DMDevices = append(out.DMDevices, n)
			}
		}
	}
	if o.Loops != nil {
		loops, err := o.Loops.List()
		if err != nil {
			errs = append(errs, err)
		}
		for _, l := range loops {
			if ValidName(l.Name) == nil && orphan(l.Name) {
				if err := o.Loops.Detach(l.Device); err != nil {
					errs = append(errs, err)
					continue
				}
				out.Loops = append(out.Loops, l.Device)
			}
		}
	}
	if cowGlob != "" {
		files, err := filepath.Glob(cowGlob)
		if err != nil {
			errs = append(errs, fmt.Errorf("COW file pattern %q: %w", cowGlob, err))
		}
		for _, f := range files {
			base := strings.TrimSuffix(filepath.Base(f), ".cow")
			if !strings.HasSuffix(f, ".cow") || ValidName(base) != nil || !orphan(base) {
				continue
			}
			if err := os.Remove(f); err != nil {
				errs = append(errs, err)
				continue
			}
			out.COWFiles = append(out.COWFiles, f)
		}
	}
	return out, errors.Join(errs...)
}

// COWFileName is the base name CleanupOrphans recognizes for id's COW file.
func COWFileName(id string) string { return NamePrefix + id + ".cow" }
