package network

import (
	"fmt"
	"os"
	"strings"
)

// ipForwardPath is per network namespace: the kernel resolves /proc/sys/net
// against the namespace of the thread that opens it.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// SetIPForward turns IPv4 forwarding on or off in the current network
// namespace. NAT for guests needs it on. Other software (Docker, libvirt)
// may need it too, so banger turns it on but never off on its own.
func SetIPForward(enabled bool) error {
	v := "0\n"
	if enabled {
		v = "1\n"
	}
	if err := os.WriteFile(ipForwardPath, []byte(v), 0o644); err != nil {
		return fmt.Errorf("set net.ipv4.ip_forward=%s: %w", strings.TrimSpace(v), err)
	}
	return nil
}
