package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRealBootMCP drives `banger mcp` over stdio with the MCP Go SDK's
// client against a daemon booting real guests (QEMU under TCG here): the
// tools an agent uses most, end to end through a real guest agent — create,
// exec (with output past the cap), a binary file round trip, snapshot and
// fork (the fork a machine of its own), delete — and nothing left after.
func TestRealBootMCP(t *testing.T) {
	vmm := needRealBoot(t)
	before := snapshotHost()
	h := newBusyboxHost(t, vmm)

	s := startMCPWith(t, h.env, t.TempDir(), "--agent-name", "realboot")
	// A cold create under TCG boots the guest and makes the image's golden
	// snapshot: give each call the boot budget and then some.
	s.callTimeout = 2 * busyboxBootTimeout

	start := time.Now()
	var vm mcpVM
	s.ok("vm_create", map[string]any{"name": "mcpvm", "image": "default"}, &vm)
	t.Logf("vm_create → running in %s", time.Since(start).Round(100*time.Millisecond))
	if vm.Name != "mcpvm" || vm.State != "running" {
		t.Fatalf("vm_create: %+v", vm)
	}
	if got := h.vm("mcpvm"); got.VMM != vmm {
		t.Fatalf("the daemon booted mcpvm with %s, want %s", got.VMM, vmm)
	}

	t.Run("exec", func(t *testing.T) { mcpExecFlow(t, s.on(t), "mcpvm") })
	t.Run("files", func(t *testing.T) { mcpFilesFlow(t, s.on(t), "mcpvm") })
	t.Run("snapshot-fork", func(t *testing.T) { mcpForkFlow(t, s.on(t), "mcpvm") })
	t.Run("nothing-left", func(t *testing.T) {
		hh := h.on(t)
		var list struct{ VMs []mcpVM }
		s.on(t).ok("vm_list", nil, &list)
		if len(list.VMs) != 0 {
			t.Errorf("vm_list after the deletes: %+v", list.VMs)
		}
		// vm_delete --force took the agent's snapshot; the golden one is
		// the image's, which no MCP tool deletes.
		own, golden := hh.realSnapshots()
		if len(own) != 0 {
			t.Errorf("snapshots left after vm_delete with force: %+v", own)
		}
		for _, snap := range append(own, golden...) {
			hh.must("snapshot", "delete", "--force", snap.Name)
		}
		nothingLeft(t, hh, before)
	})
}

// on returns a view of the session that reports failures to tb.
func (s *mcpSession) on(tb testing.TB) *mcpSession {
	c := *s
	c.t = tb
	return &c
}

// mcpExecFlow: exec in the real guest, and output past the cap is cut,
// flagged and counted, with the command's own exit code.
func mcpExecFlow(t *testing.T, s *mcpSession, name string) {
	var ex mcpExec
	s.ok("vm_exec", map[string]any{"name": name, "command": "uname -a"}, &ex)
	if ex.ExitCode != 0 || ex.Truncated || !strings.HasPrefix(ex.Stdout, "Linux "+name+" ") {
		t.Errorf("uname -a: %+v", ex)
	}
	const total, limit = 200000, 1000
	s.ok("vm_exec", map[string]any{
		"name":             name,
		"command":          fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x; echo oops >&2; exit 3", total),
		"max_output_bytes": limit,
	}, &ex)
	if !ex.Truncated || len(ex.Stdout) != limit || ex.StdoutBytes != total || ex.ExitCode != 3 ||
		strings.Trim(ex.Stdout, "x") != "" || ex.Stderr != "oops\n" {
		t.Errorf("output past the cap: truncated=%v len=%d total=%d exit=%d stderr=%q",
			ex.Truncated, len(ex.Stdout), ex.StdoutBytes, ex.ExitCode, ex.Stderr)
	}
}

