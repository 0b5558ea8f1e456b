package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// EtcResolvConf is where the host lists its resolvers.
const EtcResolvConf = "/etc/resolv.conf"

// ParseResolvConf returns the nameserver addresses of a resolv.conf, in
// order, ignoring comments, other directives and malformed entries (the
// libc resolver ignores those too). IPv6 zones ("fe80::1%eth0") are kept.
func ParseResolvConf(r io.Reader) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, a.Unmap())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	return out, nil
}

// ResolvConf is an UpstreamSource reading the host's resolv.conf. It
// re-reads the file whenever it changes, so guests follow the host across
// network changes (a laptop moving between networks, a VPN coming up).
//
// Every listed nameserver is used, on port 53, except those in Exclude.
// A local stub such as systemd-resolved's 127.0.0.53 is kept on purpose:
// forwarding to it cannot loop, because the server answers its own domain
// itself and never forwards it, and resolved only routes that domain back
// to banger (Resolved sets it as a routing-only domain with no default
// route). Through the stub guests also see the host's split DNS (VPN
// domains). What would loop — the server's own address — goes in Exclude.
type ResolvConf struct {
	// Path is the file to read; EtcResolvConf when empty.
	Path string
	// Exclude lists addresses never forwarded to: the server's own.
	Exclude []netip.Addr
	// Logger receives read failures. Default slog.Default().
	Logger *slog.Logger

	mu      sync.Mutex
	modTime time.Time
	size    int64
	cached  []netip.AddrPort
}

// Upstreams implements UpstreamSource. If the file cannot be read the last
// good list is kept.
func (r *ResolvConf) Upstreams() []netip.AddrPort {
	path := r.Path
	if path == "" {
		path = EtcResolvConf
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Stat(path)
	if err == nil && fi.ModTime().Equal(r.modTime) && fi.Size() == r.size && r.cached != nil {
		return r.cached
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(path)
	}
	var addrs []netip.Addr
	if err == nil {
		addrs, err = ParseResolvConf(bytes.NewReader(data))
	}
	if err != nil {
		r.logger().Warn("dns: cannot read upstream resolvers; keeping the previous list", "path", path, "err", err)
		return r.cached
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		if !slices.Contains(r.Exclude, a) {
			out = append(out, netip.AddrPortFrom(a, 53))
		}
	}
	r.modTime, r.size, r.cached = fi.ModTime(), fi.Size(), out
	return out
}

func (r *ResolvConf) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}
