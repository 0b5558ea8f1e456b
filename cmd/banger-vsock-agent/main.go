// Command banger-vsock-agent is the guest agent: it runs as root inside every
// banger VM and answers the host over vsock. Today it answers readiness
// (health); exec, file copy and guest setup arrive with the full protocol.
//
// Usage:
//
//	banger-vsock-agent [--listen vsock:PORT | --listen unix:PATH]
//	banger-vsock-agent --version
//
// Without --listen it listens on the vsock port named by banger.agent_port on
// the kernel command line, or 1024. unix:PATH is for the stand-in guest that
// the fake Firecracker runs on hosts without a hypervisor. SIGTERM or SIGINT
// stops it with exit code 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/buildinfo"
)

const program = "banger-vsock-agent"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet(program, flag.ContinueOnError)
	flags.SetOutput(stderr)
	showVersion := flags.Bool("version", false, "print the version and exit")
	listen := flags.String("listen", "", "listen address, vsock:PORT or unix:PATH (default: vsock port from "+agent.PortBootArg+" on the kernel command line, else 1024)")
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

	addr := *listen
	if addr == "" {
		var err error
		if addr, err = defaultListenAddr("/proc/cmdline"); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", program, err)
			return 1
		}
	}
	ln, err := agent.Listen(addr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 1
	}

	// Closing the listener is how Serve is told to stop; it then waits for
	// replies in flight and returns nil, so a requested shutdown exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()

	fmt.Fprintf(stderr, "%s: listening on %s\n", program, addr)
	srv := &agent.Server{
		Version: buildinfo.Current().Version,
		Logf:    func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) },
	}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return 1
	}
	return 0
}

// defaultListenAddr derives the vsock address from the kernel command line,
// so an image's service unit can start the agent with no arguments and still
// follow the port the host chose.
func defaultListenAddr(cmdlinePath string) (string, error) {
	cmdline, err := os.ReadFile(cmdlinePath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read kernel command line: %w", err)
	}
	port, err := agent.PortFromBootArgs(string(cmdline))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("vsock:%d", port), nil
}