// mcpFilesFlow: binary content written with write_file reads back the same
// with read_file, and the guest sees exactly those bytes.
func mcpFilesFlow(t *testing.T, s *mcpSession, name string) {
	blob := make([]byte, 8192)
	for i := range 256 {
		blob[i] = byte(i) // every byte value, NUL and invalid UTF-8 included
	}
	if _, err := rand.Read(blob[256:]); err != nil {
		t.Fatal(err)
	}
	encoded := base64.StdEncoding.EncodeToString(blob)
	var wr struct {
		Path  string
		Bytes int64
	}
	s.ok("write_file", map[string]any{"name": name, "path": "/root/blob", "content": encoded, "encoding": "base64"}, &wr)
	if wr.Bytes != int64(len(blob)) {
		t.Errorf("write_file: %+v, want %d bytes", wr, len(blob))
	}
	var fc struct {
		Size              int64
		Encoding, Content string
	}
	s.ok("read_file", map[string]any{"name": name, "path": "/root/blob"}, &fc)
	if fc.Encoding != "base64" || fc.Size != int64(len(blob)) || fc.Content != encoded {
		t.Errorf("read_file: encoding %s, size %d, content equal %t", fc.Encoding, fc.Size, fc.Content == encoded)
	}
	var ex mcpExec
	s.ok("vm_exec", map[string]any{"name": name, "argv": []string{"sha256sum", "/root/blob"}}, &ex)
	if want := sha(blob); !strings.HasPrefix(ex.Stdout, want+" ") {
		t.Errorf("the guest's sha256 of /root/blob: %q, want %s", ex.Stdout, want)
	}
}

// mcpForkFlow: a fork of a snapshot is a machine of its own (its own
// hostname), with the snapshot's files; then both VMs are deleted.
func mcpForkFlow(t *testing.T, s *mcpSession, name string) {
	s.ok("write_file", map[string]any{"name": name, "path": "/root/mark", "content": "at-snapshot\n"}, nil)
	var snap struct{ Name, VM, State string }
	start := time.Now()
	s.ok("vm_snapshot", map[string]any{"name": name, "snapshot": "mcp-snap"}, &snap)
	t.Logf("vm_snapshot in %s", time.Since(start).Round(10*time.Millisecond))
	if snap.Name != "mcp-snap" || snap.VM != name {
		t.Fatalf("vm_snapshot: %+v", snap)
	}
	start = time.Now()
	var forks struct{ VMs []mcpVM }
	s.ok("vm_fork", map[string]any{"source": "mcp-snap", "name": "mcpfork"}, &forks)
	t.Logf("vm_fork in %s", time.Since(start).Round(10*time.Millisecond))
	if len(forks.VMs) != 1 || forks.VMs[0].State != "running" {
		t.Fatalf("vm_fork: %+v", forks.VMs)
	}
	fork := forks.VMs[0].Name
	var ex mcpExec
	s.ok("vm_exec", map[string]any{"name": fork, "argv": []string{"hostname"}}, &ex)
	if got := strings.TrimSpace(ex.Stdout); ex.ExitCode != 0 || got != fork {
		t.Errorf("the fork calls itself %q (exit %d), want %q", got, ex.ExitCode, fork)
	}
	var fc struct{ Content string }
	s.ok("read_file", map[string]any{"name": fork, "path": "/root/mark"}, &fc)
	if fc.Content != "at-snapshot\n" {
		t.Errorf("the fork's /root/mark: %q, want the snapshot's", fc.Content)
	}
	s.ok("vm_exec", map[string]any{"name": name, "argv": []string{"hostname"}}, &ex)
	if got := strings.TrimSpace(ex.Stdout); got != name {
		t.Errorf("the original calls itself %q after the fork", got)
	}

	var del struct{ Deleted string }
	s.ok("vm_delete", map[string]any{"name": fork}, &del)
	s.ok("vm_delete", map[string]any{"name": name, "force": true}, &del)
	for _, vm := range []string{fork, name} {
		if msg := s.fails("vm_show", map[string]any{"name": vm}); !strings.Contains(msg, `"`+vm+`"`) {
			t.Errorf("vm_show %s after its delete: %q", vm, msg)
		}
	}
}
