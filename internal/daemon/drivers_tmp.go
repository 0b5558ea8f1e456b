package daemon

import (
	"log/slog"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/vmm"
)

func newFirecrackerDriver(bin string, cfg config.Config, log *slog.Logger) vmm.Driver { return nil }
