// Package network gives each banger VM its place on the host's network:
// the bridge, one tap per VM, the VM subnet and its addresses, and the
// ip_forward switch NAT needs. NAT and isolation rules live in
// network/firewall, the name server in network/dns, and host-port
// forwarding in network/portforward.
//
// Functions that change the system (EnsureBridge, CreateTap, ...) act on
// the calling thread's current network namespace and need CAP_NET_ADMIN;
// banger reaches them only through the root helper's typed operations
// (internal/privileged). Every such function validates its own arguments
// too — interface names must carry banger's prefixes, subnets must be
// private IPv4 networks — so a bad request is refused here even if a
// caller forgot to check, and no function ever touches an interface banger
// did not name. Validation failures wrap ErrInvalid.
package network

import "errors"

// Sentinel errors callers branch on with errors.Is. Returned errors wrap
// them with a sentence of context.
var (
	// ErrInvalid means an argument failed validation: a name without
	// banger's prefix, a malformed or public subnet, a bad port.
	ErrInvalid = errors.New("invalid argument")
	// ErrSubnetConflict means the subnet overlaps a network the host
	// already routes; errors.As with *SubnetConflictError says which.
	ErrSubnetConflict = errors.New("subnet conflicts with an existing route")
	// ErrInterfaceConflict means an interface with the requested name
	// exists but is not what banger would have made there (a veth where a
	// bridge belongs, a tap owned by someone else).
	ErrInterfaceConflict = errors.New("interface conflict")
	// ErrNoBridge means CreateTap was asked to join a bridge that does
	// not exist yet.
	ErrNoBridge = errors.New("bridge does not exist")
)
