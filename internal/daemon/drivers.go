package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/internal/vmm/qemu"
)

// selectDriver picks the VMM driver from the config. "auto" takes
// Firecracker when its binary and usable KVM are present, else QEMU (KVM or
// TCG), and logs why.
func selectDriver(ctx context.Context, cfg config.Config, layout paths.Layout, log *slog.Logger, ops privileged.Ops) (vmm.Driver, error) {
	host := qemu.Host{}
	switch cfg.VMM {
	case "firecracker":
		return newFirecracker(cfg, layout, log, ops)
	case "qemu":
		return newQEMU(cfg, log, host, host.Probe(ctx, cfg.QEMU.Binary))
	}
	fc, _ := exec.LookPath(cfg.Firecracker.Binary)
	probe := host.Probe(ctx, cfg.QEMU.Binary)
	choice := qemu.ChooseAuto(fc, probe)
	log.Info("vmm auto", "vmm", choice.VMM, "reason", choice.Reason)
	switch choice.VMM {
	case "firecracker":
		return newFirecracker(cfg, layout, log, ops)
	case "qemu":
		return newQEMU(cfg, log, host, probe)
	}
	return nil, errors.New(choice.Reason)
}

func newFirecracker(cfg config.Config, layout paths.Layout, log *slog.Logger, ops privileged.Ops) (vmm.Driver, error) {
	bin, err := exec.LookPath(cfg.Firecracker.Binary)
	if err != nil {
		return nil, fmt.Errorf("firecracker binary %q not found: install Firecracker or set firecracker.binary in the config", cfg.Firecracker.Binary)
	}
	fc := firecracker.Config{
		BinaryPath:    bin,
		StopTimeout:   cfg.VM.StopTimeout.Std(),
		ConsoleLogMax: int64(cfg.VM.ConsoleLogMax),
		Logger:        log.With("driver", "firecracker"),
	}
	if cfg.Firecracker.Jailer != "" {
		// The jailer starts as root: the root helper launches it for an
		// unprivileged daemon, privileged.Local for a root one.
		if !available(ops) {
			return nil, errors.New("firecracker.jailer needs the root helper (`sudo banger system install`) or a daemon running as root: the jailer starts as root before dropping to the owner")
		}
		fc.Jailer = jailerConfig(ops, layout)
	}
	return firecracker.New(fc), nil
}

// jailerPolicy is what lets privileged.Local (in a root daemon or the root
// helper) launch jailers: both binaries from the config, resolved to
// absolute paths, and the jail base. nil when no jailer is configured.
func jailerPolicy(cfg config.Config, layout paths.Layout) (*privileged.JailerPolicy, error) {
	if cfg.Firecracker.Jailer == "" {
		return nil, nil
	}
	var p privileged.JailerPolicy
	for _, b := range []struct {
		key, name string
		out       *string
	}{{"firecracker.jailer", cfg.Firecracker.Jailer, &p.Jailer}, {"firecracker.binary", cfg.Firecracker.Binary, &p.Firecracker}} {
		path, err := exec.LookPath(b.name)
		if err != nil {
			return nil, fmt.Errorf("%s %q not found", b.key, b.name)
		}
		if *b.out, err = filepath.Abs(path); err != nil {
			return nil, err
		}
	}
	p.ChrootBase = layout.JailDir()
	return &p, nil
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
		BinaryPath:    p.QEMUPath,
		Accel:         accel,
		Host:          host,
		StopTimeout:   cfg.VM.StopTimeout.Std(),
		ConsoleLogMax: int64(cfg.VM.ConsoleLogMax),
		Logger:        log.With("driver", "qemu"),
	}), nil
}
