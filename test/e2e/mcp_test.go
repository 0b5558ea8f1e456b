package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/banger-dev/banger/internal/api"
)

// mcpSession is the SDK's own client talking to `banger mcp` run as a
// subprocess, as an MCP client (Claude Code, Cursor) runs it.
type mcpSession struct {
	t  testing.TB
	cs *sdk.ClientSession
	// callTimeout bounds each tool call; zero is 60 s. Real boots under
	// TCG need longer.
	callTimeout time.Duration
}

// startMCP runs `banger mcp ARGS...` in dir (its --root default).
func (h *host) startMCP(dir string, args ...string) *mcpSession {
	h.t.Helper()
	return startMCPWith(h.t, h.env, dir, args...)
}

// startMCPWith runs `banger mcp ARGS...` with env in dir and connects the
// SDK's client to it over stdio.
func startMCPWith(tb testing.TB, env []string, dir string, args ...string) *mcpSession {
	tb.Helper()
	cmd := exec.Command(bins.Banger, append([]string{"mcp"}, args...)...)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stderr = os.Stderr
	client := sdk.NewClient(&sdk.Implementation{Name: "e2e", Version: "v0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		tb.Fatalf("connect to banger mcp: %v", err)
	}
	tb.Cleanup(func() { _ = cs.Close() })
	return &mcpSession{t: tb, cs: cs}
}

// call calls tool with args and returns the result, failing on a protocol
// error (a tool error is a result with IsError).
func (s *mcpSession) call(tool string, args map[string]any) *sdk.CallToolResult {
	s.t.Helper()
	timeout := s.callTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := s.cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		s.t.Fatalf("%s: protocol error: %v", tool, err)
	}
	return res
}

