package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
)

func TestImageBuildBusyboxRejectsDebianOptions(t *testing.T) {
	d := imageTestDaemon(t)
	ctx := context.Background()
	if err := d.store.CreateImage(ctx, store.Image{ID: store.NewID(), Name: "taken", KernelPath: "/k", RootfsPath: "/r", Source: store.ImageSourceImport}); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(t.TempDir(), "notakernel")
	if err := os.WriteFile(text, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req  api.ImageBuildRequest
		code api.Code
		want string
	}{
		{api.ImageBuildRequest{Name: "x", Packages: []string{"git"}}, api.CodeInvalidArgument, "--packages"},
		{api.ImageBuildRequest{Name: "x", Scripts: []string{"/setup.sh"}}, api.CodeInvalidArgument, "--script"},
		{api.ImageBuildRequest{Name: "x", User: "dev"}, api.CodeInvalidArgument, "--user"},
		{api.ImageBuildRequest{Name: "x", SizeBytes: 1 << 20}, api.CodeInvalidArgument, "too small"},
		{api.ImageBuildRequest{Name: "x", Kernel: "vmlinux"}, api.CodeInvalidArgument, "must be absolute"},
		{api.ImageBuildRequest{Name: "x", Kernel: text}, api.CodeInvalidArgument, "neither an ELF vmlinux nor a bzImage"},
		{api.ImageBuildRequest{Name: "taken"}, api.CodeAlreadyExists, "already exists"},
	}
	for _, tc := range cases {
		tc.req.From = "busybox"
		_, err := d.imageBuild(ctx, tc.req, noProgress)
		if !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v (%s), want %s containing %q", tc.req, err, api.CodeOf(err), tc.code, tc.want)
		}
	}
	if _, err := d.imageBuild(ctx, api.ImageBuildRequest{Name: "x", From: "alpine"}, noProgress); !api.IsCode(err, api.CodeInvalidArgument) ||
		!strings.Contains(err.Error(), "busybox, debian or debian:SUITE") {
		t.Errorf("unknown --from: %v", err)
	}
	assertNoImageLeftovers(t, d, 1)
}
