package firewall

import (
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Registers. Single values use the 16-byte register 1. A concatenation
// (tap . MAC . address) is loaded into consecutive 32-bit registers, each
// field padded to 4 bytes, starting where register 1 starts: the interface
// name fills NFT_REG32_00–03, the MAC 04–05, the IPv4 address 06.
const (
	reg       = unix.NFT_REG_1
	regIfname = unix.NFT_REG32_00
	regMAC    = unix.NFT_REG32_04
	regAddr   = unix.NFT_REG32_06
)

// Offsets of the IPv4 source and destination in the network header.
const (
	offSaddr = 12
	offDaddr = 16
)

const icmpEchoRequest = 8

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname is an interface name as nftables compares it: NUL-padded to
// IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func iif(name string, op expr.CmpOp) []expr.Any {
	return metaCmp(expr.MetaKeyIIFNAME, op, ifname(name))
}

func oif(name string, op expr.CmpOp) []expr.Any {
	return metaCmp(expr.MetaKeyOIFNAME, op, ifname(name))
}

// metaNotIn matches packets whose meta key (an interface name) is not in
// set.
func metaNotIn(key expr.MetaKey, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg},
		&expr.Lookup{SourceRegister: reg, SetName: set.Name, SetID: set.ID, Invert: true},
	}
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg},
		&expr.Cmp{Op: op, Register: reg, Data: data},
	}
}

// addrIn matches (CmpOpEq) or excludes (CmpOpNeq) IPv4 addresses at offset
// (offSaddr, offDaddr) in p.
func addrIn(offset uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	a := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg, Data: a[:]},
	}
}

// addrIs matches the IPv4 address at offset against a.
func addrIs(offset uint32, a netip.Addr) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: b[:]},
	}
}

// addrLookup matches when the IPv4 address at offset is in set.
func addrLookup(offset uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: reg, SetName: set.Name, SetID: set.ID},
	}
}

func metaLookup(key expr.MetaKey, set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg},
		&expr.Lookup{SourceRegister: reg, SetName: set.Name, SetID: set.ID},
	}
}

// etherType matches the frame's EtherType. A VLAN tag counts as its own
// EtherType (0x8100), so tagged frames never match IPv4 or ARP.
func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.BigEndian.PutUint16(t)},
	}
}

// arpIsEthernetIPv4 matches ARP packets for Ethernet and IPv4 (hardware
// type 1, protocol 0x0800, address lengths 6 and 4), the only layout in
// which arpSha and arpSpa read the sender's addresses.
func arpIsEthernetIPv4() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{0, 1, 0x08, 0x00, 6, 4}},
	}
}

// pinned matches when (input port, MAC, IPv4 address) is one of the
// bindings in set; mac and addr load the frame's fields into regMAC and
// regAddr (etherSaddr or arpSha; ipv4Saddr or arpSpa).
func pinned(set *nftables.Set, mac, addr expr.Any) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regIfname},
		mac,
		addr,
		&expr.Lookup{SourceRegister: regIfname, SetName: set.Name, SetID: set.ID},
	}
}

func etherSaddr() expr.Any {
	return &expr.Payload{DestRegister: regMAC, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}
}

func ipv4Saddr() expr.Any {
	return &expr.Payload{DestRegister: regAddr, Base: expr.PayloadBaseNetworkHeader, Offset: offSaddr, Len: 4}
}

// arpSha is the ARP sender hardware address.
func arpSha() expr.Any {
	return &expr.Payload{DestRegister: regMAC, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6}
}

// arpSpa is the ARP sender protocol (IPv4) address.
func arpSpa() expr.Any {
	return &expr.Payload{DestRegister: regAddr, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4}
}

func l4Proto(p uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{p}},
	}
}

// dport matches the UDP or TCP destination port; l4Proto must come first.
func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// icmpType matches the ICMP type; l4Proto(IPPROTO_ICMP) must come first.
func icmpType(t uint8) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{t}},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg, Key: expr.CtKeySTATE},
		&expr.Bitwise{
			SourceRegister: reg, DestRegister: reg, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
