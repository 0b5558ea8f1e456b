package firecracker

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) == "1" {
		os.Exit(runFakeFirecracker(os.Args[1:]))
	}
	code := m.Run()
	if honestBins.dir != "" {
		_ = os.RemoveAll(honestBins.dir)
	}
	os.Exit(code)
}
