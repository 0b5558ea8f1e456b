package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/banger-dev/banger/test/fcspec"
)

// Firecracker's exit codes (FcExitCode) that the fake can produce.
const (
	exitOK         = 0
	exitGeneric    = 1
	exitArgParsing = 153
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	apiSock   string
	id        string
	logPath   string
	level     string
	showLevel bool
	version   bool
	// Accepted only to refuse them with a clear reason.
	configFile string
	noAPI      bool
	metadata   string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fake-firecracker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.apiSock, "api-sock", "", "path of the API socket to create (required)")
	fs.StringVar(&o.id, "id", "anonymous-instance", "microVM id, reported by GET / and in log lines")
	fs.StringVar(&o.logPath, "log-path", "", "existing file or FIFO for the VMM log")
	fs.StringVar(&o.level, "level", "", "log level: Error, Warning, Info, Debug, Trace or Off")
	fs.BoolVar(&o.showLevel, "show-level", false, "show the level in log lines")
	fs.BoolVar(&o.version, "version", false, "print the Firecracker version this fake imitates")
	fs.StringVar(&o.configFile, "config-file", "", "not supported by the fake")
	fs.BoolVar(&o.noAPI, "no-api", false, "not supported by the fake")
	fs.StringVar(&o.metadata, "metadata", "", "not supported by the fake")
	// Real Firecracker flags that change nothing the fake models.
	for _, name := range []string{"module", "seccomp-filter", "http-api-max-payload-size", "mmds-size-limit",
		"start-time-us", "start-time-cpu-us", "parent-cpu-time-us"} {
		fs.String(name, "", "accepted and ignored")
	}
	for _, name := range []string{"show-log-origin", "boot-timer", "no-seccomp", "enable-pci"} {
		fs.Bool(name, false, "accepted and ignored")
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "fake-firecracker: Arguments parsing error: %v\n", err)
		return exitArgParsing
	}
	if opts.version {
		fmt.Fprintf(stdout, "Firecracker v%s\n", fcVersion)
		return exitOK
	}
	switch {
	case opts.configFile != "", opts.noAPI, opts.metadata != "":
		fmt.Fprintln(stderr, "fake-firecracker: --config-file, --no-api and --metadata are not supported by the fake; configure the VM through the API socket")
		return exitGeneric
	case opts.apiSock == "":
		fmt.Fprintln(stderr, "fake-firecracker: --api-sock is required (the fake never falls back to /run/firecracker.socket)")
		return exitArgParsing
	}

	vmmLog := newVMMLog(opts.id, stderr)
	if opts.logPath != "" || opts.level != "" {
		if err := vmmLog.configure(opts.logPath, opts.level, opts.showLevel); err != nil {
			fmt.Fprintf(stderr, "fake-firecracker: Failed to initialize logger: %s: %s\n", opts.logPath, osError(err))
			return exitGeneric
		}
	}
	vmmLog.logf(levelInfo, "Running Firecracker v%s", fcVersion)

	spec, err := loadSpec()
	if err != nil {
		fmt.Fprintf(stderr, "fake-firecracker: %v\n", err)
		return exitGeneric
	}
	ln, err := net.Listen("unix", opts.apiSock)
	if err != nil {
		fmt.Fprintf(stderr, "fake-firecracker: Failed to open the API socket at: %s. Check that it is not already used. (%s)\n", opts.apiSock, osError(err))
		return exitGeneric
	}
	return serve(ln, opts, spec, vmmLog, stdout, stderr)
}

// loadSpec finds and loads the official Firecracker API description. The
// fake refuses to run without it: an unvalidated fake would accept requests
// the real Firecracker rejects, which is the one thing it must not do. The
// fake starts once per VM, so the compiled spec is cached (keyed by the
// spec's hash; see fcspec.Load), and fcspec links no OpenAPI library: with
// kin-openapi, package init and spec load were ≈17 ms of a ≈21 ms start.
func loadSpec() (*fcspec.Validator, error) {
	path, err := fcspec.SpecPath()
	if err != nil {
		return nil, fmt.Errorf("cannot validate API requests: %w", err)
	}
	return fcspec.Load(path, fcspec.DefaultCacheDir())
}

type exitRequest struct {
	code   int
	reason string
}

// serve runs the API until the guest ends, a simulated crash, or a signal,
// then tears everything down.
func serve(ln net.Listener, opts options, spec *fcspec.Validator, vmmLog *vmmLog, stdout, stderr io.Writer) int {
	exits := make(chan exitRequest, 1)
	requestExit := func(code int, reason string) {
		select {
		case exits <- exitRequest{code, reason}:
		default:
		}
	}
	vm := newMicroVM(opts.id, opts.apiSock, stdout, stderr, vmmLog, requestExit)
	srv := &http.Server{
		Handler:  &apiServer{vm: vm, spec: spec, log: vmmLog},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.Serve(ln) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	var (
		code   int
		caught os.Signal
	)
	select {
	case req := <-exits:
		code = req.code
		fmt.Fprintf(stderr, "fake-firecracker: exiting with code %d: %s\n", code, req.reason)
	case caught = <-signals:
		fmt.Fprintf(stderr, "fake-firecracker: %v received; stopping the guest\n", caught)
	}
	if code == exitOK {
		vmmLog.logf(levelInfo, "Firecracker exiting successfully. exit_code=%d", code)
	} else {
		vmmLog.logf(levelError, "Firecracker exiting with error. exit_code=%d", code)
	}

	// Let a response in flight (the 204 to SendCtrlAltDel) reach its client;
	// closing the listener also unlinks the API socket.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = srv.Shutdown(ctx)
	cancel()
	_ = srv.Close()
	vm.shutdown()

	if sig, ok := caught.(syscall.Signal); ok {
		dieBySignal(sig)
		return 128 + int(sig)
	}
	return code
}

// dieBySignal ends the process by sig with the default disposition, so the
// parent sees "killed by signal" exactly as for Firecracker, which installs
// no SIGTERM/SIGINT handler. The fake only caught it to clean up first.
func dieBySignal(sig syscall.Signal) {
	signal.Reset(sig)
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second)
}
