package qemu

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(envFakeQEMU) == "1" {
		os.Exit(runFakeQEMU(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// shortTempDir returns a fresh directory with a short path: Unix socket
// paths are limited to 108 bytes and t.TempDir embeds the test name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bqm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
