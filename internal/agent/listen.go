package agent

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Listen opens the agent's listening socket from an address of the form
// "vsock:PORT" (a real guest: AF_VSOCK on any CID) or "unix:PATH" (the
// stand-in guest under the fake Firecracker, and tests).
func Listen(addr string) (net.Listener, error) {
	scheme, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" {
		return nil, fmt.Errorf("listen address %q: want vsock:PORT or unix:PATH", addr)
	}
	switch scheme {
	case "vsock":
		port, err := strconv.ParseUint(rest, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: port is not a number", addr)
		}
		return ListenVsock(uint32(port))
	case "unix":
		return net.Listen("unix", rest)
	default:
		return nil, fmt.Errorf("listen address %q: unknown scheme %q, want vsock or unix", addr, scheme)
	}
}

// VsockAddr is the address of one end of an AF_VSOCK connection.
type VsockAddr struct {
	CID  uint32
	Port uint32
}

// Network implements net.Addr.
func (a VsockAddr) Network() string { return "vsock" }

// String renders the address as CID:PORT.
func (a VsockAddr) String() string { return fmt.Sprintf("%d:%d", a.CID, a.Port) }
