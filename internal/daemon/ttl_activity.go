package daemon

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// tcpEstablished is the ESTABLISHED state in /proc/net/tcp.
const tcpEstablished = "01"

// hostConnected reports whether a TCP connection from this host to the
// VM's address is open: an ssh session, a port forward's connection to
// the guest. Such a VM is not idle, whatever the daemon saw.
func (m *vmManager) hostConnected(ctx context.Context, id string) bool {
	l, err := m.store.GetLease(ctx, id)
	if err != nil {
		return false
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		m.log.Debug("read TCP connections", "err", err)
		return false
	}
	defer func() { _ = f.Close() }()
	return connectedTo(f, l.IP)
}

// connectedTo reads a /proc/net/tcp table and reports whether any
// established connection's remote address is addr. Addresses are hex in
// the kernel's byte order ("0200A8C0:0016" is 192.168.0.2:22 on a
// little-endian machine).
func connectedTo(table io.Reader, addr netip.Addr) bool {
	want := addr.As4()
	sc := bufio.NewScanner(table)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpEstablished {
			continue
		}
		host, _, ok := strings.Cut(fields[2], ":")
		n, err := strconv.ParseUint(host, 16, 32)
		if !ok || err != nil || len(host) != 8 {
			continue
		}
		// The kernel prints the network-order address as a native 32-bit
		// integer, so writing it back natively gives the address's bytes.
		var got [4]byte
		binary.NativeEndian.PutUint32(got[:], uint32(n))
		if got == want {
			return true
		}
	}
	return false
}
