package agent

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Kernel command-line parameters the agent reads. The host puts them on the
// command line so one image works on every VMM and needs no per-VM edits.
const (
	ParamName         = "banger.name"          // hostname: a DNS label
	ParamIP           = "banger.ip"            // IPv4 address with prefix: 172.30.0.5/24
	ParamGateway      = "banger.gw"            // default gateway: 172.30.0.1
	ParamDNS          = "banger.dns"           // resolvers, comma-separated
	ParamDomain       = "banger.domain"        // search domain for resolv.conf
	ParamMTU          = "banger.mtu"           // interface MTU
	ParamInterface    = "banger.iface"         // interface to configure; the first non-loopback one when absent
	ParamAgentPort    = PortBootArg            // vsock port
	ParamAgentChannel = "banger.agent_channel" // "vsock" (default), "serial", or "serial:/dev/PATH"
)

// DefaultSerialPort is the virtio-serial port the agent uses on the serial
// channel (QEMU names it with virtserialport,name=banger).
const DefaultSerialPort = "/dev/virtio-ports/banger"

// BootParams are the banger.* parameters of a kernel command line.
type BootParams struct {
	Hostname  string
	Address   netip.Prefix
	Gateway   netip.Addr
	DNS       []netip.Addr
	Domain    string
	MTU       int
	Interface string
	AgentPort uint32
	// AgentChannel is "vsock" or "serial:<device path>".
	AgentChannel string
}

var labelPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ParseBootParams reads banger.* parameters from a kernel command line;
// others are ignored. A present but invalid value is an error rather than a
// silent default: a guest on the wrong port or address looks exactly like
// one that never booted.
func ParseBootParams(cmdline string) (BootParams, error) {
	p := BootParams{AgentPort: DefaultPort, AgentChannel: "vsock"}
	for _, field := range strings.Fields(cmdline) {
		key, value, ok := strings.Cut(field, "=")
		if !ok || !strings.HasPrefix(key, "banger.") {
			continue
		}
		bad := func(want string) error {
			return fmt.Errorf("kernel parameter %s=%q is not %s", key, value, want)
		}
		switch key {
		case ParamName:
			if !labelPattern.MatchString(value) {
				return p, bad("a hostname (lowercase letters, digits and dashes)")
			}
			p.Hostname = value
		case ParamIP:
			pfx, err := netip.ParsePrefix(value)
			if err != nil || !pfx.Addr().Is4() {
				return p, bad("an IPv4 address with prefix length, like 172.30.0.5/24")
			}
			p.Address = pfx
		case ParamGateway:
			a, err := netip.ParseAddr(value)
			if err != nil || !a.Is4() {
				return p, bad("an IPv4 address")
			}
			p.Gateway = a
		case ParamDNS:
			p.DNS = nil
			for _, s := range strings.Split(value, ",") {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return p, bad("a comma-separated list of IP addresses")
				}
				p.DNS = append(p.DNS, a)
			}
		case ParamDomain:
			for _, label := range strings.Split(value, ".") {
				if !labelPattern.MatchString(label) {
					return p, bad("a domain name")
				}
			}
			p.Domain = value
		case ParamMTU:
			mtu, err := strconv.Atoi(value)
			if err != nil || mtu < 576 || mtu > 65535 {
				return p, bad("an MTU between 576 and 65535")
			}
			p.MTU = mtu
		case ParamInterface:
			if !validInterfaceName(value) {
				return p, bad("an interface name")
			}
			p.Interface = value
		case ParamAgentPort:
			port, err := strconv.ParseUint(value, 10, 32)
			if err != nil || port == 0 {
				return p, bad("a port number")
			}
			p.AgentPort = uint32(port)
		case ParamAgentChannel:
			switch {
			case value == "vsock":
				p.AgentChannel = value
			case value == "serial":
				p.AgentChannel = "serial:" + DefaultSerialPort
			case strings.HasPrefix(value, "serial:/dev/"):
				p.AgentChannel = value
			default:
				return p, bad(`"vsock", "serial" or "serial:/dev/PATH"`)
			}
		}
	}
	return p, nil
}

// Args renders p as kernel command-line parameters, the inverse of
// ParseBootParams, for the host building a command line. Zero fields are
// left out.
func (p BootParams) Args() []string {
	var out []string
	add := func(k, v string) { out = append(out, k+"="+v) }
	if p.Hostname != "" {
		add(ParamName, p.Hostname)
	}
	if p.Address.IsValid() {
		add(ParamIP, p.Address.String())
	}
	if p.Gateway.IsValid() {
		add(ParamGateway, p.Gateway.String())
	}
	if len(p.DNS) > 0 {
		s := make([]string, len(p.DNS))
		for i, a := range p.DNS {
			s[i] = a.String()
		}
		add(ParamDNS, strings.Join(s, ","))
	}
	if p.Domain != "" {
		add(ParamDomain, p.Domain)
	}
	if p.MTU != 0 {
		add(ParamMTU, strconv.Itoa(p.MTU))
	}
	if p.Interface != "" {
		add(ParamInterface, p.Interface)
	}
	if p.AgentPort != 0 {
		add(ParamAgentPort, strconv.FormatUint(uint64(p.AgentPort), 10))
	}
	if p.AgentChannel != "" {
		add(ParamAgentChannel, p.AgentChannel)
	}
	return out
}

// ListenAddr is the agent's listen address for these parameters:
// "vsock:PORT" or "serial:/dev/PATH".
func (p BootParams) ListenAddr() string {
	if strings.HasPrefix(p.AgentChannel, "serial:") {
		return p.AgentChannel
	}
	return fmt.Sprintf("vsock:%d", p.AgentPort)
}

// PortFromBootArgs returns the agent port named by banger.agent_port in a
// kernel command line, or DefaultPort when the parameter is absent.
func PortFromBootArgs(cmdline string) (uint32, error) {
	for _, field := range strings.Fields(cmdline) {
		value, ok := strings.CutPrefix(field, PortBootArg+"=")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(value, 10, 32)
		if err != nil || port == 0 {
			return 0, fmt.Errorf("kernel parameter %s=%q is not a port number", PortBootArg, value)
		}
		return uint32(port), nil
	}
	return DefaultPort, nil
}
