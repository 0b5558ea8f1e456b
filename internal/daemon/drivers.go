package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// selectDriver picks the VMM driver from the config. "auto" takes
// Firecracker when its binary and usable KVM are present, else QEMU (KVM or
// TCG), and logs why.
func selectDriver(ctx context.Context, cfg config.Config, log *slog.Logger) (vmm.Driver, error) {
	host := qemu.Host{}
	switch cfg.VMM {
	case "firecracker":
		return newFirecracker(cfg, log)
	case "qemu":
		return newQEMU(cfg, log, host, host.Probe(ctx, cfg.QEMU.Binary))
	}
	fc, _ := exec.LookPath(cfg.Firecracker.Binary)
	probe := host.Probe(ctx, cfg.QEMU.Binary)
	choice := qemu.ChooseAuto(fc, probe)
	log.Info("vmm auto", "vmm", choice.VMM, "reason", choice.Reason)
	switch choice.VMM {
	case "firecracker":
		return newFirecracker(cfg, log)
	case "qemu":
		return newQEMU(cfg, log, host, probe)
	}
	return nil, errors.New(choice.Reason)
}

func newFirecracker(cfg config.Config, log *slog.Logger) (vmm.Driver, error) {
	bin, err := exec.LookPath(cfg.Firecracker.Binary)
	if err != nil {
		return nil, fmt.Errorf("firecracker binary %q not found: install Firecracker or set firecracker.binary in the config", cfg.Firecracker.Binary)
	}
	return firecracker.New(firecracker.Config{
		BinaryPath:  bin,
		StopTimeout: cfg.VM.StopTimeout.Std(),
		Logger:      log.With("driver", "firecracker"),
	}), nil
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
