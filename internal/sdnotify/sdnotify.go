// Package sdnotify tells systemd how a Type=notify service is doing, over
// the datagram socket systemd names in $NOTIFY_SOCKET (sd_notify(3)). It is
// the few lines of the protocol banger needs, without libsystemd.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
)

// The states banger sends.
const (
	// Ready: the service is up (for bangerd, its API answers).
	Ready = "READY=1"
	// Stopping: the service is shutting down on purpose.
	Stopping = "STOPPING=1"
)

// RestartExitStatus is the exit status with which a service asks systemd
// to start it again: bangerd.service lists it in RestartForceExitStatus
// (restart whatever Restart= says) and SuccessExitStatus (not a failure).
// 75 is EX_TEMPFAIL.
const RestartExitStatus = 75

// Notify sends state to the socket named by socketPath (the value of
// $NOTIFY_SOCKET). An empty socketPath means no service manager waits for
// a notification (a manual start, user mode): it returns false and does
// nothing. A name starting with "@" is an abstract socket, which Go's unix
// addresses already understand.
func Notify(socketPath, state string) (sent bool, err error) {
	if socketPath == "" {
		return false, nil
	}
	if socketPath[0] != '/' && socketPath[0] != '@' {
		return false, fmt.Errorf("NOTIFY_SOCKET %q is neither a path nor an abstract socket name", socketPath)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socketPath, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	n, err := conn.Write([]byte(state))
	if err == nil && n != len(state) {
		err = errors.New("short write")
	}
	if err != nil {
		return false, fmt.Errorf("notify systemd (%s): %w", state, err)
	}
	return true, nil
}