// ok calls tool, requires success and decodes its structured result.
func (s *mcpSession) ok(tool string, args map[string]any, out any) {
	s.t.Helper()
	res := s.call(tool, args)
	if res.IsError {
		s.t.Fatalf("%s(%v): tool error: %s", tool, args, resultText(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		s.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s: decode %s: %v", tool, b, err)
		}
	}
}

// fails calls tool, requires a tool error and returns its text.
func (s *mcpSession) fails(tool string, args map[string]any) string {
	s.t.Helper()
	res := s.call(tool, args)
	if !res.IsError {
		s.t.Fatalf("%s(%v) succeeded, want a tool error: %v", tool, args, res.StructuredContent)
	}
	return resultText(res)
}

func resultText(res *sdk.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

type mcpVM struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Labels    map[string]string `json:"labels"`
	ExpiresAt string            `json:"expires_at"`
}

type mcpExec struct {
	ExitCode    int    `json:"exit_code"`
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	Truncated   bool   `json:"truncated"`
	StdoutBytes int64  `json:"stdout_bytes"`
	TimedOut    bool   `json:"timed_out"`
}

var smallVM = map[string]any{"vcpus": 1, "memory_mib": 256, "disk": "128M"}

func withArgs(base map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestMCPListsTools(t *testing.T) {
	h := newHost(t)
	s := h.startMCP(h.dir)
	res, err := s.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if tool.Description == "" || tool.InputSchema == nil {
			t.Errorf("tool %s has no description or input schema", tool.Name)
		}
	}
	for _, want := range []string{"vm_create", "vm_list", "vm_show", "vm_exec", "read_file", "write_file", "list_dir",
		"copy_in", "copy_out", "port_forward", "vm_stop", "vm_start", "vm_delete", "vm_pause", "vm_resume",
		"vm_snapshot", "vm_rollback", "vm_fork"} {
		if !slices.Contains(names, want) {
			t.Errorf("tool %s missing from %v", want, names)
		}
	}
}

func TestMCPCreateExecAndFiles(t *testing.T) {
	h := newHost(t)
	work := t.TempDir()
	s := h.startMCP(work, "--agent-name", "tester")

	var vm mcpVM
	s.ok("vm_create", withArgs(smallVM, "name", "agentvm", "ttl", "1h"), &vm)
	if vm.State != "running" || vm.Labels[api.LabelCreator] != "mcp:tester" || vm.ExpiresAt == "" {
		t.Fatalf("created %+v, want running with creator=mcp:tester", vm)
	}
	if got := h.vm("agentvm").Labels[api.LabelCreator]; got != "mcp:tester" {
		t.Fatalf("daemon has creator %q", got)
	}

	// exec: argv and shell forms, stdin, exit codes.
	var ex mcpExec
	s.ok("vm_exec", map[string]any{"name": "agentvm", "argv": []string{"echo", "hello"}}, &ex)
	if ex.ExitCode != 0 || ex.Stdout != "hello\n" || ex.Truncated {
		t.Fatalf("echo: %+v", ex)
	}
	s.ok("vm_exec", map[string]any{"name": "agentvm", "command": "tr a-z A-Z; exit 3", "stdin": "quiet\n"}, &ex)
	if ex.ExitCode != 3 || ex.Stdout != "QUIET\n" {
		t.Fatalf("shell with stdin: %+v", ex)
	}

	s.ok("vm_exec", map[string]any{"name": "agentvm", "argv": []string{"no-such-command"}}, &ex)
	if ex.ExitCode != 127 || !strings.Contains(ex.Stderr, "command not found") {
		t.Fatalf("missing command: %+v", ex)
	}

	// Huge output is cut at max_output_bytes, and counted.
	s.ok("vm_exec", map[string]any{"name": "agentvm", "command": "head -c 3000000 /dev/zero | tr '\\0' x", "max_output_bytes": 1000}, &ex)
	if !ex.Truncated || len(ex.Stdout) != 1000 || ex.StdoutBytes != 3000000 || ex.ExitCode != 0 {
		t.Fatalf("huge output: truncated=%v len=%d total=%d exit=%d", ex.Truncated, len(ex.Stdout), ex.StdoutBytes, ex.ExitCode)
	}
	// A command past its timeout is killed and reported.
	marker := filepath.Join(work, "late")
	s.ok("vm_exec", map[string]any{"name": "agentvm", "command": "sleep 30; touch " + marker, "timeout_seconds": 1}, &ex)
	if !ex.TimedOut || ex.ExitCode != -1 {
		t.Fatalf("timeout: %+v", ex)
	}
	msg := s.fails("vm_exec", map[string]any{"name": "agentvm", "argv": []string{"true"}, "command": "true"})
	if !strings.Contains(msg, "give argv or command, not both") {
		t.Fatalf("argv and command: %q", msg)
	}
	if msg := s.fails("vm_exec", map[string]any{"name": "agentvm", "argv": []string{"true"}, "max_output_bytes": 1 << 30}); !strings.Contains(msg, "max_output_bytes") {
		t.Fatalf("huge max_output_bytes: %q", msg)
	}

	// write_file and read_file, text and binary.
	var wr struct{ Path string }
	s.ok("write_file", map[string]any{"name": "agentvm", "path": "/notes.txt", "content": "line one\n"}, &wr)
	var fc struct{ Encoding, Content string }
	s.ok("read_file", map[string]any{"name": "agentvm", "path": "/notes.txt"}, &fc)
	if fc.Encoding != "utf-8" || fc.Content != "line one\n" {
		t.Fatalf("read back %+v", fc)
	}
	bin := []byte{0, 0xff, 0xfe, 'x', 0x80}
	s.ok("write_file", map[string]any{"name": "agentvm", "path": "/blob", "content": base64.StdEncoding.EncodeToString(bin), "encoding": "base64"}, nil)
	s.ok("read_file", map[string]any{"name": "agentvm", "path": "/blob"}, &fc)
	if fc.Encoding != "base64" || fc.Content != base64.StdEncoding.EncodeToString(bin) {
		t.Fatalf("binary read back %+v", fc)
	}
	// The size limit refuses, it does not truncate.
	if msg := s.fails("read_file", map[string]any{"name": "agentvm", "path": "/notes.txt", "max_bytes": 4}); !strings.Contains(msg, "more than the limit of 4") && !strings.Contains(msg, "larger than 4 bytes") {
		t.Fatalf("read over max_bytes: %q", msg)
	}
	if msg := s.fails("read_file", map[string]any{"name": "agentvm", "path": "/missing"}); !strings.Contains(msg, "no such file") {
		t.Fatalf("missing file: %q", msg)
	}

	// list_dir (the stand-in guest's commands run on this host).
	if err := os.WriteFile(filepath.Join(work, "a.txt"), []byte("abc"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(work, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var ls struct {
		Entries []struct {
			Name, Type, Mode string
			Size             int64
		}
	}
	s.ok("list_dir", map[string]any{"name": "agentvm", "path": work}, &ls)
	if len(ls.Entries) != 2 || ls.Entries[0].Name != "a.txt" || ls.Entries[0].Type != "file" || ls.Entries[0].Size != 3 ||
		ls.Entries[0].Mode != "0640" || ls.Entries[1].Name != "sub" || ls.Entries[1].Type != "dir" {
		t.Fatalf("list_dir: %+v", ls.Entries)
	}

	// copy_in and copy_out within the root; out of it, refused.
	s.ok("copy_in", map[string]any{"name": "agentvm", "host_path": "a.txt", "guest_path": "/a.txt"}, nil)
	s.ok("copy_out", map[string]any{"name": "agentvm", "guest_path": "/a.txt", "host_path": "back.txt"}, nil)
	if b, err := os.ReadFile(filepath.Join(work, "back.txt")); err != nil || string(b) != "abc" {
		t.Fatalf("copy round trip: %q %v", b, err)
	}
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(work, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, hostPath := range []string{"../" + filepath.Base(outside) + "/secret", secret, "escape/secret", "escape"} {
		if msg := s.fails("copy_in", map[string]any{"name": "agentvm", "host_path": hostPath, "guest_path": "/stolen"}); !strings.Contains(msg, "outside") {
			t.Errorf("copy_in %s: %q", hostPath, msg)
		}
	}
	for _, hostPath := range []string{"../" + filepath.Base(outside) + "/new", filepath.Join(outside, "new"), "escape/new", "escape"} {
		if msg := s.fails("copy_out", map[string]any{"name": "agentvm", "guest_path": "/a.txt", "host_path": hostPath}); !strings.Contains(msg, "outside") {
			t.Errorf("copy_out %s: %q", hostPath, msg)
		}
	}
	if msg := s.fails("copy_out", map[string]any{"name": "agentvm", "guest_path": "/a.txt", "host_path": "back.txt"}); !strings.Contains(msg, "already exists") {
		t.Errorf("copy_out over a file: %q", msg)
	}
	if es := entries(outside); len(es) != 1 {
		t.Fatalf("something was written outside the root: %v", es)
	}

	// Resources: state and logs.
	rr, err := s.cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "banger://vm/agentvm"})
	if err != nil || len(rr.Contents) != 1 || !strings.Contains(rr.Contents[0].Text, `"state": "running"`) {
		t.Fatalf("vm resource: %v %+v", err, rr)
	}
	if _, err := s.cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "banger://vm/agentvm/logs"}); err != nil {
		t.Fatalf("logs resource: %v", err)
	}

	var del struct{ Deleted string }
	s.ok("vm_delete", map[string]any{"name": "agentvm"}, &del)
	if msg := s.fails("vm_show", map[string]any{"name": "agentvm"}); !strings.Contains(msg, `"agentvm"`) {
		t.Fatalf("show after delete: %q", msg)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("the timed-out command ran on to its end")
	}
}

func TestMCPAgentSeesOnlyItsVMs(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "human", "--vcpus", "1", "--memory", "256", "--disk", "128M")
	s := h.startMCP(h.dir)

	var list struct{ VMs []mcpVM }
	s.ok("vm_list", nil, &list)
	if len(list.VMs) != 0 {
		t.Fatalf("the agent sees %v", list.VMs)
	}
	for _, call := range []struct {
		tool string
		args map[string]any
	}{
		{"vm_show", map[string]any{"name": "human"}},
		{"vm_exec", map[string]any{"name": "human", "argv": []string{"true"}}},
		{"vm_delete", map[string]any{"name": "human"}},
		{"vm_stop", map[string]any{"name": "human"}},
		{"read_file", map[string]any{"name": "human", "path": "/etc/hostname"}},
		{"vm_fork", map[string]any{"source": "human", "name": "stolen"}},
	} {
		msg := s.fails(call.tool, call.args)
		if !strings.Contains(msg, `no VM named "human" among the VMs this agent created`) || !strings.Contains(msg, "hint: ") {
			t.Errorf("%s on another's VM: %q", call.tool, msg)
		}
	}
	if _, err := s.cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "banger://vm/human"}); err == nil {
		t.Errorf("the agent read another's VM as a resource")
	}
	if vm := h.vm("human"); vm.State != api.VMRunning {
		t.Fatalf("the human's VM is %s", vm.State)
	}

	// Its own VM is labelled with its session's creator, and a second
	// agent session does not see it.
	var mine mcpVM
	s.ok("vm_create", withArgs(smallVM, "name", "mine"), &mine)
	if !strings.HasPrefix(mine.Labels[api.LabelCreator], "mcp:") {
		t.Fatalf("creator label %q", mine.Labels[api.LabelCreator])
	}
	other := h.startMCP(h.dir)
	other.ok("vm_list", nil, &list)
	if len(list.VMs) != 0 {
		t.Fatalf("a second agent sees %v", list.VMs)
	}
	// --all reaches everything.
	all := h.startMCP(h.dir, "--all")
	all.ok("vm_list", nil, &list)
	if len(list.VMs) != 2 {
		t.Fatalf("--all sees %v", list.VMs)
	}
	var ex mcpExec
	all.ok("vm_exec", map[string]any{"name": "human", "argv": []string{"echo", "ok"}}, &ex)
	if ex.Stdout != "ok\n" {
		t.Fatalf("--all exec: %+v", ex)
	}
	s.ok("vm_delete", map[string]any{"name": "mine"}, nil)
	h.must("vm", "delete", "--force", "human")
}

