package e2e

import (
	"context"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// The cost of running `true` in a VM (fake Firecracker, the real agent as
// the stand-in guest) through each way in: the daemon's typed client (the
// floor every client pays), the MCP server's vm_exec, and a `banger vm
// exec` process. go test -run '^$' -bench 'Exec|RunTrue' -benchtime 50x ./test/e2e

// BenchmarkExecAPI is one VMExec round trip on an open client.
func BenchmarkExecAPI(b *testing.B) {
	h := newHost(b)
	h.must("vm", "create", "--name", "bench", "--vcpus", "1", "--memory", "256", "--disk", "128M")
	c := api.NewClient(h.runDir() + "/bangerd.sock")
	defer c.Close()
	ctx := context.Background()
	for b.Loop() {
		p, err := c.VMExec(ctx, api.VMExecRequest{Name: "bench", Argv: []string{"true"}})
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(nil, nil); err != nil || st.Code != 0 {
			b.Fatalf("exec: %v %+v", err, st)
		}
	}
}

// BenchmarkExecMCP is one vm_exec tool call on an open MCP session.
func BenchmarkExecMCP(b *testing.B) {
	h := newHost(b)
	s := h.startMCP(h.dir, "--agent-name", "bench")
	s.ok("vm_create", withArgs(smallVM, "name", "bench"), nil)
	var ex mcpExec
	for b.Loop() {
		s.ok("vm_exec", map[string]any{"name": "bench", "argv": []string{"true"}}, &ex)
		if ex.ExitCode != 0 {
			b.Fatalf("exec: %+v", ex)
		}
	}
}

// BenchmarkExecCLI is one `banger vm exec bench -- true` process.
func BenchmarkExecCLI(b *testing.B) {
	h := newHost(b)
	h.must("vm", "create", "--name", "bench", "--vcpus", "1", "--memory", "256", "--disk", "128M")
	for b.Loop() {
		h.must("vm", "exec", "bench", "--", "true")
	}
}

// BenchmarkRunTrue is `banger run -- true` end to end: create (warm after
// the first, which makes the golden snapshot), exec, delete.
func BenchmarkRunTrue(b *testing.B) {
	h := newHost(b)
	h.must(runArgs("--", "true")...) // the golden snapshot, so runs start warm
	for b.Loop() {
		h.must(runArgs("--", "true")...)
	}
}

// BenchmarkRunTrueCold is the same with a cold boot every time.
func BenchmarkRunTrueCold(b *testing.B) {
	h := newHost(b)
	for b.Loop() {
		h.must(runArgs("--cold", "--", "true")...)
	}
}
