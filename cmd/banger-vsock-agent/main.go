// Command banger-vsock-agent is the guest agent: it runs as root inside every
// banger VM, applies the guest setup named on the kernel command line
// (hostname, address, route, resolvers), and serves the host over vsock or
// the virtio-serial port: readiness, guest info and SSH host keys, exec with
// streamed stdio, file copy, authorized keys, power off, and a new identity
// for a guest restored from another VM's snapshot.
//
// Usage:
//
//	banger-vsock-agent [--listen vsock:PORT | serial:/dev/PATH | unix:PATH] [--root DIR] [--setup auto|on|off]
//	banger-vsock-agent --version
//
// Without --listen the channel comes from the kernel command line
// (banger.agent_channel, banger.agent_port): vsock port 1024 by default;
// when AF_VSOCK is unusable and /dev/virtio-ports/banger exists, the serial
// port is used instead.
//
// unix:PATH makes the agent a stand-in guest (the fake Firecracker runs it
// that way on hosts without a hypervisor). A stand-in is an ordinary host
// process, so it behaves as a guest without touching the host: file copies,
// authorized_keys and SSH host keys live under --root (default: a "root"
// directory next to the socket), guest setup writes only there and never
// changes the host's network or hostname, its kernel command line is
// $BANGER_FAKE_BOOT_ARGS, and power off or reboot just ends the process.
// SIGTERM or SIGINT stops the agent with exit code 0.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/buildinfo"
)

const program = "banger-vsock-agent"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options is the parsed command line.
type options struct {
	listen string
	root   string
	setup  string
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet(program, flag.ContinueOnError)
	flags.SetOutput(stderr)
	showVersion := flags.Bool("version", false, "print the version and exit")
	var opts options
	flags.StringVar(&opts.listen, "listen", "", "vsock:PORT, serial:/dev/PATH or unix:PATH (default: from the kernel command line)")
	flags.StringVar(&opts.root, "root", "", "directory guest files live in (default: / in a guest, a scratch dir for a unix: stand-in)")
	flags.StringVar(&opts.setup, "setup", "auto", "apply banger.* guest setup: auto (yes in a guest, files only for a stand-in), on, off")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", program, flags.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.Current().Line(program))
		return 0
	}
	switch opts.setup {
	case "auto", "on", "off":
	default:
		fmt.Fprintf(stderr, "%s: --setup must be auto, on or off, got %q\n", program, opts.setup)
		return 2
	}

	logf := func(format string, args ...any) { fmt.Fprintf(stderr, program+": "+format+"\n", args...) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, stop, opts, logf); err != nil {
		logf("%v", err)
		return 1
	}
	return 0
}

// serve sets the guest up and serves the host until ctx ends.
func serve(ctx context.Context, stop func(), opts options, logf func(string, ...any)) error {
	standIn := strings.HasPrefix(opts.listen, "unix:")
	var cmdline string
	if standIn {
		cmdline = os.Getenv("BANGER_FAKE_BOOT_ARGS")
	} else {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read kernel command line: %w", err)
		}
		cmdline = string(b)
	}
	params, err := agent.ParseBootParams(cmdline)
	if err != nil {
		return err
	}

	srv := &agent.Server{Version: buildinfo.Current().Version, Logf: logf, Root: opts.root}
	setup := agent.GuestSetup{Root: opts.root}
	if standIn {
		sock := strings.TrimPrefix(opts.listen, "unix:")
		if srv.Root == "" {
			srv.Root = filepath.Join(filepath.Dir(sock), "root")
		}
		if err := os.MkdirAll(srv.Root, 0o755); err != nil {
			return fmt.Errorf("stand-in root: %w", err)
		}
		setup.Root = srv.Root
		srv.Hostname = standInHostname(srv.Root)
		srv.HostKeyEntropy = func() io.Reader { return standInEntropy(sock) }
		// A stand-in's "guest" is this process: powering off ends it, and
		// the fake Firecracker exits with its guest.
		srv.Power = func(string) error { stop(); return nil }
	} else {
		srv.Power = agent.SystemPower
		setup.SetHostname = agent.SetKernelHostname
		setup.AddEntropy = agent.AddKernelEntropy
		setup.SetClock = agent.SetSystemClock
		// Route netlink only: the default also opens XFRM and netfilter
		// sockets, which fail in guests without xfrm_user/nfnetlink loaded
		// and no modprobe to load them (the busybox image).
		if h, err := netlink.NewHandle(unix.NETLINK_ROUTE); err == nil {
			defer h.Close()
			setup.Net = agent.NetlinkNetwork{Handle: h}
		} else {
			logf("netlink unavailable, skipping network setup: %v", err)
		}
	}
	// A new identity (OpIdentity, after a restore from a snapshot) goes
	// through the same setup, --setup off included: the host asks for it.
	srv.Setup = &setup
	if opts.setup != "off" {
		if err := setup.Apply(params); err != nil {
			// Serve anyway: the host can still get in and look.
			logf("guest setup: %v", err)
		}
	}

	addr := opts.listen
	if addr == "" {
		addr = params.ListenAddr()
	}
	return listenAndServe(ctx, srv, addr, logf)
}

