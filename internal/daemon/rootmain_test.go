package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
)

func TestRootHelperServesTheInstallOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the root helper runs as root; run `make test` as root")
	}
	root := t.TempDir()
	layout := paths.System(root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	err := rootHelper(ctx, layout, nil, privileged.HostBackend(), nil)
	if err == nil || !strings.Contains(err.Error(), "banger system install") {
		t.Fatalf("without install metadata: %v", err)
	}
	if err := installmeta.Write(layout.InstallMetaPath(), installmeta.Meta{OwnerUser: "alice", OwnerUID: 4242, OwnerGID: 4343}); err != nil {
		t.Fatal(err)
	}
	// The helper launches the jailer root's config names.
	bin := t.TempDir()
	for _, b := range []string{"jailer", "firecracker"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf("[firecracker]\nbinary = %q\njailer = %q\n", filepath.Join(bin, "firecracker"), filepath.Join(bin, "jailer"))
	if err := os.WriteFile(layout.ConfigFile(), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- rootHelper(ctx, layout, slog.New(slog.DiscardHandler), privileged.HostBackend(), ready)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("helper exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("helper did not start")
	}
	fi, err := os.Stat(layout.RuntimeDir)
	if err != nil || fi.Mode()&(fs.ModePerm|fs.ModeSticky) != 0o770|fs.ModeSticky || fi.Sys().(*syscall.Stat_t).Gid != 4343 {
		t.Fatalf("runtime dir: %v %v", fi.Mode(), err)
	}
	fi, err = os.Stat(layout.HelperSocketPath())
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 4343 {
		t.Fatalf("helper socket: %v %v", fi.Mode(), err)
	}
	c := privileged.NewClient(layout.HelperSocketPath())
	info, err := c.Info(ctx)
	if err != nil || info.OwnerUID != 4242 || info.Jailer != filepath.Join(bin, "jailer") {
		t.Fatalf("info: %+v %v", info, err)
	}
	// Root is not the owner: operations are refused.
	if err := privileged.Do(ctx, c, privileged.OpDeleteBridge, privileged.Named{Name: "banger0"}); !errors.Is(err, privileged.ErrRefused) {
		t.Fatalf("root operating the helper: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := os.Stat(layout.HelperSocketPath()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}
