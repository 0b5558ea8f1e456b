package main

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// exitCode reports how the fake ended: its code, or -1 and the signal.
func exitCode(st *os.ProcessState) (int, syscall.Signal) {
	ws := st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -1, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

func TestCtrlAltDelExitsZero(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	f.start()
	f.waitConsole("listening on")
	guests := f.guestPIDs()

	f.must("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	if code, sig := exitCode(f.waitExit(10 * time.Second)); code != 0 {
		t.Fatalf("exit %d (signal %v), want 0\nstderr:\n%s", code, sig, f.stderr)
	}
	assertGone(t, f.sock)
	assertGone(t, f.sock+".guest")
	for _, pid := range guests {
		if st := procState(pid); st != "" && st != "Z" {
			t.Errorf("guest %d still alive (state %s)", pid, st)
		}
	}
	// Like Firecracker, the vsock socket stays behind for the launcher to remove.
	if _, err := os.Lstat(f.vsockPath()); err != nil {
		t.Errorf("uds_path removed on exit (%v); Firecracker leaves it", err)
	}
}

// TestCtrlAltDelWhilePausedWaitsForResume: a paused VM cannot act on the
// keystroke until its vCPUs run again.
func TestCtrlAltDelWhilePausedWaitsForResume(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", false)
	f.start()
	f.waitConsole("listening on")
	f.must("PATCH", "/vm", `{"state":"Paused"}`)
	f.must("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	select {
	case <-f.exited:
		t.Fatal("paused VM exited on Ctrl-Alt-Del")
	case <-time.After(300 * time.Millisecond):
	}
	f.must("PATCH", "/vm", `{"state":"Resumed"}`)
	if code, _ := exitCode(f.waitExit(10 * time.Second)); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

func TestGuestExitEndsFake(t *testing.T) {
	f := startFake(t, fakeOptions{env: []string{envGuest + "=/bin/true"}})
	f.configureMinimal("", false)
	f.start()
	if code, _ := exitCode(f.waitExit(10 * time.Second)); code != 0 {
		t.Fatalf("exit %d after the guest halted, want 0\nstderr:\n%s", code, f.stderr)
	}
	assertGone(t, f.sock)
}

func TestBootFailureExitsOne(t *testing.T) {
	tests := []struct {
		name     string
		env      []string
		bootArgs string
	}{
		{"environment", []string{envBootFail + "=1"}, ""},
		{"kernel parameter", nil, "banger.fake_fail=panic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, fakeOptions{withAgent: true, env: tt.env})
			f.configureMinimal(tt.bootArgs, true)
			f.start() // accepted: the crash comes after InstanceStart returns
			if code, sig := exitCode(f.waitExit(10 * time.Second)); code != 1 {
				t.Fatalf("exit %d (signal %v), want 1", code, sig)
			}
			assertGone(t, f.sock)
			assertGone(t, f.sock+".guest")
		})
	}
}

func TestSIGTERMKillsGuestAndCleansUp(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("", true)
	f.start()
	f.waitConsole("listening on")
	guests := f.guestPIDs()
	if len(guests) != 1 {
		t.Fatalf("guest processes = %v", guests)
	}

	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, sig := exitCode(f.waitExit(10 * time.Second))
	if code != -1 || sig != syscall.SIGTERM {
		t.Fatalf("exit %d, signal %v; want killed by SIGTERM like Firecracker", code, sig)
	}
	assertGone(t, f.sock)
	assertGone(t, f.sock+".guest")
	if st := procState(guests[0]); st != "" && st != "Z" {
		t.Errorf("guest %d survived the fake (state %s)", guests[0], st)
	}
}

// TestBootDelay: with banger.fake_boot_delay_ms the VM reports Running at
// once but the agent only answers later, like a guest still booting.
func TestBootDelay(t *testing.T) {
	f := startFake(t, fakeOptions{withAgent: true})
	f.configureMinimal("banger.fake_boot_delay_ms=1500", true)
	f.start()
	if got := f.state(); got != stateRunning {
		t.Fatalf("state %q, want Running during the boot delay", got)
	}
	if _, _, err := vsockConnect(f.vsockPath(), 1024); !errors.Is(err, errNoReply) {
		t.Fatalf("CONNECT during boot delay: %v, want no reply", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, _, err := vsockConnect(f.vsockPath(), 1024)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not reachable 10s after a 1.5s boot delay: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestGuestGetsBootArgsAndVsockHost(t *testing.T) {
	dir := shortTempDir(t)
	script := filepath.Join(dir, "guest.sh")
	// A stand-in guest that prints what it was given, then keeps running.
	err := os.WriteFile(script, []byte("#!/bin/sh\necho \"args=$* cmdline=$BANGER_FAKE_BOOT_ARGS host=$BANGER_FAKE_VSOCK_HOST\"\nexec sleep 60\n"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, fakeOptions{env: []string{envGuest + "=" + script}})
	f.configureMinimal("banger.agent_port=3000", true)
	f.start()
	f.waitConsole("args=--listen unix:" + f.sock + ".guest/vsock_3000.sock cmdline=console=ttyS0 reboot=k panic=1 banger.agent_port=3000 host=" + f.vsockPath())
}