func listenAndServe(ctx context.Context, srv *agent.Server, addr string, logf func(string, ...any)) error {
	if path, ok := strings.CutPrefix(addr, "serial:"); ok {
		return serveSerial(ctx, srv, path, logf)
	}
	ln, err := agent.Listen(addr)
	if err != nil {
		// QEMU without vhost-vsock still has the serial port.
		if strings.HasPrefix(addr, "vsock:") && (errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.ENODEV)) {
			if _, serr := os.Stat(agent.DefaultSerialPort); serr == nil {
				logf("vsock unavailable (%v); using %s", err, agent.DefaultSerialPort)
				return serveSerial(ctx, srv, agent.DefaultSerialPort, logf)
			}
		}
		return err
	}
	// Closing the listener is how Serve is told to stop; it then ends the
	// sessions and returns nil, so a requested shutdown exits 0.
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	logf("listening on %s", addr)
	return srv.Serve(ln)
}

// serveSerial waits for the port to appear (udev may create the
// /dev/virtio-ports link after the agent starts), then serves it, reopening
// it whenever the host end hangs up.
func serveSerial(ctx context.Context, srv *agent.Server, path string, logf func(string, ...any)) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		path = agent.ResolveSerialPort(path)
		if _, err := os.Stat(path); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	logf("serving on %s", path)
	return srv.ServeChannel(ctx, func() (agent.Channel, error) {
		return agent.OpenChannel(path)
	})
}

// standInHostname reports the stand-in's own name, the one guest setup (or
// a new identity) wrote under its root, rather than the host's.
func standInHostname(root string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(filepath.Join(root, "etc", "hostname"))
		if err != nil {
			return os.Hostname()
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// standInEntropy seeds a stand-in guest's SSH host key. A stand-in has no
// disk that outlives it, so a random key would change at every boot and the
// host would rightly refuse it. The fake Firecracker tells its guest the
// host side of the VM's vsock, a path that names the VM's ID: stable across
// restarts, new for a recreated VM, which is exactly a real disk's lifetime.
func standInEntropy(sock string) io.Reader {
	identity := os.Getenv("BANGER_FAKE_VSOCK_HOST")
	if identity == "" {
		identity = sock
	}
	return &seedReader{seed: sha256.Sum256([]byte("banger stand-in host key\x00" + identity))}
}

// seedReader is a deterministic byte stream: SHA-256 in counter mode.
type seedReader struct {
	seed    [32]byte
	counter uint64
	buf     []byte
}

func (r *seedReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.buf) == 0 {
			block := sha256.Sum256(append(r.seed[:], byte(r.counter), byte(r.counter>>8)))
			r.counter++
			r.buf = block[:]
		}
		c := copy(p[n:], r.buf)
		r.buf = r.buf[c:]
		n += c
	}
	return n, nil
}
