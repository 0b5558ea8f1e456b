package cli

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// writeCounter counts the writes that reach it, as a file counts system calls.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// `vm list` reaches stdout in one write however many VMs there are, and
// still aligns its columns.
func TestVMTableIsOneWrite(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	var vms []api.VM
	for i := range 100 {
		vms = append(vms, api.VM{Name: fmt.Sprintf("vm%d", i), State: api.VMStopped, Image: "default",
			VCPUs: 2, MemoryMiB: 1024, DiskSizeBytes: 4 << 30, CreatedAt: now.Add(-time.Hour)})
	}
	var w writeCounter
	renderVMTable(&w, vms, now)
	if w.writes != 1 {
		t.Errorf("the table of 100 VMs took %d writes, want 1", w.writes)
	}
	lines := strings.Split(strings.TrimRight(w.String(), "\n"), "\n")
	if len(lines) != 101 {
		t.Fatalf("%d lines, want a header and 100 rows", len(lines))
	}
	if col := strings.Index(lines[0], "STATE"); col < 0 || strings.Index(lines[100], "stopped") != col {
		t.Errorf("columns not aligned:\n%s\n%s", lines[0], lines[100])
	}
}
