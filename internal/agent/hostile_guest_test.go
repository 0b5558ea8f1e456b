package agent_test

// The hostile-guest tier: the host side of the agent protocol against a
// guest that lies (package agenttest). Everything here must hold whatever
// the guest sends.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/agent/agenttest"
)

func hostileCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// socketPair is a connected unix stream pair. With small set its buffers
// are the smallest the kernel allows, so a peer that does not read blocks
// the other's writes after a few KiB, as a guest that stops reading does.
func socketPair(t *testing.T, small bool) (host, guest net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		if small {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1)
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1)
		}
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns[0], conns[1]
}

// countingConn counts the bytes the host has read from the guest.
type countingConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// hostileSession starts b on the guest end and a host client on the other.
func hostileSession(t *testing.T, b agenttest.Behaviour) (*agent.Client, *countingConn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hostEnd, guest := socketPair(t, b.PingFlood > 0)
	host := &countingConn{Conn: hostEnd}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.ServeConn(ctx, guest) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := agent.NewClient(hostileCtx(t), host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, host
}

// waitFlood returns once the host has read the guest's whole raw flood
// (after its hello: at least that many bytes).
func waitFlood(t *testing.T, host *countingConn, b agenttest.Behaviour) {
	t.Helper()
	ctx := hostileCtx(t)
	for host.read.Load() < b.FloodBytes() {
		select {
		case <-ctx.Done():
			t.Fatalf("host read %d of the %d flood bytes", host.read.Load(), b.FloodBytes())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type usage struct {
	goroutines int
	bytes      uint64 // heap plus goroutine stacks
}

func measure() usage {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{goroutines: runtime.NumGoroutine(), bytes: ms.HeapAlloc + ms.StackInuse}
}

// checkBounded fails if the host grew by more than a few goroutines or MiB.
func checkBounded(t *testing.T, before, after usage) {
	t.Helper()
	const maxGoroutines, maxBytes = 20, 8 << 20
	t.Logf("goroutines %d → %d, heap+stacks %.1f → %.1f MiB", before.goroutines, after.goroutines,
		float64(before.bytes)/(1<<20), float64(after.bytes)/(1<<20))
	if after.goroutines > before.goroutines+maxGoroutines {
		t.Errorf("host goroutines grew from %d to %d", before.goroutines, after.goroutines)
	}
	if after.bytes > before.bytes+maxBytes {
		t.Errorf("host memory grew by %.1f MiB", float64(after.bytes-before.bytes)/(1<<20))
	}
}

// TestHostileGuestPingFlood: pings the guest sends without reading the
// answers cost the host at most one answer in flight.
func TestHostileGuestPingFlood(t *testing.T) {
	before := measure()
	b := agenttest.Behaviour{PingFlood: 20000}
	_, host := hostileSession(t, b)
	waitFlood(t, host, b)
	checkBounded(t, before, measure())
}

// TestHostileGuestOpensStreams: streams the guest opens, with data, are
// dropped rather than queued for an accept that never comes.
func TestHostileGuestOpensStreams(t *testing.T) {
	before := measure()
	b := agenttest.Behaviour{GuestStreams: 200, GuestStreamData: 200 << 10}
	_, host := hostileSession(t, b)
	waitFlood(t, host, b)
	checkBounded(t, before, measure())
}

// TestHostileGuestVersionVerbatim shows the stand-in hands the host any
// string it likes (for the tests that make the host render it safely).
func TestHostileGuestVersionVerbatim(t *testing.T) {
	lie := "v1\x1b]0;owned\x07\n\r"
	c, _ := hostileSession(t, agenttest.Behaviour{Version: lie, Hostname: lie})
	info, err := c.Health(hostileCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.AgentVersion != lie || info.Hostname != lie {
		t.Fatalf("health = %q, want the stand-in's strings verbatim", info)
	}
}

func hostileGet(t *testing.T, b agenttest.Behaviour, dest string, tr agent.TreeReceiver) (agent.CopyResult, error) {
	t.Helper()
	c, _ := hostileSession(t, b)
	return c.Get(hostileCtx(t), agent.GetRequest{Path: "/x"}, dest, tr)
}

func modeOf(t *testing.T, p string) fs.FileMode {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

// hostileModes is a tree whose every mode is one a guest should not get.
var hostileModes = []agenttest.File{
	{Path: "", Type: agent.EntryDir, Mode: 0o777},
	{Path: "suid", Mode: 0o4777, Data: []byte("#!/bin/sh\nid\n")},
	{Path: "sgid", Mode: 0o2755, Data: []byte("x")},
	{Path: "open", Type: agent.EntryDir, Mode: 0o1777},
	{Path: "open/f", Mode: 0o666, Data: []byte("y")},
}

// TestHostileGuestCopyModes: a copy out of the guest is written as `cp -r`
// writes one: modes less the umask, no setuid/setgid/sticky.
func TestHostileGuestCopyModes(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := hostileGet(t, agenttest.Behaviour{Tree: hostileModes}, dest, agent.TreeReceiver{Umask: 0o077}); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]fs.FileMode{
		"":       fs.ModeDir | 0o700,
		"suid":   0o700,
		"sgid":   0o700,
		"open":   fs.ModeDir | 0o700,
		"open/f": 0o600,
	} {
		if got := modeOf(t, filepath.Join(dest, rel)); got != want {
			t.Errorf("%q: mode %v, want %v", rel, got, want)
		}
	}
}

// TestHostileGuestCopyKeepSpecial: special bits only when asked for.
func TestHostileGuestCopyKeepSpecial(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "out")
	tr := agent.TreeReceiver{Umask: 0o022, KeepSpecial: true}
	if _, err := hostileGet(t, agenttest.Behaviour{Tree: hostileModes}, dest, tr); err != nil {
		t.Fatal(err)
	}
	if got, want := modeOf(t, filepath.Join(dest, "suid")), fs.ModeSetuid|0o755; got != want {
		t.Errorf("suid: mode %v, want %v", got, want)
	}
}

// TestHostileGuestCopyExistingDir: a directory already at the destination
// keeps its mode.
func TestHostileGuestCopyExistingDir(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(dest, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := hostileGet(t, agenttest.Behaviour{Tree: hostileModes}, dest, agent.TreeReceiver{Umask: 0o022}); err != nil {
		t.Fatal(err)
	}
	if got := modeOf(t, dest); got != fs.ModeDir|0o700 {
		t.Errorf("existing destination is now %v, want it left at drwx------", got)
	}
}

// TestHostileGuestCopyPreserveAsRoot: with the owners kept (root, -p), a
// guest's setuid-root file still loses its setuid bit.
func TestHostileGuestCopyPreserveAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to chown")
	}
	dest := filepath.Join(t.TempDir(), "out")
	tree := []agenttest.File{{Path: "", Mode: 0o4755, UID: 0, GID: 0, Data: []byte("x")}}
	tr := agent.TreeReceiver{Umask: 0o022, Owner: func(e agent.Entry) (int, int) { return e.UID, e.GID }}
	if _, err := hostileGet(t, agenttest.Behaviour{Tree: tree}, dest, tr); err != nil {
		t.Fatal(err)
	}
	if got := modeOf(t, dest); got != 0o755 {
		t.Errorf("mode %v, want -rwxr-xr-x (no setuid)", got)
	}
}

// TestHostileGuestCopyBadOwner: an owner id that chown would wrap to a real
// one is refused.
func TestHostileGuestCopyBadOwner(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "out")
	tree := []agenttest.File{{Path: "", Mode: 0o644, UID: -2, GID: 0, Data: []byte("x")}}
	_, err := hostileGet(t, agenttest.Behaviour{Tree: tree}, dest, agent.TreeReceiver{})
	if err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("err = %v, want the owner refused", err)
	}
}

// leftovers lists what a failed copy left in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestHostileGuestCopyStalls: a guest that stops sending mid-file fails
// the copy after the idle timeout and leaves no temp file.
func TestHostileGuestCopyStalls(t *testing.T) {
	dir := t.TempDir()
	b := agenttest.Behaviour{StallAfter: 1000, Tree: []agenttest.File{{Path: "", Mode: 0o644, Size: 1 << 20}}}
	errc := make(chan error, 1)
	go func() {
		_, err := hostileGet(t, b, filepath.Join(dir, "out"), agent.TreeReceiver{IdleTimeout: 300 * time.Millisecond})
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, agent.ErrCopyStalled) {
			t.Fatalf("err = %v, want the stall reported", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("copy from a stalled guest still hangs after 30s")
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("the failed copy left %v", l)
	}
}

// TestHostileGuestCopyCancelled: cancelling a copy from a stalled guest
// leaves no temp file.
func TestHostileGuestCopyCancelled(t *testing.T) {
	dir := t.TempDir()
	b := agenttest.Behaviour{StallAfter: 1000, Tree: []agenttest.File{{Path: "", Mode: 0o644, Size: 1 << 20}}}
	c, _ := hostileSession(t, b)
	ctx, cancel := context.WithCancel(hostileCtx(t))
	tr := agent.TreeReceiver{Progress: func(int) { cancel() }}
	if _, err := c.Get(ctx, agent.GetRequest{Path: "/x"}, filepath.Join(dir, "out"), tr); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Errorf("the cancelled copy left %v", l)
	}
}

// TestHostileGuestCopyCaps: byte and entry caps stop a guest that sends
// more than asked for, and nothing of the copy stays behind.
func TestHostileGuestCopyCaps(t *testing.T) {
	many := []agenttest.File{{Path: "", Type: agent.EntryDir, Mode: 0o755}}
	for i := range 50 {
		many = append(many, agenttest.File{Path: "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Mode: 0o644, Data: []byte("x")})
	}
	for _, tt := range []struct {
		name string
		tree []agenttest.File
		tr   agent.TreeReceiver
		want string
	}{
		{"bytes", []agenttest.File{{Path: "", Mode: 0o644, Size: 1 << 40}}, agent.TreeReceiver{MaxBytes: 1 << 20}, "may write at most"},
		{"entries", many, agent.TreeReceiver{MaxEntries: 10}, "more than 10 entries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := hostileGet(t, agenttest.Behaviour{Tree: tt.tree}, filepath.Join(dir, "out"), tt.tr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if l := leftovers(t, dir); len(l) > 0 {
				t.Errorf("the refused copy left %v", l)
			}
		})
	}
}

// TestHostileGuestCopyFillsDisk: on a real 64 MiB tmpfs, a copy stops
// before it would leave less than the reserve free, even when the space
// goes while it writes (another writer fills the disk after its first
// chunk).
func TestHostileGuestCopyFillsDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })

	t.Run("before", func(t *testing.T) {
		b := agenttest.Behaviour{Tree: []agenttest.File{{Path: "", Mode: 0o644, Size: 60 << 20}}}
		tr := agent.TreeReceiver{CheckSpace: true, SpaceReserve: 8 << 20}
		_, err := hostileGet(t, b, filepath.Join(dir, "big"), tr)
		if err == nil || !strings.Contains(err.Error(), "free") {
			t.Fatalf("err = %v, want the copy refused for space", err)
		}
	})
	t.Run("during", func(t *testing.T) {
		filler := filepath.Join(dir, "filler")
		fill := func(int) {
			if _, err := os.Stat(filler); err == nil {
				return
			}
			if err := os.WriteFile(filler, make([]byte, 20<<20), 0o600); err != nil {
				t.Error(err)
			}
		}
		b := agenttest.Behaviour{Tree: []agenttest.File{{Path: "", Mode: 0o644, Size: 40 << 20}}}
		tr := agent.TreeReceiver{CheckSpace: true, SpaceReserve: 8 << 20, Progress: fill}
		_, err := hostileGet(t, b, filepath.Join(dir, "big"), tr)
		if err == nil || !strings.Contains(err.Error(), "free") {
			t.Fatalf("err = %v, want the copy stopped for space", err)
		}
		if l := leftovers(t, dir); len(l) != 1 {
			t.Errorf("the stopped copy left %v beside the filler", l)
		}
	})
}

