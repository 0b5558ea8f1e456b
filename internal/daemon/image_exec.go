package daemon

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
)

// containerConfig is the part of a container image's config that says how
// its processes run.
type containerConfig struct {
	Config struct {
		Env        []string `json:"Env"`
		WorkingDir string   `json:"WorkingDir"`
		User       string   `json:"User"`
	} `json:"config"`
}

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
	var cfg containerConfig
	if len(raw) == 0 || json.Unmarshal(raw, &cfg) != nil {
		return req
	}
	if len(cfg.Config.Env) > 0 {
		req.Env = append(slices.Clone(cfg.Config.Env), req.Env...)
	}
	if req.Dir == "" {
		req.Dir = cfg.Config.WorkingDir
	}
	if req.User == "" {
		req.User, _, _ = strings.Cut(cfg.Config.User, ":")
	}
	return req
}
