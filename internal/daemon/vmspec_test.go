package daemon

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
)

func TestDiskFitsRefusesMoreThanTheFreeSpace(t *testing.T) {
	state := t.TempDir()
	vms := filepath.Join(state, "vms") // not created yet on a fresh install
	tests := []struct {
		name string
		size int64
		free int64
		want string // "" means it fits
	}{
		{name: "fits", size: 8 << 30, free: 53 << 30},
		{name: "exactly fits", size: 53 << 30, free: 53 << 30},
		{name: "1T on 53G", size: 1 << 40, free: 53<<30 + 123<<20,
			want: "a 1T disk does not fit: " + state + " has 53.1G free; choose --disk 53G or smaller, or free space there"},
		{name: "under a GiB left", size: 1 << 30, free: 700<<20 + 5,
			want: "a 1G disk does not fit: " + state + " has 700.0M free; choose --disk 700M or smaller, or free space there"},
		{name: "nearly full", size: 64 << 20, free: 10 << 20,
			want: "a 64M disk does not fit: " + state + " has 10M free; free space there, or choose a smaller --disk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked string
			err := diskFits(tc.size, vms, func(dir string) (int64, error) {
				asked = dir
				return tc.free, nil
			})
			if asked != state {
				t.Errorf("measured %q, want the nearest existing parent %q", asked, state)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !api.IsCode(err, api.CodeFailedPrecondition) {
				t.Fatalf("err %v, want a failed_precondition", err)
			}
			var ae *api.Error
			if errors.As(err, &ae); ae.Message != tc.want {
				t.Errorf("message\n got %q\nwant %q", ae.Message, tc.want)
			}
		})
	}

	err := diskFits(1<<30, state, func(string) (int64, error) { return 0, errors.New("statfs: input/output error") })
	if err == nil || !strings.Contains(err.Error(), "check room for the VM disk: statfs: input/output error") {
		t.Errorf("a failed probe gave %v", err)
	}
}

// TestBootArgsAreWhatTheAgentReads: the host writes the banger.* kernel
// parameters with the agent's own renderer, so the guest parses back the
// VM's name and agent port.
func TestBootArgsAreWhatTheAgentReads(t *testing.T) {
	got, err := agent.ParseBootParams(bootArgs(store.VM{Name: "dev-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "dev-1" || got.AgentPort != agentPort {
		t.Fatalf("the guest reads %+v from %q", got, bootArgs(store.VM{Name: "dev-1"}))
	}
}
