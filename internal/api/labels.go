package api

// Label keys banger itself sets.
const (
	// LabelCreator names who made a VM: "mcp:<agent>" for the MCP server.
	LabelCreator = "creator"
)

// HasLabels reports whether vm carries every key=value pair of selector
// (an empty selector matches every VM).
func (vm VM) HasLabels(selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := vm.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
