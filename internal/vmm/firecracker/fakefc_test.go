package firecracker

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/banger-dev/banger/internal/vmm/vmmproc/logcaptest"
	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// The driver tests run this test binary as a stand-in firecracker (the
// GO_WANT_HELPER_PROCESS pattern): it serves the API on --api-sock,
// validates every request against the official spec, records the sequence
// to $FAKEFC_RECORD, and implements just enough behaviour (logger file,
// vsock echo, Ctrl-Alt-Del exit) for the driver to be exercised for real.
//
// Knobs, all environment variables:
//
//	FAKEFC_FAIL  "PUT /boot-source": answer that request with a 400 fault
//	FAKEFC_MODE  comma list of: ignore-ctrl-alt-del, exit-early, no-api,
//	             flood-console (a guest printing floodConsoleBytes at once)
//	FAKEFC_ROOT  a jail root: paths in requests are resolved beneath it, as
//	             a chrooted Firecracker sees them
//
// Snapshots: PUT /snapshot/create writes the machine config as the state
// file and an empty memory file; PUT /snapshot/load needs both files, takes
// the machine config back and serves the vsock at vsock_override.
const (
	envHelper = "GO_WANT_HELPER_PROCESS"
	envRecord = "FAKEFC_RECORD"
	envFail   = "FAKEFC_FAIL"
	envMode   = "FAKEFC_MODE"
	envRoot   = "FAKEFC_ROOT"
)

type fakeFirecracker struct {
	validator *oas.Validator
	record    *os.File
	fail      string
	modes     map[string]bool

	root string

	mu      sync.Mutex
	state   string
	machine json.RawMessage
}

// at is where path is for this process: beneath the jail root, if any.
func (f *fakeFirecracker) at(path string) string {
	if f.root == "" {
		return path
	}
	return filepath.Join(f.root, path)
}

func runFakeFirecracker(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "")
	fs.String("id", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	modes := map[string]bool{}
	for _, m := range strings.Split(os.Getenv(envMode), ",") {
		modes[m] = true
	}
	fmt.Println("fake firecracker: serial console") // stdout is the serial log
	if modes["flood-console"] {
		go func() { _ = logcaptest.Flood(os.Stdout, floodConsoleBytes, floodConsoleEnd) }()
	}
	if modes["exit-early"] {
		fmt.Fprintln(os.Stderr, "Error: fake firecracker refuses to start")
		return 3
	}
	if modes["no-api"] {
		time.Sleep(time.Hour)
		return 0
	}
	path, err := fcspec.SpecPath()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	v, err := oas.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	rec, err := os.OpenFile(os.Getenv(envRecord), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	fmt.Fprintf(rec, "PID %d\n", os.Getpid())
	ln, err := net.Listen("unix", filepath.Join(os.Getenv(envRoot), *apiSock))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 5
	}
	f := &fakeFirecracker{validator: v, record: rec, fail: os.Getenv(envFail), modes: modes, state: "Not started", root: os.Getenv(envRoot)}
	_ = http.Serve(ln, f) // until the test kills this process
	return 0
}

func (f *fakeFirecracker) fault(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
}

func (f *fakeFirecracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := r.Method + " " + r.URL.Path
	if err := f.validator.ValidateRequest(r.Method, r.URL.Path, body); err != nil {
		fmt.Fprintf(f.record, "INVALID %s: %v\n", req, err)
		f.fault(w, err.Error())
		return
	}
	fmt.Fprintln(f.record, req)
	if req == f.fail {
		f.fault(w, "fake failure at "+req)
		return
	}
	var in map[string]any
	_ = json.Unmarshal(body, &in) // a GET has no body; a PUT body passed validation
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req {
	case "GET /":
		_ = json.NewEncoder(w).Encode(InstanceInfo{AppName: "Firecracker", ID: "fake", State: f.state, VMMVersion: "1.16.1"})
		return
	case "GET /machine-config":
		_, _ = w.Write(f.machine)
		return
	case "PUT /machine-config":
		f.machine = body
	case "PUT /snapshot/create":
		if err := f.createSnapshot(in); err != nil {
			f.fault(w, err.Error())
			return
		}
	case "PUT /snapshot/load":
		if err := f.loadSnapshot(in); err != nil {
			f.fault(w, err.Error())
			return
		}
	case "PUT /logger":
		lf, err := os.OpenFile(f.at(in["log_path"].(string)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			f.fault(w, fmt.Sprintf("Failed to open target file: %v", err))
			return
		}
		fmt.Fprintln(lf, "fake firecracker: logger configured")
		lf.Close()
	case "PUT /vsock":
		if err := serveEchoVsock(f.at(in["uds_path"].(string))); err != nil {
			f.fault(w, err.Error())
			return
		}
	case "PUT /actions":
		switch in["action_type"] {
		case ActionInstanceStart:
			f.state = "Running"
			fmt.Println("fake guest: booted")
		case ActionSendCtrlAltDel:
			if !f.modes["ignore-ctrl-alt-del"] {
				go func() { time.Sleep(20 * time.Millisecond); os.Exit(0) }()
			}
		}
	case "PATCH /vm":
		if in["state"] == VMStatePaused {
			f.state = "Paused"
		} else {
			f.state = "Running"
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeFirecracker) createSnapshot(in map[string]any) error {
	if f.state != "Paused" {
		return errors.New("the microVM must be paused first")
	}
	if err := os.WriteFile(f.at(in["snapshot_path"].(string)), f.machine, 0o600); err != nil {
		return err
	}
	return os.WriteFile(f.at(in["mem_file_path"].(string)), nil, 0o600)
}

func (f *fakeFirecracker) loadSnapshot(in map[string]any) error {
	state, err := os.ReadFile(f.at(in["snapshot_path"].(string)))
	if err != nil {
		return err
	}
	mem := in["mem_backend"].(map[string]any)["backend_path"].(string)
	if _, err := os.Stat(f.at(mem)); err != nil {
		return err
	}
	f.machine, f.state = state, "Paused"
	if vo, ok := in["vsock_override"].(map[string]any); ok {
		return serveEchoVsock(f.at(vo["uds_path"].(string)))
	}
	return nil
}

// serveEchoVsock plays the vsock muxer plus a guest that echoes on every port.
func serveEchoVsock(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("Cannot create backend for vsock device: %v", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				_, _ = io.WriteString(c, "OK 1073741824\n")
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	return nil
}

// floodConsoleBytes is what the flood-console mode prints before its
// floodConsoleEnd line.
const (
	floodConsoleBytes = 64 << 20
	floodConsoleEnd   = "fake guest: flood done"
)
