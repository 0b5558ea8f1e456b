package disk

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestValidateTable(t *testing.T) {
	good := []DMTarget{
		{0, 1000, "linear", []string{"/dev/loop3", "0"}},
		{1000, 24, "zero", nil},
	}
	if err := ValidateTable(good); err != nil {
		t.Fatal(err)
	}
	snap := []DMTarget{{0, 1024, "snapshot", []string{"/dev/mapper/banger-abc-origin", "/dev/loop4", "P", "8"}}}
	if err := ValidateTable(snap); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]DMTarget{
		"empty":          nil,
		"gap":            {{0, 10, "zero", nil}, {11, 10, "zero", nil}},
		"zero length":    {{0, 0, "zero", nil}},
		"unknown target": {{0, 10, "crypt", []string{"aes", "key", "0", "/dev/loop1", "0"}}},
		"foreign device": {{0, 10, "linear", []string{"/dev/sda", "0"}}},
		"foreign mapper": {{0, 10, "linear", []string{"/dev/mapper/root", "0"}}},
		"traversal":      {{0, 10, "linear", []string{"/dev/loop1/../sda", "0"}}},
		"option smuggle": {{0, 10, "snapshot", []string{"/dev/loop1", "/dev/loop2", "P", "8 1 discard"}}},
		"bad persist":    {{0, 10, "snapshot", []string{"/dev/loop1", "/dev/loop2", "X", "8"}}},
		"arg count":      {{0, 10, "linear", []string{"/dev/loop1"}}},
	}
	for name, table := range bad {
		if err := ValidateTable(table); err == nil {
			t.Errorf("%s: accepted %v", name, table)
		}
	}
}

func TestDMSetupCommands(t *testing.T) {
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if c.Args[0] == "ls" {
			return systemtest.Print("banger-abc\t(253:1)\nbanger-abc-origin\t(253:0)\nvg-root\t(253:2)\n")
		}
		return system.Output{}, nil
	}}
	d := DMSetup{Runner: r, Control: filepath.Join(t.TempDir(), "control")}
	if err := d.Available(); err == nil || !strings.Contains(err.Error(), "device-mapper is unavailable") {
		t.Fatalf("available without control: %v", err)
	}
	ctx := context.Background()
	table := []DMTarget{{0, 2048, "snapshot", []string{"/dev/loop1", "/dev/loop2", "P", "8"}}}
	if err := d.Create(ctx, "banger-abc", table); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, "banger-abc"); err != nil {
		t.Fatal(err)
	}
	names, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"banger-abc", "banger-abc-origin", "vg-root"}) {
		t.Fatalf("list = %v", names)
	}
	want := []string{"dmsetup create banger-abc", "dmsetup remove --retry banger-abc", "dmsetup ls"}
	if !slices.Equal(r.Lines(), want) {
		t.Fatalf("commands %q, want %q", r.Lines(), want)
	}
	if r.Stdin()[0] != "0 2048 snapshot /dev/loop1 /dev/loop2 P 8\n" {
		t.Fatalf("table on stdin %q", r.Stdin()[0])
	}
	// Nothing reaches dmsetup with a bad name or table.
	ran := len(r.Lines())
	if err := d.Create(ctx, "vg-root", table); err == nil {
		t.Error("created a non-banger name")
	}
	if err := d.Remove(ctx, "--force"); err == nil {
		t.Error("removed with an option for a name")
	}
	if err := d.Create(ctx, "banger-x", []DMTarget{{0, 1, "linear", []string{"/etc/passwd", "0"}}}); err == nil {
		t.Error("accepted a file as a device")
	}
	if got := r.Lines(); len(got) != ran {
		t.Fatalf("ran %v for invalid requests", got[ran:])
	}
	if got := parseDMList("No devices found\n"); len(got) != 0 {
		t.Fatalf("parse empty list: %v", got)
	}
}

// TestProbeOnThisHost: no device-mapper here, so DMSnapshot must be
// reported missing with the reason, and sparse copy is always offered.
func TestProbeOnThisHost(t *testing.T) {
	methods, missing := Probe(ProbeSpec{Dir: t.TempDir(), Privileged: os.Geteuid() == 0, DM: HostDMSetup(system.ExecRunner{}), Loops: HostLoops()})
	if methods[len(methods)-1] != SparseCopy {
		t.Fatalf("methods %v do not end with sparse copy", methods)
	}
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		if slices.Contains(methods, DMSnapshot) || !strings.Contains(missing[DMSnapshot], "") {
			t.Fatalf("dm offered without /dev/mapper/control: %v %v", methods, missing)
		}
		t.Logf("dm-snapshot unavailable: %s", missing[DMSnapshot])
	}
	if msg, ok := missing[Reflink]; ok {
		t.Logf("reflink unavailable: %s", msg)
	}
	fake := newFakeDM()
	methods, _ = Probe(ProbeSpec{Dir: t.TempDir(), Privileged: true, DM: fake, Loops: Loops{Dev: "/dev"}})
	if _, err := os.Stat("/dev/loop-control"); err == nil && methods[0] != DMSnapshot {
		t.Fatalf("with dm and loops available, dm-snapshot should come first: %v", methods)
	}
	methods, missing = Probe(ProbeSpec{Dir: t.TempDir(), Privileged: false, DM: fake, Loops: HostLoops()})
	if slices.Contains(methods, DMSnapshot) || !strings.Contains(missing[DMSnapshot], "root") {
		t.Fatalf("unprivileged: %v %v", methods, missing)
	}
}
