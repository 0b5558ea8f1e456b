//go:build !linux

package agent

import (
	"errors"
	"net"
)

// ListenVsock is only available on Linux, the only system banger guests run.
func ListenVsock(port uint32) (net.Listener, error) {
	return nil, errors.New("vsock is only supported on linux")
}
