package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
)

const (
	// BridgePrefix starts every bridge name banger manages ("banger0").
	BridgePrefix = "banger"
	// TapPrefix starts every tap name banger manages ("bgt-0123abcd456").
	TapPrefix = "bgt-"
	// maxIfNameLen is IFNAMSIZ minus the terminating NUL.
	maxIfNameLen = 15
)

// ValidateBridgeName accepts a bridge name banger may manage: "banger"
// followed by up to 9 of [a-z0-9-] (the config's rule for network.bridge).
func ValidateBridgeName(name string) error {
	if !strings.HasPrefix(name, BridgePrefix) || !validIfName(name) {
		return fmt.Errorf("%w: bridge name %q must start with %q and be at most %d characters of [a-z0-9-]", ErrInvalid, name, BridgePrefix, maxIfNameLen)
	}
	return nil
}

// ValidateTapName accepts a tap name banger may manage: "bgt-" followed by
// 1 to 11 of [a-z0-9-].
func ValidateTapName(name string) error {
	if !strings.HasPrefix(name, TapPrefix) || len(name) == len(TapPrefix) || !validIfName(name) {
		return fmt.Errorf("%w: tap name %q must start with %q and be at most %d characters of [a-z0-9-]", ErrInvalid, name, TapPrefix, maxIfNameLen)
	}
	return nil
}

func validIfName(name string) bool {
	if len(name) == 0 || len(name) > maxIfNameLen {
		return false
	}
	for _, c := range []byte(name) {
		if !nameChar(c) {
			return false
		}
	}
	return true
}

// nameChar reports whether c may appear in a banger interface name.
func nameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
}

// TapName is the tap device name for a VM: "bgt-" and the first 11
// characters of the VM ID (store IDs are 16 lowercase hex digits, so this
// keeps 44 bits and stays recognisable next to `banger vm show`). An ID
// that is not lowercase alphanumeric is hashed instead, so the result is
// always a valid tap name.
func TapName(vmID string) string {
	const room = maxIfNameLen - len(TapPrefix)
	id := vmID
	if id == "" || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		sum := sha256.Sum256([]byte(vmID))
		id = hex.EncodeToString(sum[:])
	}
	if len(id) > room {
		id = id[:room]
	}
	return TapPrefix + id
}

// MACAddress is the VM's guest MAC address, derived from its ID so it is
// stable across restarts: a locally administered unicast address (02:...)
// followed by 40 bits of SHA-256 of the ID.
func MACAddress(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-vm-mac\x00" + vmID))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// ValidateGuestMAC accepts a MAC address banger may give a VM: six bytes,
// unicast and locally administered, as MACAddress makes them. A multicast
// or broadcast source would let a guest pose as many hosts at once, and a
// vendor-assigned address could be some real machine's.
func ValidateGuestMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
		return fmt.Errorf("%w: VM MAC address %q must be a 6-byte unicast, locally administered address such as 02:00:00:00:00:01", ErrInvalid, mac.String())
	}
	return nil
}

// ParseGuestMAC parses s ("02:ab:cd:ef:01:23") and checks it with
// ValidateGuestMAC.
func ParseGuestMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("%w: VM MAC address %q is not a MAC address such as 02:00:00:00:00:01", ErrInvalid, s)
	}
	if err := ValidateGuestMAC(mac); err != nil {
		return nil, err
	}
	return mac, nil
}

// bridgeMAC is a fixed MAC for a bridge. Without one, Linux gives a bridge
// the lowest MAC among its ports, so it would change as taps come and go
// and guests' ARP entries for the gateway would go stale.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-bridge-mac\x00" + name))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}
