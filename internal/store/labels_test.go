package store

import (
	"context"
	"maps"
	"testing"

	"github.com/banger-dev/banger/internal/lifecycle"
)

func TestVMLabelsRoundTrip(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	tagged := testVM("tagged")
	tagged.Labels = map[string]string{"creator": "mcp:agent-1", "team": "infra"}
	if err := s.CreateVM(ctx, tagged); err != nil {
		t.Fatal(err)
	}
	plain := testVM("plain")
	if err := s.CreateVM(ctx, plain); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "tagged")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.Labels, tagged.Labels) {
		t.Errorf("labels = %v, want %v", got.Labels, tagged.Labels)
	}
	// A state update keeps them: they are spec, not observed state.
	upd := got.Observed()
	upd.State = lifecycle.Starting
	if err := s.UpdateVMState(ctx, got.ID, upd); err != nil {
		t.Fatal(err)
	}
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		want := map[string]string(nil)
		if vm.Name == "tagged" {
			want = tagged.Labels
		}
		if !maps.Equal(vm.Labels, want) {
			t.Errorf("%s: labels = %v, want %v", vm.Name, vm.Labels, want)
		}
	}
}
