package qemu

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	// on its serial console and then floodConsoleEnd, "migratefail" fails
	// every migration as a full disk does, "migratestuck" starts them and
	// never finishes.
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
	f := &fakeQEMU{status: "running", mode: mode, deaf: mode == "deaf", exit: make(chan int, 1),
		fds: map[string]*os.File{}, migration: map[string]any{"status": "none"}}
	if argAfter(args, "-incoming") == "defer" {
		f.status = "inmigrate"
	}
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
	mu sync.Mutex
	// status is QEMU's run state: running, paused, postmigrate, inmigrate.
	status string
	mode   string
	deaf   bool
	exit   chan int
	// fds are the descriptors QMP getfd named.
	fds map[string]*os.File
	// migration is what query-migrate returns.
	migration map[string]any
	// memory is the fake guest's state: what its agent was last told to
	// remember ("set:X"), saved and restored with a migration.
	memory string
}

// fakeStreamHeader starts the fake's migration stream as QEMU's does: the
// "QEVM" magic and stream version 3.
const fakeStreamHeader = "QEVM\x00\x00\x00\x03"

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
	fr := &fdReader{c: c.(*net.UnixConn)}
	sc := bufio.NewScanner(fr)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments map[string]any  `json:"arguments"`
			ID        json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		arg := func(key string) string { v, _ := req.Arguments[key].(string); return v }
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
			reply(map[string]any{"status": f.status, "running": f.status == "running", "singlestep": false})
		case "stop":
			// QEMU sends the event before the reply. A guest that is not
			// running keeps its state (postmigrate stays postmigrate).
			if f.status == "running" {
				f.status = "paused"
				event("STOP")
			}
			reply(struct{}{})
		case "cont":
			// During an incoming migration cont only sets autostart.
			if f.status != "inmigrate" {
				f.status = "running"
				event("RESUME")
			}
			reply(struct{}{})
		case "system_powerdown":
			reply(struct{}{})
			event("POWERDOWN")
			if !f.deaf && f.status == "running" {
				event("SHUTDOWN")
				f.exit <- 0
			}
		case "quit":
			reply(struct{}{})
			f.exit <- 0
		case "getfd":
			fd, ok := fr.take()
			if !ok {
				fail("GenericError", "No file descriptor supplied via SCM_RIGHTS")
				break
			}
			f.fds[arg("fdname")] = os.NewFile(uintptr(fd), arg("fdname"))
			reply(struct{}{})
		case "closefd":
			if fd := f.fds[arg("fdname")]; fd != nil {
				fd.Close()
				delete(f.fds, arg("fdname"))
			}
			reply(struct{}{})
		case "migrate-set-parameters":
			reply(struct{}{})
		case "migrate":
			if desc := f.migrate(arg("uri")); desc != "" {
				fail("GenericError", desc)
				break
			}
			reply(struct{}{})
		case "query-migrate":
			reply(f.migration)
		case "migrate_cancel":
			if f.migration["status"] == "active" {
				f.migration = map[string]any{"status": "cancelled"}
			}
			reply(struct{}{})
		case "migrate-incoming":
			if desc := f.migrateIncoming(arg("uri")); desc != "" {
				fail("GenericError", desc)
				break
			}
			reply(struct{}{})
		default:
			fail("CommandNotFound", fmt.Sprintf("The command %s has not been found", req.Execute))
		}
		f.mu.Unlock()
	}
}

// fdTaker takes the descriptor named by fdname off f's list, as QEMU's
// monitor_get_fd does for fd: URIs.
func (f *fakeQEMU) fdTaker(uri string) (*os.File, string) {
	name, ok := strings.CutPrefix(uri, "fd:")
	if !ok {
		return nil, "the fake supports only fd: URIs, not " + uri
	}
	fd := f.fds[name]
	if fd == nil {
		return nil, fmt.Sprintf("File descriptor named '%s' has not been found", name)
	}
	delete(f.fds, name)
	return fd, ""
}

