package oci

import (
	"encoding/json"
	"fmt"
	"slices"
)

// ProcessConfig is the part of a container image's config file that says
// how its processes run: what `vm exec` and `banger run` take as defaults
// in the image's VMs.
type ProcessConfig struct {
	Env        []string `json:"Env"`
	WorkingDir string   `json:"WorkingDir"`
	User       string   `json:"User"`
	Entrypoint []string `json:"Entrypoint"`
	Cmd        []string `json:"Cmd"`
}

// ParseProcessConfig reads the process config from a container image's
// config file (its "config" object).
func ParseProcessConfig(raw json.RawMessage) (ProcessConfig, error) {
	var f struct {
		Config ProcessConfig `json:"config"`
	}
	if len(raw) == 0 {
		return ProcessConfig{}, nil
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return ProcessConfig{}, fmt.Errorf("read the container image's config: %w", err)
	}
	return f.Config, nil
}

// Command is what a container started with args runs, as docker run does:
// the Entrypoint followed by args, or by Cmd when there are no args. It is
// empty when the image names neither and no args are given.
func (c ProcessConfig) Command(args []string) []string {
	if len(args) == 0 {
		args = c.Cmd
	}
	return append(slices.Clone(c.Entrypoint), args...)
}
