package network_test

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// The open-tap helper: the test binary re-executes itself as another uid
// (see openTapAs) to check what an unprivileged VMM can do with a tap.
const (
	helperTapEnv = "BANGER_NETTEST_OPEN_TAP"
	helperTunEnv = "BANGER_NETTEST_TUN_NODE"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperTapEnv); name != "" {
		os.Exit(openTapHelper(os.Getenv(helperTunEnv), name))
	}
	os.Exit(m.Run())
}

// openTapHelper attaches to tap name the way Firecracker does (TUNSETIFF
// with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) through the tun device node at
// node. Exit 0: attached; 3: refused with EPERM; 1: anything else.
func openTapHelper(node, name string) int {
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open %s as uid %d: %v\n", node, os.Getuid(), err)
		return 1
	}
	defer func() { _ = unix.Close(fd) }()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		fmt.Fprintf(os.Stderr, "TUNSETIFF %s as uid %d: %v\n", name, os.Getuid(), err)
		if err == unix.EPERM {
			return 3
		}
		return 1
	}
	return 0
}

// testOwner is the banger instance the tests' bridges are marked with.
var testOwner = network.Owner{UID: 0, StateDir: "/var/lib/banger-test"}
