package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/agent/agenttest"
	"github.com/banger-dev/banger/test/testbin"
)

// TestHostileGuestBinary runs the binary the way the fake Firecracker hosts
// a guest (--listen unix:PATH, behaviour in the environment) and checks a
// host client gets its lies.
func TestHostileGuestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hostileagent")
	if err := testbin.GoBuild(bin, "./test/hostileagent", ""); err != nil {
		t.Fatal(err)
	}
	b := agenttest.Behaviour{
		Version: "v9\x1b[2J",
		Tree:    []agenttest.File{{Path: "", Mode: 0o4777, Data: []byte("payload")}},
	}
	spec, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock)
	cmd.Env = append(os.Environ(), agenttest.EnvBehaviour+"="+string(spec))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	for conn == nil {
		if conn, err = net.Dial("unix", sock); err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("hostileagent never listened: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	c, err := agent.NewClient(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	info, err := c.Health(ctx)
	if err != nil || info.AgentVersion != b.Version {
		t.Fatalf("health = %q, %v; want version %q", info, err, b.Version)
	}
	dest := filepath.Join(dir, "got")
	stream, err := c.Open(ctx, agent.Request{Op: agent.OpGet, Get: &agent.GetRequest{Path: "/x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if _, err := agent.ReceiveGet(stream, dest, agent.TreeReceiver{Umask: 0o022}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o755 {
		t.Errorf("copied file mode %v, want -rwxr-xr-x", st.Mode())
	}
	if got, _ := os.ReadFile(dest); string(got) != "payload" {
		t.Errorf("copied %q", got)
	}
}
