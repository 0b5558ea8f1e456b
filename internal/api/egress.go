package api

import (
	"context"
	"time"
)

// Egress and lifetime methods. Part of the wire contract.
const (
	// MethodVMEgress changes a VM's egress policy, live when it runs
	// (VMEgressRequest → VM).
	MethodVMEgress = "vm.egress"
	// MethodVMTTL sets or clears a VM's time to live and idle time to live
	// (VMTTLRequest → VM).
	MethodVMTTL = "vm.ttl"
)

// EgressPolicy is what a VM may open connections to outside banger's
// bridge: Mode "allow" (anything), "deny" (nothing; banger's own DNS names
// still resolve) or "allowlist" (only Allow: host names, "*.suffix" names,
// IPv4 addresses or networks, each optionally ":PORT").
type EgressPolicy struct {
	Mode  string   `json:"mode"`
	Allow []string `json:"allow,omitempty"`
}

// VMEgressRequest replaces a VM's egress policy. An empty Mode means the
// configured default (network.egress), or "allowlist" when Allow is given.
type VMEgressRequest struct {
	Name  string   `json:"name"`
	Mode  string   `json:"mode,omitempty"`
	Allow []string `json:"allow,omitempty"`
}

// Lifetime is when the daemon ends a VM on its own: at ExpiresAt, or once
// it has been idle (no exec, copy, ssh, port-forward connection or agent
// session) for IdleTTLSeconds. Action is "delete" or "stop".
type Lifetime struct {
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
	IdleTTLSeconds int64      `json:"idle_ttl_seconds,omitempty"`
	// IdleExpiresAt is when the idle limit ends the VM if nothing happens
	// before (only while it runs).
	IdleExpiresAt *time.Time `json:"idle_expires_at,omitempty"`
	Action        string     `json:"action"`
}

// VMTTLRequest sets a VM's time to live to TTLSeconds from now (0 clears
// it); IdleTTLSeconds, when not nil, sets the idle limit (0 clears it);
// Action, when set, is "delete" or "stop".
type VMTTLRequest struct {
	Name           string `json:"name"`
	TTLSeconds     int64  `json:"ttl_seconds"`
	IdleTTLSeconds *int64 `json:"idle_ttl_seconds,omitempty"`
	Action         string `json:"action,omitempty"`
}

// VMEgress replaces a VM's egress policy.
func (c *Client) VMEgress(ctx context.Context, req VMEgressRequest) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMEgress, req, &out, nil)
	return out, err
}

// VMTTL sets or clears a VM's lifetime.
func (c *Client) VMTTL(ctx context.Context, req VMTTLRequest) (VM, error) {
	var out VM
	err := c.Call(ctx, MethodVMTTL, req, &out, nil)
	return out, err
}
