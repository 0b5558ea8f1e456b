package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/pkg/client"
)

// fakeDaemon serves vm.list (one VM, "dev") and vm.show (not_found for
// anything) on a fresh socket: the daemon's real api.Server with the
// daemon's handlers replaced, enough to see the public client talk to it.
func fakeDaemon(t *testing.T) string {
	t.Helper()
	srv := api.NewServer(slog.New(slog.DiscardHandler), time.Now)
	api.Handle(srv, api.MethodVMList, func(context.Context, struct{}, api.Progress) (api.VMList, error) {
		return api.VMList{VMs: []api.VM{{ID: "v1", Name: "dev", State: api.VMRunning}}}, nil
	})
	api.Handle(srv, api.MethodVMShow, func(_ context.Context, req api.VMRef, _ api.Progress) (api.VM, error) {
		return api.VM{}, api.Errorf(api.CodeNotFound, "no VM named %q", req.Name)
	})
	// A short path: t.TempDir() can exceed the 108-byte socket path limit.
	dir, err := os.MkdirTemp("", "bgclient")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close(); _ = os.RemoveAll(dir) })
	return sock
}

func TestClientTalksToTheDaemon(t *testing.T) {
	c := client.New(fakeDaemon(t))
	defer c.Close()
	ctx := context.Background()
	vms, err := c.VMList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Name != "dev" || vms[0].State != client.VMRunning {
		t.Fatalf("VMList = %+v, want the one running VM dev", vms)
	}
	_, err = c.VMShow(ctx, "nope")
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || !client.IsCode(err, client.CodeNotFound) {
		t.Fatalf("VMShow(nope) = %v, want a not_found *client.Error", err)
	}
}

func TestNoDaemonIsErrDaemonUnreachable(t *testing.T) {
	c := client.New(filepath.Join(t.TempDir(), "absent.sock"))
	defer c.Close()
	if _, err := c.VMList(context.Background()); !errors.Is(err, client.ErrDaemonUnreachable) {
		t.Fatalf("VMList without a daemon = %v, want ErrDaemonUnreachable", err)
	}
}

// TestDefaultSocketFollowsTheSystemInstall: Default picks the socket the CLI
// would, the system daemon's for the recorded install owner (root never
// is) and the user's own otherwise.
func TestDefaultSocketFollowsTheSystemInstall(t *testing.T) {
	root := t.TempDir()
	t.Setenv("BANGER_SYSTEM_ROOT", root)
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(root, "xdg"))
	user, err := paths.Detect(false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := client.DefaultSocket(); err != nil || got != user.SocketPath() {
		t.Fatalf("no install: DefaultSocket = %q, %v; want %q", got, err, user.SocketPath())
	}
	system := paths.System(root)
	if err := os.MkdirAll(filepath.Dir(system.InstallMetaPath()), 0o755); err != nil {
		t.Fatal(err)
	}
	meta := installmeta.Meta{Version: "v1", OwnerUser: "me", OwnerUID: os.Getuid(), OwnerGID: os.Getgid(), InstalledAt: time.Unix(0, 0)}
	if err := installmeta.Write(system.InstallMetaPath(), meta); err != nil {
		t.Fatal(err)
	}
	want := system.SocketPath()
	if os.Getuid() == 0 {
		want = user.SocketPath()
	}
	if got, err := client.DefaultSocket(); err != nil || got != want {
		t.Fatalf("uid %d owns the system install: DefaultSocket = %q, %v; want %q", os.Getuid(), got, err, want)
	}
}

// TestUsableFromAnotherModule builds a program in a separate module (a
// replace directive points at this repository) that imports pkg/client,
// and runs it against a daemon: the aliases of internal/api's types are
// usable outside the banger module.
func TestUsableFromAnotherModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program in a temporary module")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build the external program")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	gomod := "module example.com/usebanger\n\ngo 1.26.0\n\nrequire github.com/banger-dev/banger v0.0.0\n\nreplace github.com/banger-dev/banger => " + repo + "\n"
	writeFile(t, filepath.Join(mod, "go.mod"), gomod)
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(mod, "go.sum"), string(sum))
	writeFile(t, filepath.Join(mod, "main.go"), externalProgram)

	bin := filepath.Join(mod, "usebanger")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	build.Dir = mod
	// Resolve the module graph from the local module cache only: the
	// test must not reach the network.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a program importing pkg/client from another module: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, fakeDaemon(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("external program: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "dev running\nnope: not_found"; got != want {
		t.Fatalf("external program printed %q, want %q", got, want)
	}
}

const externalProgram = `package main

import (
	"context"
	"fmt"
	"os"

	"github.com/banger-dev/banger/pkg/client"
)

func main() {
	c := client.New(os.Args[1])
	defer c.Close()
	ctx := context.Background()
	var vms []client.VM
	vms, err := c.VMList(ctx)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for _, vm := range vms {
		fmt.Println(vm.Name, vm.State)
	}
	_, err = c.VMShow(ctx, "nope")
	var code client.Code = client.CodeOf(err)
	fmt.Printf("nope: %s\n", code)
}
`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
