package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// selectDriver picks the VMM driver from the config. "auto" takes
// Firecracker when its binary and usable KVM are present, else QEMU (KVM or
// TCG), and logs why.
func selectDriver(ctx context.Context, cfg config.Config, layout paths.Layout, log *slog.Logger) (vmm.Driver, error) {
	host := qemu.Host{}
	switch cfg.VMM {
	case "firecracker":
		return newFirecracker(cfg, layout, log)
	case "qemu":
		return newQEMU(cfg, log, host, host.Probe(ctx, cfg.QEMU.Binary))
	}
	fc, _ := exec.LookPath(cfg.Firecracker.Binary)
	probe := host.Probe(ctx, cfg.QEMU.Binary)
	choice := qemu.ChooseAuto(fc, probe)
	log.Info("vmm auto", "vmm", choice.VMM, "reason", choice.Reason)
	switch choice.VMM {
	case "firecracker":
		return newFirecracker(cfg, layout, log)
	case "qemu":
		return newQEMU(cfg, log, host, probe)
	}
	return nil, errors.New(choice.Reason)
}

func newFirecracker(cfg config.Config, layout paths.Layout, log *slog.Logger) (vmm.Driver, error) {
	bin, err := exec.LookPath(cfg.Firecracker.Binary)
	if err != nil {
		return nil, fmt.Errorf("firecracker binary %q not found: install Firecracker or set firecracker.binary in the config", cfg.Firecracker.Binary)
	}
	fc := firecracker.Config{
		BinaryPath:  bin,
		StopTimeout: cfg.VM.StopTimeout.Std(),
		Logger:      log.With("driver", "firecracker"),
	}
	if cfg.Firecracker.Jailer != "" {
		if fc.Jailer, err = jailerConfig(cfg, layout); err != nil {
			return nil, err
		}
	}
	return firecracker.New(fc), nil
}

// jailerConfig runs Firecracker under its jailer, dropping to the install
// owner. The jailer must start as root, so this needs a root daemon (the
// root helper does not launch jailers). The chroot base sits under the state
// dir so staging can hard-link VM disks into the jail.
func jailerConfig(cfg config.Config, layout paths.Layout) (*firecracker.JailerConfig, error) {
	path, err := exec.LookPath(cfg.Firecracker.Jailer)
	if err != nil {
		return nil, fmt.Errorf("firecracker.jailer %q not found", cfg.Firecracker.Jailer)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("firecracker.jailer needs bangerd to run as root: the jailer starts as root and drops to the owner; unset it for an unprivileged daemon")
	}
	meta, err := installmeta.Read(layout.InstallMetaPath())
	if err != nil {
		return nil, fmt.Errorf("firecracker.jailer needs a system install to know which uid the jail drops to: %w", err)
	}
	return &firecracker.JailerConfig{Path: path, UID: meta.OwnerUID, GID: meta.OwnerGID, ChrootBaseDir: filepath.Join(layout.StateDir, "jail")}, nil
}

func newQEMU(cfg config.Config, log *slog.Logger, host qemu.Host, p qemu.Probe) (vmm.Driver, error) {
	if !p.Usable() {
		return nil, errors.New(p.Err)
	}
	accel := qemu.Accel(cfg.QEMU.Accel)
	if cfg.QEMU.Accel == "auto" {
		accel = "" // the driver detects KVM (and the PVM flavour) itself
	}
	return qemu.New(qemu.Config{
		BinaryPath:  p.QEMUPath,
		Accel:       accel,
		Host:        host,
		StopTimeout: cfg.VM.StopTimeout.Std(),
		Logger:      log.With("driver", "qemu"),
	}), nil
}