// migrate starts writing the fake guest's state to the descriptor named in
// uri, from its offset, as QEMU's outgoing fd: migration does; f.mu is
// held. It returns QEMU's refusal, if any.
func (f *fakeQEMU) migrate(uri string) string {
	switch f.status {
	case "postmigrate":
		return "Can't migrate the vm that was paused due to previous migration"
	case "inmigrate":
		return "Guest is waiting for an incoming migration"
	}
	fd, desc := f.fdTaker(uri)
	if desc != "" {
		return desc
	}
	f.migration = map[string]any{"status": "active"}
	go func() {
		defer fd.Close()
		switch f.mode {
		case "migratestuck":
			return
		case "migratefail":
			f.mu.Lock()
			f.migration = map[string]any{"status": "failed", "error-desc": "Unable to write to file: No space left on device"}
			f.mu.Unlock()
			return
		}
		time.Sleep(20 * time.Millisecond) // QEMU reports "active" for a while
		f.mu.Lock()
		defer f.mu.Unlock()
		state, _ := json.Marshal(map[string]string{"memory": f.memory})
		if _, err := fd.Write(append([]byte(fakeStreamHeader), state...)); err != nil {
			f.migration = map[string]any{"status": "failed", "error-desc": err.Error()}
			return
		}
		f.migration = map[string]any{"status": "completed", "ram": map[string]int{"transferred": len(state), "total": len(state)}}
		if f.status == "paused" {
			f.status = "postmigrate"
		}
	}()
	return ""
}

// migrateIncoming loads the fake guest's state from the descriptor named
// in uri; f.mu is held. Like QEMU, it exits when the stream does not load.
func (f *fakeQEMU) migrateIncoming(uri string) string {
	if f.status != "inmigrate" {
		return "'-incoming' was not specified on the command line"
	}
	fd, desc := f.fdTaker(uri)
	if desc != "" {
		return desc
	}
	go func() {
		defer fd.Close()
		b, err := io.ReadAll(fd)
		var state struct{ Memory string }
		if err == nil {
			var ok bool
			b, ok = bytes.CutPrefix(b, []byte(fakeStreamHeader))
			if !ok || json.Unmarshal(b, &state) != nil {
				err = errors.New("Invalid argument")
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "qemu-system-x86_64: load of migration failed:", err)
			f.exit <- 1
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.memory = state.Memory
		f.status = "paused"
		f.migration = map[string]any{"status": "completed"}
	}()
	return ""
}

// fdReader reads a QMP connection and keeps the descriptors that arrive
// with the bytes (SCM_RIGHTS), for getfd to take.
type fdReader struct {
	c   *net.UnixConn
	mu  sync.Mutex
	fds []int
}

func (r *fdReader) Read(b []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := r.c.ReadMsgUnix(b, oob)
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for i := range msgs {
			fds, _ := unix.ParseUnixRights(&msgs[i])
			r.mu.Lock()
			r.fds = append(r.fds, fds...)
			r.mu.Unlock()
		}
	}
	return n, err
}

// take returns the descriptor that came last, as QEMU's getfd does.
func (r *fdReader) take() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fds) == 0 {
		return 0, false
	}
	fd := r.fds[len(r.fds)-1]
	r.fds = r.fds[:len(r.fds)-1]
	return fd, true
}

// agentSession answers each line with "fake-agent <line>", like the boot
// test's marker does inside a real guest. "set:X" makes the fake guest
// remember X, which "get" answers as "fake-agent get:X".
func (f *fakeQEMU) agentSession(c net.Conn) {
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f.mu.Lock()
		if v, ok := strings.CutPrefix(line, "set:"); ok {
			f.memory = v
		}
		if line == "get" {
			line = "get:" + f.memory
		}
		f.mu.Unlock()
		fmt.Fprintf(c, "fake-agent %s\n", line)
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