// validIdentity is an identity every check accepts.
func validIdentity() agent.Identity {
	return agent.Identity{
		Hostname:  "fork-1",
		MAC:       "02:fc:00:00:00:09",
		Address:   netip.MustParsePrefix("172.30.0.9/24"),
		Gateway:   netip.MustParseAddr("172.30.0.1"),
		MachineID: "0123456789abcdef0123456789abcdef",
		Seed:      bytes.Repeat([]byte{7}, 32),
	}
}

// TestHostileGuestIdentityHostKeys: the host keys a guest reports after
// reidentify go to known_hosts, so the host takes only a few, small, real
// SSH public keys, re-rendered without options or comments.
func TestHostileGuestIdentityHostKeys(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	good := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	for _, tt := range []struct {
		name string
		keys []string
		want string // error substring; "" = accepted
	}{
		{"one good key", []string{good}, ""},
		{"too many keys", slices.Repeat([]string{good}, 9), "9 SSH host keys"},
		{"huge key", []string{good + " " + strings.Repeat("x", 5000)}, "more than the 4096 allowed"},
		{"not a key", []string{"ssh-ed25519 bm90IGEga2V5"}, "is not one SSH public key"},
		{"two keys in one", []string{good + "\n" + good}, "is not one SSH public key"},
		{"garbage", []string{"\x1b]0;owned\x07"}, "is not one SSH public key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := hostileSession(t, agenttest.Behaviour{Hostname: "fork-1", IdentityHostKeys: tt.keys})
			res, err := c.Reidentify(hostileCtx(t), validIdentity())
			if tt.want == "" {
				if err != nil || len(res.HostKeys) != 1 || res.HostKeys[0] != good {
					t.Fatalf("Reidentify = %+v, %v; want the key back", res, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Reidentify = %+v, %v; want an error with %q", res, err, tt.want)
			}
		})
	}
	// Options and a comment around a real key are dropped.
	c, _ := hostileSession(t, agenttest.Behaviour{Hostname: "fork-1", IdentityHostKeys: []string{`command="rm -rf /" ` + good + " evil\x1b[2J"}})
	res, err := c.Reidentify(hostileCtx(t), validIdentity())
	if err != nil || len(res.HostKeys) != 1 || res.HostKeys[0] != good {
		t.Fatalf("Reidentify = %q, %v; want only %q", res.HostKeys, err, good)
	}
	// A guest that claims another name (or any terminal escape) is refused.
	c, _ = hostileSession(t, agenttest.Behaviour{Hostname: "fork-1\x1b]0;owned\x07", IdentityHostKeys: []string{good}})
	if _, err := c.Reidentify(hostileCtx(t), validIdentity()); err == nil || !strings.Contains(err.Error(), "reports hostname") {
		t.Fatalf("Reidentify with a lying hostname = %v", err)
	}
}
