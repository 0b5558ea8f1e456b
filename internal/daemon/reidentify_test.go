package daemon

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/store"
)

// TestReidentifyRunsTheGuestSetupAlongside: a restored guest's identity
// and its guest setup share one agent session but not a turn — the setup
// (here, the owner's SSH key landing in authorized_keys) goes on while the
// guest is still taking its identity. One after another, the identity
// below would wait for a key that only comes after it, and fail.
func TestReidentifyRunsTheGuestSetupAlongside(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	keyInstalled := func() bool {
		found := false
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			found = found || (err == nil && d.Name() == "authorized_keys")
			return nil
		})
		return found
	}
	setup := &agent.GuestSetup{Root: root, SetHostname: func(string) error {
		for deadline := time.Now().Add(10 * time.Second); !keyInstalled(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				return errors.New("the guest setup did not run while the identity was being taken")
			}
		}
		return nil
	}}
	c := dialGuest(t, agentWithSetup(t, root, setup))
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { must(t, st.Close()) }()
	i := lcIdentity{guest: lcGuest{store: st, ownerDir: t.TempDir(), domain: "banger", log: slog.New(slog.DiscardHandler)}, now: time.Now}
	vm := store.VM{ID: store.NewID(), Name: "fork-1"}
	id, err := i.identityFor(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	if err := i.reidentifyOver(ctx, vm, c, id, func(r lifecycle.Report) { stages = append(stages, r.Stage) }); err != nil {
		t.Fatalf("reidentify: %v", err)
	}
	if name, err := os.ReadFile(filepath.Join(root, "etc", "hostname")); err != nil || strings.TrimSpace(string(name)) != "fork-1" {
		t.Errorf("hostname file %q, %v", name, err)
	}
	if !slices.Contains(stages, "ssh") || !slices.Contains(stages, "identity") {
		t.Errorf("stages %v, want the setup's ssh and identity", stages)
	}
}

// agentWithSetup runs an in-process agent over a unix socket whose file
// root is root and which applies identities through setup.
func agentWithSetup(t *testing.T, root string, setup *agent.GuestSetup) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	ln, err := agent.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &agent.Server{Version: "test", Root: root, Setup: setup}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return sock
}
