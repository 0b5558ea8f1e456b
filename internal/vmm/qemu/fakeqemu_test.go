package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm/vmmproc/logcaptest"
)

// The test binary doubles as a fake qemu-system-x86_64 when envFakeQEMU is
// set: it serves QMP and a virtio-serial agent socket the way QEMU does,
// so process supervision is tested without QEMU or root.
const (
	envFakeQEMU = "BANGER_FAKE_QEMU"
	// envFakeMode selects a misbehaviour: "" behaves, "die" fails at
	// startup like a bad -netdev, "deaf" ignores the power button, "mute"
	// never listens on QMP, "flood" is a guest printing floodConsoleBytes
	// on its serial console and then floodConsoleEnd.
	envFakeMode = "BANGER_FAKE_QEMU_MODE"

	floodConsoleBytes = 64 << 20
	floodConsoleEnd   = "fake guest: flood done"
)

// fakeQEMUBinary writes a wrapper script that runs this test binary as the
// fake QEMU in mode, and returns its path.
func fakeQEMUBinary(t *testing.T, mode string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 %s=%s exec %q \"$@\"\n", envFakeQEMU, envFakeMode, mode, self)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func runFakeQEMU(args []string) int {
	mode := os.Getenv(envFakeMode)
	if mode == "die" {
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -netdev tap,id=net0,ifname=tap0: could not configure /dev/net/tun (tap0): Operation not permitted")
		return 1
	}
	if mode == "mute" {
		time.Sleep(time.Hour)
		return 0
	}
	qmpPath, agentPath := chardevPath(args, "qmp"), chardevPath(args, "agent")
	if qmpPath == "" {
		fmt.Fprintln(os.Stderr, "fake qemu: no qmp chardev")
		return 2
	}
	f := &fakeQEMU{running: true, deaf: mode == "deaf", exit: make(chan int, 1)}
	// QEMU opens every chardev before it serves QMP, so by the time QMP
	// answers the agent socket listens too; the driver relies on that.
	var aln net.Listener
	if agentPath != "" {
		var err error
		if aln, err = net.Listen("unix", agentPath); err != nil {
			fmt.Fprintln(os.Stderr, "fake qemu:", err)
			return 2
		}
	}
	qln, err := net.Listen("unix", qmpPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 2
	}
	if aln != nil {
		go f.serve(aln, f.agentSession)
	}
	go f.serve(qln, f.qmpSession)
	if mode == "flood" {
		go floodConsole(args)
	}
	code := <-f.exit
	// QEMU removes its listening sockets on a clean exit.
	_ = os.Remove(qmpPath)
	if agentPath != "" {
		_ = os.Remove(agentPath)
	}
	return code
}

type fakeQEMU struct {
	mu      sync.Mutex
	running bool
	deaf    bool
	exit    chan int
}

// serve handles one connection at a time, as a QEMU socket chardev does.
func (f *fakeQEMU) serve(ln net.Listener, session func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		session(c)
		c.Close()
	}
}

func (f *fakeQEMU) qmpSession(c net.Conn) {
	w := bufio.NewWriter(c)
	send := func(v any) {
		b, _ := json.Marshal(v)
		_, _ = w.Write(append(b, '\r', '\n'))
		_ = w.Flush() // a client that hung up is the test's business
	}
	event := func(name string) {
		send(map[string]any{"event": name, "timestamp": map[string]int{"seconds": 1, "microseconds": 2}})
	}
	send(map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "fake"},
		"capabilities": []string{"oob"},
	}})
	sc := bufio.NewScanner(c)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		reply := func(ret any) { send(map[string]any{"return": ret, "id": req.ID}) }
		fail := func(class, desc string) {
			send(map[string]any{"error": map[string]string{"class": class, "desc": desc}, "id": req.ID})
		}
		if !negotiated && req.Execute != "qmp_capabilities" {
			fail("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
			continue
		}
		f.mu.Lock()
		switch req.Execute {
		case "qmp_capabilities":
			negotiated = true
			reply(struct{}{})
		case "query-status":
			st := "paused"
			if f.running {
				st = "running"
			}
			reply(map[string]any{"status": st, "running": f.running, "singlestep": false})
		case "stop":
			// QEMU sends the event before the reply.
			f.running = false
			event("STOP")
			reply(struct{}{})
		case "cont":
			f.running = true
			reply(struct{}{})
			event("RESUME")
		case "system_powerdown":
			reply(struct{}{})
			event("POWERDOWN")
			if !f.deaf && f.running {
				event("SHUTDOWN")
				f.exit <- 0
			}
		case "quit":
			reply(struct{}{})
			f.exit <- 0
		default:
			fail("CommandNotFound", fmt.Sprintf("The command %s has not been found", req.Execute))
		}
		f.mu.Unlock()
	}
}

// agentSession answers each line with "fake-agent <line>", like the boot
// test's marker does inside a real guest.
func (f *fakeQEMU) agentSession(c net.Conn) {
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		fmt.Fprintf(c, "fake-agent %s\n", strings.TrimSpace(sc.Text()))
	}
}

// floodConsole appends to the serial console's file chardev as QEMU does
// with append=on (O_APPEND), floodConsoleBytes as fast as it goes.
func floodConsole(args []string) {
	var path string
	for i, a := range args {
		opts := splitOpts(a)
		if i == 0 || args[i-1] != "-chardev" || len(opts) == 0 || opts[0] != "file" || !slices.Contains(opts, "id=console") {
			continue
		}
		for _, o := range opts {
			if v, ok := strings.CutPrefix(o, "path="); ok {
				path = v
			}
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu: console:", err)
		return
	}
	defer f.Close()
	_ = logcaptest.Flood(f, floodConsoleBytes, floodConsoleEnd)
}
