package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"
)

// freeLoopbackPort is a TCP port on 127.0.0.1 nothing listens on now.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// A VM's forwards listen on the host from the lifecycle's Start (which
// also restarts the VM's idle clock) to its Stop; a daemon without VM
// networking opens none. Built from the store, the lifetimes and a logger
// only.
func TestForwardsListenWhileTheVMRuns(t *testing.T) {
	ctx := context.Background()
	n, _ := newTestNetwork(t, "banger0")
	vm := createTestVM(t, n.store, "fwd", false)
	port := freeLoopbackPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	vm.Network = netSettings{Forwards: []string{fmt.Sprintf("%s:80", addr)}}.json()
	if _, _, err := n.attach(ctx, vm, false); err != nil { // gives the VM its lease
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)

	off := lcForwards{fwd: newHostForwards(n.store, false, log)}
	off.Start(ctx, fromStoreVM(vm))
	if listening(addr) {
		t.Errorf("a daemon without networking forwards %s", addr)
	}
	off.Stop(vm.ID)

	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	ttl := newLifetimes(log, n.store, func() time.Time { return now })
	f := lcForwards{fwd: newHostForwards(n.store, true, log), ttl: ttl}
	f.Start(ctx, fromStoreVM(vm))
	if !listening(addr) {
		t.Fatalf("the VM's forward %s does not listen after Start", addr)
	}
	if got := ttl.lastActive[vm.ID]; !got.Equal(now) {
		t.Errorf("Start left the idle clock at %v, want it restarted at %v", got, now)
	}
	f.Stop(vm.ID)
	if listening(addr) {
		t.Errorf("the forward %s still listens after Stop", addr)
	}
}
