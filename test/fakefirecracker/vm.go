package main

import (
	"encoding/json"
	"io"
	"os"
	"sync"
)

// Instance states as Firecracker reports them in GET /.
const (
	stateNotStarted = "Not started"
	stateRunning    = "Running"
	statePaused     = "Paused"
)

// Version the fake claims to be: the newest Firecracker release.
const fcVersion = "1.16.1"

// microVM is the fake VMM's whole state. Firecracker handles API requests one
// at a time on its VMM thread; mu gives the fake the same serial order.
type microVM struct {
	id      string
	apiSock string
	console io.Writer // the serial console: the fake's stdout
	stderr  io.Writer
	log     *vmmLog
	getenv  func(string) string
	// requestExit asks main to shut the fake down with code; the first
	// request wins.
	requestExit func(code int, reason string)

	mu       sync.Mutex
	state    string
	closing  bool
	bootPath bool // boot-specific resources configured: snapshot load is refused
	boot     *bootSource
	machine  machineConfig
	drives   []drive // the root drive, if any, first (as Firecracker orders them)
	ifaces   []netIface
	vsock    *hybridVsock
	metrics  *os.File
	mmds     any
	extras   map[string]json.RawMessage // accepted and echoed, not modelled
	guestDir string
	guest    *guest
	restored bool // loaded from a snapshot rather than booted
}

func newMicroVM(id, apiSock string, console, stderr io.Writer, log *vmmLog, requestExit func(int, string)) *microVM {
	return &microVM{
		id:          id,
		apiSock:     apiSock,
		console:     console,
		stderr:      stderr,
		log:         log,
		getenv:      os.Getenv,
		requestExit: requestExit,
		state:       stateNotStarted,
		machine:     defaultMachineConfig(),
		extras:      map[string]json.RawMessage{},
	}
}

// apply runs one validated request, enforcing the pre-/post-boot rules first.
func (v *microVM) apply(rt route, id string, body []byte) (any, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closing {
		return nil, faultf("fake-firecracker is shutting down")
	}
	started := v.state != stateNotStarted
	switch {
	case rt.phase == preBootOnly && started:
		return nil, faultf(msgNotAfterBoot)
	case rt.phase == postBootOnly && !started:
		return nil, faultf(msgNotBeforeBoot)
	}
	return rt.handle(v, id, body)
}

// shutdown stops everything the fake started: the guest (killed, as when a
// VMM process ends), the vsock proxy and the guest directory. The API socket
// is closed by main.
func (v *microVM) shutdown() {
	v.mu.Lock()
	v.closing = true
	g, vs, dir, metrics := v.guest, v.vsock, v.guestDir, v.metrics
	v.mu.Unlock()

	if g != nil {
		g.kill()
	}
	if vs != nil {
		vs.close()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	if metrics != nil {
		metrics.Close()
	}
	v.log.close()
}

type instanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

func (v *microVM) getInstanceInfo(string, []byte) (any, error) {
	return instanceInfo{AppName: "Firecracker", ID: v.id, State: v.state, VMMVersion: fcVersion}, nil
}

func (v *microVM) getVersion(string, []byte) (any, error) {
	return map[string]string{"firecracker_version": fcVersion}, nil
}

// getFullConfig answers GET /vm/config with what the fake stored, in
// Firecracker's key names.
func (v *microVM) getFullConfig(string, []byte) (any, error) {
	boot := v.boot
	if v.restored {
		// As Firecracker documents: a restored VM reports no boot source.
		boot = nil
	}
	cfg := map[string]any{
		"boot-source":        boot,
		"machine-config":     v.machine,
		"drives":             nonNil(v.drives),
		"network-interfaces": nonNil(v.ifaces),
		"vsock":              nil,
	}
	if v.vsock != nil {
		cfg["vsock"] = v.vsock.cfg
	}
	for name, raw := range v.extras {
		cfg[name] = raw
	}
	return cfg, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
