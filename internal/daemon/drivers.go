package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// selectDriver picks the VMM driver from the config. "auto" prefers
// Firecracker when its binary is present.
func selectDriver(cfg config.Config, log *slog.Logger) (vmm.Driver, error) {
	if cfg.VMM == "qemu" {
		return nil, errors.New("the qemu driver is not available in this build yet")
	}
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
