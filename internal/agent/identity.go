package agent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// MaxIdentitySeed bounds Identity.Seed: enough to reseed the kernel's CRNG
// many times over, small enough to keep the request one small frame.
const MaxIdentitySeed = 512

// Identity is what makes a guest restored from a snapshot (a fork, a warm
// create) a machine of its own: the host sends it with OpIdentity right
// after the restore, and the agent applies it idempotently. Hostname,
// MachineID and Seed are required; a zero network field (MAC, Address,
// Gateway, DNS, MTU) or Time leaves that part of the guest as it is, for a
// host without networking.
type Identity struct {
	// Hostname is a DNS label, as banger.name on the kernel command line.
	Hostname string `json:"hostname"`
	// MAC is the unicast hardware address of the guest's interface
	// ("02:fc:00:00:00:05"); the VMM's NIC already has it after the restore,
	// the guest kernel still has the snapshot's.
	MAC string `json:"mac,omitempty"`
	// Address is the guest's IPv4 address with its prefix length.
	Address netip.Prefix `json:"address,omitzero"`
	// Gateway is the default route's next hop (IPv4).
	Gateway netip.Addr `json:"gateway,omitzero"`
	// DNS and Domain replace /etc/resolv.conf when DNS is non-empty.
	DNS    []netip.Addr `json:"dns,omitempty"`
	Domain string       `json:"domain,omitempty"`
	// MTU is set on the interface when non-zero.
	MTU int `json:"mtu,omitempty"`
	// Interface names the interface; the first non-loopback one when empty.
	Interface string `json:"interface,omitempty"`
	// MachineID is the new /etc/machine-id: 32 lowercase hex digits, not
	// all zero.
	MachineID string `json:"machine_id"`
	// Seed (1..MaxIdentitySeed bytes) is mixed into the kernel's RNG so
	// forks of one snapshot do not share their random streams.
	Seed []byte `json:"seed"`
	// Time sets the guest clock (the snapshot's clock is stale) when not
	// zero.
	Time time.Time `json:"time,omitzero"`
}

// IdentityResult is what the guest reports after taking an identity.
type IdentityResult struct {
	// Hostname and Interface are what the guest now has and configured.
	Hostname  string `json:"hostname"`
	Interface string `json:"interface"`
	// HostKeys are the regenerated SSH host public keys in authorized_keys
	// format ("ssh-ed25519 AAAA..."), without comments; empty when the
	// guest has no SSH server. The host re-pins known_hosts with them.
	HostKeys []string `json:"host_keys,omitempty"`
}

// Validate reports the first field that is not acceptable, in one sentence
// naming the field and what it must be.
func (id Identity) Validate() error {
	if !labelPattern.MatchString(id.Hostname) {
		return fmt.Errorf("identity hostname %q is not a DNS label (lowercase letters, digits and inner dashes, at most 63)", id.Hostname)
	}
	if id.MAC != "" {
		if _, err := parseUnicastMAC(id.MAC); err != nil {
			return err
		}
	}
	if id.Address != (netip.Prefix{}) && (!id.Address.IsValid() || !id.Address.Addr().Is4() || id.Address.Bits() < 1) {
		return fmt.Errorf("identity address %q is not an IPv4 address with a prefix length, like 172.30.0.5/24", id.Address)
	}
	if id.Gateway.IsValid() && !id.Gateway.Is4() {
		return fmt.Errorf("identity gateway %s is not an IPv4 address", id.Gateway)
	}
	for _, a := range id.DNS {
		if !a.IsValid() {
			return errors.New("identity DNS list holds an empty address")
		}
	}
	if id.Domain != "" {
		for _, label := range strings.Split(id.Domain, ".") {
			if !labelPattern.MatchString(label) {
				return fmt.Errorf("identity domain %q is not a domain name", id.Domain)
			}
		}
	}
	if id.MTU != 0 && (id.MTU < 576 || id.MTU > 65535) {
		return fmt.Errorf("identity MTU %d is not between 576 and 65535", id.MTU)
	}
	if id.Interface != "" && !validInterfaceName(id.Interface) {
		return fmt.Errorf("identity interface %q is not an interface name", id.Interface)
	}
	if err := validateMachineID(id.MachineID); err != nil {
		return err
	}
	if len(id.Seed) == 0 || len(id.Seed) > MaxIdentitySeed {
		return fmt.Errorf("identity seed is %d bytes; send 1 to %d random bytes", len(id.Seed), MaxIdentitySeed)
	}
	return nil
}

// validInterfaceName applies the kernel's rule (at most 15 bytes, no "/",
// no whitespace), and keeps to printable ASCII besides.
func validInterfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return false
		}
	}
	return true
}

func parseUnicastMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("identity MAC %q is not an Ethernet address like 02:fc:00:00:00:05", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("identity MAC %s is a multicast address; use a unicast one (even first octet)", mac)
	}
	if isZeroBytes(mac) {
		return nil, errors.New("identity MAC is all zeros; use a real unicast address")
	}
	return mac, nil
}

func validateMachineID(s string) error {
	if len(s) != 32 || strings.ToLower(s) != s {
		return fmt.Errorf("identity machine-id %q is not 32 lowercase hex digits", s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("identity machine-id %q is not 32 lowercase hex digits", s)
	}
	if isZeroBytes(b) {
		return errors.New("identity machine-id is all zeros; generate a random one")
	}
	return nil
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Bounds on the host keys a guest reports: OpenSSH makes at most a handful
// (rsa, ecdsa, ed25519; a 16384-bit RSA key is about 2.8 KB in
// authorized_keys form).
const (
	maxReportedHostKeys   = 8
	maxReportedHostKeyLen = 4096
)

// checkIdentityResult refuses an answer the guest could not honestly give
// to id, and returns it with the host keys normalized: the host prints the
// names and pins the keys.
func checkIdentityResult(id Identity, res IdentityResult) (IdentityResult, error) {
	if res.Hostname != id.Hostname {
		return IdentityResult{}, fmt.Errorf("the guest reports hostname %q after being given %q", truncate([]byte(res.Hostname)), id.Hostname)
	}
	if res.Interface != "" && !validInterfaceName(res.Interface) {
		return IdentityResult{}, fmt.Errorf("the guest reports configuring %q, which is not an interface name", truncate([]byte(res.Interface)))
	}
	keys, err := normalizeReportedHostKeys(res.HostKeys)
	if err != nil {
		return IdentityResult{}, err
	}
	res.HostKeys = keys
	return res, nil
}

// normalizeReportedHostKeys refuses a host-key list the guest could not
// honestly have produced — too many keys, an oversized one, or one that is
// not a single SSH public key — and returns the keys re-rendered from their
// parsed form ("type base64", no options or comment), so nothing else the
// guest wrote reaches known_hosts.
func normalizeReportedHostKeys(keys []string) ([]string, error) {
	if len(keys) > maxReportedHostKeys {
		return nil, fmt.Errorf("the guest reported %d SSH host keys, more than the %d allowed", len(keys), maxReportedHostKeys)
	}
	out := make([]string, 0, len(keys))
	for i, k := range keys {
		if len(k) > maxReportedHostKeyLen {
			return nil, fmt.Errorf("the guest's SSH host key %d is %d bytes, more than the %d allowed", i+1, len(k), maxReportedHostKeyLen)
		}
		key, _, _, rest, err := xssh.ParseAuthorizedKey([]byte(k))
		if err != nil || len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("the guest's SSH host key %d (%q) is not one SSH public key", i+1, truncate([]byte(k)))
		}
		out = append(out, strings.TrimSpace(string(xssh.MarshalAuthorizedKey(key))))
	}
	return out, nil
}
