package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
)

// parseLabels turns repeated --label KEY=VALUE flags into a map, with the
// lifecycle's label rule, so a bad label fails before the daemon starts.
func parseLabels(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(flags))
	for _, kv := range flags {
		k, v, err := lifecycle.ParseLabel(kv)
		if err != nil {
			return nil, fmt.Errorf("--label: %w", err)
		}
		out[k] = v
	}
	return out, nil
}

// filterByLabels keeps the VMs carrying every label of selector.
func filterByLabels(vms []api.VM, selector map[string]string) []api.VM {
	if len(selector) == 0 {
		return vms
	}
	out := make([]api.VM, 0, len(vms))
	for _, vm := range vms {
		if vm.HasLabels(selector) {
			out = append(out, vm)
		}
	}
	return out
}

// formatLabels is "k=v, k2=v2", keys sorted, for `vm show`.
func formatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ", ")
}
