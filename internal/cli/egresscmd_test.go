package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// egressDaemon is a fake daemon whose VM dev has an allowlist policy and
// a TTL 30 minutes (and a bit) away.
func egressDaemon(t *testing.T, withLifetime bool) (*App, *recorder, func() (string, string)) {
	t.Helper()
	r := &recorder{reqs: map[string][]string{}}
	expires := time.Now().Add(30*time.Minute + 30*time.Second)
	dev := api.VM{ID: "id1", Name: "dev", State: api.VMRunning, Image: "default", VCPUs: 2, MemoryMiB: 256, CreatedAt: snapCreated,
		Egress: &api.EgressPolicy{Mode: "allowlist", Allow: []string{"github.com", "10.0.0.0/8:443"}}}
	if withLifetime {
		dev.Lifetime = &api.Lifetime{ExpiresAt: &expires, IdleTTLSeconds: 600, Action: "stop"}
	}
	other := api.VM{ID: "id2", Name: "web", State: api.VMStopped, Image: "default", VCPUs: 1, MemoryMiB: 128, CreatedAt: snapCreated}
	app, stdout, stderr := fakeDaemon(t, func(srv *api.Server) {
		recorded[api.VMCreateRequest](srv, r, api.MethodVMCreate, dev)
		recorded[api.VMEgressRequest](srv, r, api.MethodVMEgress, dev)
		recorded[api.VMTTLRequest](srv, r, api.MethodVMTTL, dev)
		recorded[api.VMRef](srv, r, api.MethodVMShow, dev)
		recorded[struct{}](srv, r, api.MethodVMList, api.VMList{VMs: []api.VM{dev, other}})
	})
	return app, r, func() (string, string) {
		out, errOut := stdout.String(), stderr.String()
		stdout.Reset()
		stderr.Reset()
		return out, errOut
	}
}

func TestEgressAndTTLCommands(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		method string
		sent   string
		stdout []string
	}{
		{
			args: []string{"vm", "create", "--name", "dev", "--egress", "allowlist", "--allow", "github.com", "--allow", "10.0.0.0/8:443",
				"--ttl", "30m", "--idle-ttl", "10m", "--ttl-action", "stop"},
			method: api.MethodVMCreate,
			sent:   `{"name":"dev","egress":"allowlist","allow":["github.com","10.0.0.0/8:443"],"ttl_seconds":1800,"idle_ttl_seconds":600,"ttl_action":"stop"}`,
			stdout: []string{"egress:", "allowlist (github.com, 10.0.0.0/8:443)", "ttl:", "stop in 30m", "stop after 10m idle"},
		},
		{args: []string{"vm", "egress", "dev", "--mode", "deny"}, method: api.MethodVMEgress, sent: `{"name":"dev","mode":"deny"}`, stdout: []string{"dev: egress allowlist"}},
		{args: []string{"vm", "egress", "dev", "--allow", "*.example.com"}, method: api.MethodVMEgress, sent: `{"name":"dev","allow":["*.example.com"]}`},
		{args: []string{"vm", "ttl", "dev", "2h"}, method: api.MethodVMTTL, sent: `{"name":"dev","ttl_seconds":7200}`, stdout: []string{"dev: stop in 30m"}},
		{args: []string{"vm", "ttl", "dev", "none", "--idle-ttl", "none"}, method: api.MethodVMTTL, sent: `{"name":"dev","ttl_seconds":0,"idle_ttl_seconds":0}`},
		{args: []string{"vm", "ttl", "dev", "1h", "--ttl-action", "delete"}, method: api.MethodVMTTL, sent: `{"name":"dev","ttl_seconds":3600,"action":"delete"}`},
		{args: []string{"vm", "list"}, method: api.MethodVMList, sent: `{}`, stdout: []string{"AGE  TTL\n", "30m\n", "-\n"}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			app, r, output := egressDaemon(t, true)
			if code := Run(context.Background(), app, tt.args); code != 0 {
				_, errOut := output()
				t.Fatalf("exit %d: %s", code, errOut)
			}
			stdout, _ := output()
			if got := strings.Join(r.sent(tt.method), ""); got != tt.sent {
				t.Errorf("sent %s, want %s", got, tt.sent)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
		})
	}
}

// Without any VM having a lifetime, vm list has no TTL column.
func TestVMListWithoutLifetimesHasNoTTLColumn(t *testing.T) {
	app, _, output := egressDaemon(t, false)
	if code := Run(context.Background(), app, []string{"vm", "list"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if stdout, _ := output(); strings.Contains(stdout, "TTL") {
		t.Errorf("TTL column without lifetimes:\n%s", stdout)
	}
}

func TestTTLFlagsRefuseBadDurations(t *testing.T) {
	for _, args := range [][]string{
		{"vm", "ttl", "dev", "soon"},
		{"vm", "ttl", "dev", "10ms"},
		{"vm", "ttl", "dev", "1h", "--idle-ttl", "-5m"},
		{"vm", "create", "--name", "dev", "--ttl", "10ms"},
	} {
		app, r, output := egressDaemon(t, true)
		if code := Run(context.Background(), app, args); code == 0 {
			t.Errorf("%q accepted", args)
		}
		if _, errOut := output(); !strings.Contains(errOut, "at least a second") {
			t.Errorf("%q: %q does not say what is wrong", args, errOut)
		}
		if len(r.sent(api.MethodVMTTL))+len(r.sent(api.MethodVMCreate)) > 0 {
			t.Errorf("%q reached the daemon", args)
		}
	}
}