func TestMCPErrorsAreToolErrors(t *testing.T) {
	h := newHost(t)
	s := h.startMCP(h.dir)
	// The daemon's sentence and hint, as the CLI prints them.
	msg := s.fails("vm_create", withArgs(smallVM, "name", "x", "image", "nosuchimage"))
	if !strings.Contains(msg, `no image named "nosuchimage"`) || !strings.Contains(msg, "hint: `banger image list`") {
		t.Fatalf("bad image: %q", msg)
	}
	if msg := s.fails("vm_create", withArgs(smallVM, "name", "Bad_Name")); !strings.Contains(msg, `invalid VM name "Bad_Name"`) {
		t.Fatalf("bad name: %q", msg)
	}
	if msg := s.fails("vm_create", withArgs(smallVM, "labels", map[string]any{"BAD KEY": "v"})); !strings.Contains(msg, "invalid label key") {
		t.Fatalf("bad label: %q", msg)
	}
	if msg := s.fails("vm_create", withArgs(smallVM, "ttl", "soon")); !strings.Contains(msg, `ttl "soon": give a duration`) {
		t.Fatalf("bad ttl: %q", msg)
	}
	if msg := s.fails("vm_exec", map[string]any{"name": "ghost", "argv": []string{"true"}}); !strings.Contains(msg, `"ghost"`) {
		t.Fatalf("missing VM: %q", msg)
	}
	// The server is still there after all of it.
	s.ok("vm_list", nil, nil)
}

