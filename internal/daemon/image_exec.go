package daemon

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/oci"
	"github.com/banger-dev/banger/internal/store"
)

// withImageDefaults fills, for a VM made from a container image, what a
// vm exec request leaves out from the image's config: its Env comes first
// (the request's entries override it), its WorkingDir when no Dir is
// given, its User (the name before any ":group") when no user is given.
// Other VMs' requests are returned as they are.
func (m *vmManager) withImageDefaults(ctx context.Context, vm store.VM, req api.VMExecRequest) api.VMExecRequest {
	if vm.ImageID == "" {
		return req
	}
	img, err := m.store.GetImage(ctx, vm.ImageID)
	if err != nil || img.Source != store.ImageSourceOCI {
		return req
	}
	return applyContainerConfig(img.Origin.Config, req)
}

func applyContainerConfig(raw json.RawMessage, req api.VMExecRequest) api.VMExecRequest {
	cfg, err := oci.ParseProcessConfig(raw)
	if err != nil {
		return req
	}
	if len(cfg.Env) > 0 {
		req.Env = append(slices.Clone(cfg.Env), req.Env...)
	}
	if req.Dir == "" {
		req.Dir = cfg.WorkingDir
	}
	if req.User == "" {
		req.User, _, _ = strings.Cut(cfg.User, ":")
	}
	return req
}
