package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/banger-dev/banger/pkg/client"
)

// Create a VM, run a command in it, and snapshot it. Needs a running
// daemon, so this example compiles but does not run as a test.
func Example() {
	ctx := context.Background()
	c, err := client.Default()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	vm, err := c.VMCreate(ctx, client.VMCreateRequest{Name: "dev", VCPUs: 2, MemoryMiB: 1024}, func(ev client.Event) {
		fmt.Println(ev.Stage, ev.Message)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(vm.Name, vm.State, vm.IP)

	p, err := c.VMExec(ctx, client.VMExecRequest{Name: "dev", Argv: []string{"uname", "-a"}})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = p.Close() }()
	status, err := p.Wait(os.Stdout, os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", status.Code)

	snap, err := c.VMSnapshot(ctx, client.VMSnapshotRequest{Name: "dev", Snapshot: "dev-clean"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("snapshot", snap.Name, snap.SizeBytes)
}

// Branch on what went wrong with the error's code, not its text.
func ExampleCodeOf() {
	c := client.New("/run/banger/bangerd.sock")
	defer c.Close()
	_, err := c.VMShow(context.Background(), "missing")
	switch {
	case err == nil:
		fmt.Println("found")
	case client.IsCode(err, client.CodeNotFound):
		fmt.Println("no such VM")
	default:
		fmt.Println("failed:", client.CodeOf(err), err)
	}
}

// Start more VMs from a snapshot, then roll the original back to it.
func ExampleClient_VMFork() {
	ctx := context.Background()
	c, err := client.Default()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	vms, err := c.VMFork(ctx, client.VMForkRequest{Source: "dev-clean", Name: "worker", Count: 3}, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, vm := range vms {
		fmt.Println(vm.Name, vm.IP)
	}
	if _, err := c.VMRollback(ctx, client.VMRollbackRequest{Name: "dev", Snapshot: "dev-clean"}, nil); err != nil {
		log.Fatal(err)
	}
}
