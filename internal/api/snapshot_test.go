package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// serveWith starts a server on a fresh socket with the methods register adds.
func serveWith(t *testing.T, register func(*Server)) *Client {
	t.Helper()
	srv := NewServer(slog.New(slog.DiscardHandler), time.Now)
	register(srv)
	// A short path: t.TempDir() can exceed the 108-byte socket path limit.
	dir, err := os.MkdirTemp("", "bgapi")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	c := NewClient(ln.Addr().String())
	t.Cleanup(func() { c.Close(); _ = hs.Close(); _ = os.RemoveAll(dir) })
	return c
}

// echoing registers method with a handler that records its decoded request
// in *got, reports one progress event and answers resp.
func echoing[Req, Resp any](s *Server, method string, got *Req, resp Resp) {
	Handle(s, method, func(_ context.Context, req Req, p Progress) (Resp, error) {
		*got = req
		p(Event{Stage: "step", Message: method})
		return resp, nil
	})
}

func TestSnapshotMethodsRoundTrip(t *testing.T) {
	created := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	snap := Snapshot{
		ID: "s1", Name: "dev-20261207-210000", VM: "dev", VMID: "v1", Image: "debian", VMM: "qemu",
		VCPUs: 2, MemoryMiB: 256, DiskSizeBytes: 8 << 30, Golden: true, State: SnapshotReady,
		SizeBytes: 300 << 20, CreatedAt: created,
	}
	paused := VM{ID: "v1", Name: "dev", State: VMPaused, CreatedAt: created}
	forks := []VM{{ID: "f1", Name: "try-1", State: VMRunning, CreatedAt: created}, {ID: "f2", Name: "try-2", State: VMRunning, CreatedAt: created}}
	var (
		pauseReq, resumeReq VMRef
		snapReq             VMSnapshotRequest
		rollbackReq         VMRollbackRequest
		forkReq             VMForkRequest
		showReq, deleteReq  SnapshotRef
		warmReq             ImageWarmRequest
		deleteVMReq         VMDeleteRequest
		createReq           VMCreateRequest
		listCalled          struct{}
		progress            []string
	)
	c := serveWith(t, func(s *Server) {
		echoing(s, MethodVMPause, &pauseReq, paused)
		echoing(s, MethodVMResume, &resumeReq, VM{Name: "dev", State: VMRunning})
		echoing(s, MethodVMSnapshot, &snapReq, snap)
		echoing(s, MethodVMRollback, &rollbackReq, VM{Name: "dev", State: VMRunning})
		echoing(s, MethodVMFork, &forkReq, VMList{VMs: forks})
		echoing(s, MethodSnapshotList, &listCalled, SnapshotList{Snapshots: []Snapshot{snap}})
		echoing(s, MethodSnapshotShow, &showReq, snap)
		echoing(s, MethodSnapshotDelete, &deleteReq, struct{}{})
		echoing(s, MethodImageWarm, &warmReq, snap)
		echoing(s, MethodVMDelete, &deleteVMReq, struct{}{})
		echoing(s, MethodVMCreate, &createReq, VM{Name: "cold"})
	})
	ctx := context.Background()
	onEvent := func(e Event) { progress = append(progress, e.Message) }

	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
	}
	vm, err := c.VMPause(ctx, "dev")
	check("pause", []any{vm, err, pauseReq}, []any{paused, nil, VMRef{Name: "dev"}})
	vm, err = c.VMResume(ctx, "dev")
	check("resume", []any{vm.State, err, resumeReq}, []any{VMRunning, nil, VMRef{Name: "dev"}})

	s, err := c.VMSnapshot(ctx, VMSnapshotRequest{Name: "dev", Snapshot: "before"}, onEvent)
	check("snapshot", []any{s, err, snapReq}, []any{snap, nil, VMSnapshotRequest{Name: "dev", Snapshot: "before"}})
	vm, err = c.VMRollback(ctx, VMRollbackRequest{Name: "dev", Snapshot: "before"}, onEvent)
	check("rollback", []any{vm.State, err, rollbackReq}, []any{VMRunning, nil, VMRollbackRequest{Name: "dev", Snapshot: "before"}})
	vms, err := c.VMFork(ctx, VMForkRequest{Source: "before", Name: "try", Count: 2}, onEvent)
	check("fork", []any{vms, err, forkReq}, []any{forks, nil, VMForkRequest{Source: "before", Name: "try", Count: 2}})
	s, err = c.ImageWarm(ctx, ImageWarmRequest{Image: "debian", VCPUs: 2, MemoryMiB: 256, DiskSizeBytes: 8 << 30}, onEvent)
	check("warm", []any{s, err, warmReq}, []any{snap, nil, ImageWarmRequest{Image: "debian", VCPUs: 2, MemoryMiB: 256, DiskSizeBytes: 8 << 30}})
	check("progress", progress, []string{MethodVMSnapshot, MethodVMRollback, MethodVMFork, MethodImageWarm})

	list, err := c.SnapshotList(ctx)
	check("list", []any{list, err}, []any{[]Snapshot{snap}, nil})
	s, err = c.SnapshotShow(ctx, "before")
	check("show", []any{s, err, showReq}, []any{snap, nil, SnapshotRef{Name: "before"}})
	err = c.SnapshotDelete(ctx, "before")
	check("delete", []any{err, deleteReq}, []any{nil, SnapshotRef{Name: "before"}})

	err = c.VMDelete(ctx, VMDeleteRequest{Name: "dev", Force: true}, nil)
	check("vm delete", []any{err, deleteVMReq}, []any{nil, VMDeleteRequest{Name: "dev", Force: true}})
	_, err = c.VMCreate(ctx, VMCreateRequest{Name: "cold", Cold: true}, nil)
	check("vm create", []any{err, createReq}, []any{nil, VMCreateRequest{Name: "cold", Cold: true}})
}

// The wire names are what scripts and other clients rely on: a rename of a
// Go field must not silently rename its JSON key.
func TestSnapshotWireNames(t *testing.T) {
	b, err := json.Marshal(Snapshot{Golden: false})
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "name", "vm", "vm_id", "image", "vmm", "vcpus", "memory_mib", "disk_size_bytes", "golden", "state", "size_bytes", "created_at"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("snapshot JSON lacks %q: %s", k, b)
		}
	}
	if len(keys) != 13 {
		t.Errorf("snapshot JSON has %d keys, want 13: %s", len(keys), b)
	}
}

// A client from before vm delete had a force flag sends {"name": ...}; a
// new client not forcing sends the same, so either daemon accepts it.
func TestVMDeleteKeepsOldWireShape(t *testing.T) {
	var got VMRef
	c := serveWith(t, func(s *Server) { echoing(s, MethodVMDelete, &got, struct{}{}) })
	if err := c.VMDelete(context.Background(), VMDeleteRequest{Name: "dev"}, nil); err != nil || got.Name != "dev" {
		t.Fatalf("unforced delete against a VMRef handler: %v %+v", err, got)
	}
	var newReq VMDeleteRequest
	c = serveWith(t, func(s *Server) { echoing(s, MethodVMDelete, &newReq, struct{}{}) })
	if err := c.Call(context.Background(), MethodVMDelete, VMRef{Name: "old"}, nil, nil); err != nil || newReq != (VMDeleteRequest{Name: "old"}) {
		t.Fatalf("old client's delete against the new handler: %v %+v", err, newReq)
	}
}