// Over streamable HTTP (a unix socket) each session is its own agent: a VM
// one session made is invisible to the next.
func TestMCPHTTPSessionsAreSeparateAgents(t *testing.T) {
	h := newHost(t)
	sock := filepath.Join(h.dir, "mcp.sock")
	cmd := exec.Command(bins.Banger, "mcp", "--http", "unix:"+sock)
	cmd.Env, cmd.Dir, cmd.Stderr = h.env, h.dir, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	eventually(t, 30*time.Second, "the MCP socket", func() bool {
		st, err := os.Stat(sock)
		return err == nil && st.Mode()&os.ModeSocket != 0
	})
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
	connect := func() *mcpSession {
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
		client := sdk.NewClient(&sdk.Implementation{Name: "e2e-http", Version: "v0"}, nil)
		cs, err := client.Connect(context.Background(), &sdk.StreamableClientTransport{Endpoint: "http://banger/mcp", HTTPClient: hc}, nil)
		if err != nil {
			t.Fatalf("connect over HTTP: %v", err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		return &mcpSession{t: t, cs: cs}
	}
	a, b := connect(), connect()
	var vm mcpVM
	a.ok("vm_create", withArgs(smallVM, "name", "http-a"), &vm)
	var ex mcpExec
	a.ok("vm_exec", map[string]any{"name": "http-a", "argv": []string{"echo", "over-http"}}, &ex)
	if ex.Stdout != "over-http\n" {
		t.Fatalf("exec over HTTP: %+v", ex)
	}
	var list struct{ VMs []mcpVM }
	b.ok("vm_list", nil, &list)
	if len(list.VMs) != 0 {
		t.Fatalf("session b sees %v", list.VMs)
	}
	if msg := b.fails("vm_delete", map[string]any{"name": "http-a"}); !strings.Contains(msg, "among the VMs this agent created") {
		t.Fatalf("session b deleting a's VM: %q", msg)
	}
	a.ok("vm_delete", map[string]any{"name": "http-a"}, nil)
}

// Snapshots through MCP: the forks an agent makes are its own.
func TestMCPSnapshotForkPause(t *testing.T) {
	h := newHost(t)
	s := h.startMCP(h.dir, "--agent-name", "forker")
	s.ok("vm_create", withArgs(smallVM, "name", "base"), nil)
	var vm mcpVM
	s.ok("vm_pause", map[string]any{"name": "base"}, &vm)
	if vm.State != "paused" {
		t.Fatalf("paused: %+v", vm)
	}
	s.ok("vm_resume", map[string]any{"name": "base"}, &vm)
	var snap struct{ Name string }
	s.ok("vm_snapshot", map[string]any{"name": "base", "snapshot": "base-1"}, &snap)
	if snap.Name != "base-1" {
		t.Fatalf("snapshot: %+v", snap)
	}
	var forks struct{ VMs []mcpVM }
	s.ok("vm_fork", map[string]any{"source": "base-1", "name": "child"}, &forks)
	if len(forks.VMs) != 1 || forks.VMs[0].Labels[api.LabelCreator] != "mcp:forker" {
		t.Fatalf("forks: %+v", forks.VMs)
	}
	s.ok("vm_rollback", map[string]any{"name": "base", "snapshot": "base-1"}, &vm)
	if vm.State != "running" {
		t.Fatalf("rolled back: %+v", vm)
	}
	// Another agent can neither fork this one's snapshot nor see the fork.
	other := h.startMCP(h.dir, "--agent-name", "other")
	if msg := other.fails("vm_fork", map[string]any{"source": "base-1", "name": "stolen"}); !strings.Contains(msg, `no snapshot named "base-1"`) {
		t.Fatalf("fork of another's snapshot: %q", msg)
	}
	// Nor delete it; its owner can.
	if msg := other.fails("snapshot_delete", map[string]any{"snapshot": "base-1"}); !strings.Contains(msg, `no snapshot named "base-1"`) {
		t.Fatalf("delete of another's snapshot: %q", msg)
	}
	var deleted struct{ Deleted string }
	s.ok("snapshot_delete", map[string]any{"snapshot": "base-1"}, &deleted)
	if deleted.Deleted != "base-1" {
		t.Fatalf("snapshot_delete: %+v", deleted)
	}
	if msg := s.fails("snapshot_delete", map[string]any{"snapshot": "base-1"}); !strings.Contains(msg, "base-1") {
		t.Fatalf("second delete: %q", msg)
	}
	// Networking is off in this test: the daemon's refusal comes back as a tool error.
	if msg := s.fails("port_forward", map[string]any{"name": "base", "spec": "18080:80"}); msg == "" {
		t.Fatal("port_forward without networking: empty error")
	}
	s.ok("vm_delete", map[string]any{"name": "child"}, nil)
	s.ok("vm_delete", map[string]any{"name": "base", "force": true}, nil)
}
