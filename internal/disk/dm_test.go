package disk

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
	r := &recordingRunner{reply: func(c Command) ([]byte, error) {
		if c.Args[0] == "ls" {
			return []byte("banger-abc\t(253:1)\nbanger-abc-origin\t(253:0)\nvg-root\t(253:2)\n"), nil
		}
		return nil, nil
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
	if !slices.Equal(r.cmds, want) {
		t.Fatalf("commands %q, want %q", r.cmds, want)
	}
	if r.stdin[0] != "0 2048 snapshot /dev/loop1 /dev/loop2 P 8\n" {
		t.Fatalf("table on stdin %q", r.stdin[0])
	}
	// Nothing reaches dmsetup with a bad name or table.
	r.cmds = nil
	if err := d.Create(ctx, "vg-root", table); err == nil {
		t.Error("created a non-banger name")
	}
	if err := d.Remove(ctx, "--force"); err == nil {
		t.Error("removed with an option for a name")
	}
	if err := d.Create(ctx, "banger-x", []DMTarget{{0, 1, "linear", []string{"/etc/passwd", "0"}}}); err == nil {
		t.Error("accepted a file as a device")
	}
	if len(r.cmds) != 0 {
		t.Fatalf("ran %v for invalid requests", r.cmds)
	}
	if got := parseDMList("No devices found\n"); len(got) != 0 {
		t.Fatalf("parse empty list: %v", got)
	}
}

func overlayFixture(t *testing.T, baseSize int64) (Overlays, *fakeLoops, *fakeDM, OverlaySpec) {
	dir := t.TempDir()
	base := filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, baseSize); err != nil {
		t.Fatal(err)
	}
	loops, dm := newFakeLoops(), newFakeDM()
	return Overlays{Loops: loops, DM: dm}, loops, dm, OverlaySpec{ID: "0a1b2c", Base: base, COW: filepath.Join(dir, COWFileName("0a1b2c")), SizeBytes: 4 << 30}
}

func TestOverlayCreateExtendsAndRemoves(t *testing.T) {
	ov, loops, dm, spec := overlayFixture(t, 1<<30)
	ctx := context.Background()
	got, err := ov.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if got.Device != "/dev/mapper/banger-0a1b2c" || !got.COWCreated {
		t.Fatalf("overlay %+v", got)
	}
	origin := dm.devices["banger-0a1b2c-origin"]
	wantOrigin := []DMTarget{
		{0, 2097152, "linear", []string{got.BaseLoop, "0"}},
		{2097152, 8388608 - 2097152, "zero", nil},
	}
	if FormatTable(origin) != FormatTable(wantOrigin) {
		t.Fatalf("origin table:\n%s\nwant:\n%s", FormatTable(origin), FormatTable(wantOrigin))
	}
	snap := FormatTable(dm.devices["banger-0a1b2c"])
	if snap != "0 8388608 snapshot /dev/mapper/banger-0a1b2c-origin "+got.COWLoop+" P 8\n" {
		t.Fatalf("snapshot table %q", snap)
	}
	if !loops.attached[got.BaseLoop].ReadOnly || loops.attached[got.COWLoop].ReadOnly {
		t.Fatal("base must be read-only and the COW writable")
	}
	st, err := os.Stat(spec.COW)
	if err != nil || st.Size() < spec.SizeBytes {
		t.Fatalf("COW file: %v, %v", st, err)
	}

	if err := ov.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if len(dm.devices) != 0 || len(loops.attached) != 0 {
		t.Fatalf("left devices %v, loops %v", dm.devices, loops.attached)
	}
	if _, err := os.Stat(spec.COW); err != nil {
		t.Fatal("Remove deleted the COW file, which is the VM's disk")
	}
	// Stale devices from a crash are cleared before creating.
	if _, err := ov.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	stale, err := ov.Create(ctx, spec)
	if err != nil || len(dm.devices) != 2 || len(loops.attached) != 2 {
		t.Fatalf("create over stale devices: %+v, %v; dm %v loops %v", stale, err, dm.devices, loops.attached)
	}
	if err := ov.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	// A restart reuses the COW file.
	again, err := ov.Create(ctx, spec)
	if err != nil || again.COWCreated {
		t.Fatalf("re-create: %+v, %v", again, err)
	}
	if err := ov.Remove(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := ov.Remove(ctx, spec.ID); err != nil {
		t.Fatalf("removing a removed overlay: %v", err)
	}
}

func TestOverlaySameSizeNeedsNoOrigin(t *testing.T) {
	ov, _, dm, spec := overlayFixture(t, 1<<30)
	spec.SizeBytes = 1 << 30
	got, err := ov.Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(dm.devices) != 1 {
		t.Fatalf("devices %v, want only the snapshot", dm.devices)
	}
	if !strings.Contains(FormatTable(dm.devices["banger-0a1b2c"]), "snapshot "+got.BaseLoop+" ") {
		t.Fatalf("snapshot not directly on the base loop: %v", dm.devices)
	}
}

func TestOverlayFailuresUndoEverything(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*fakeLoops, *fakeDM, *OverlaySpec)
		want  string
	}{
		{"dm unavailable", func(_ *fakeLoops, d *fakeDM, _ *OverlaySpec) {
			d.unavailable = HostDMSetup(nil).Available()
		}, "device-mapper is unavailable"},
		{"snapshot create fails", func(_ *fakeLoops, d *fakeDM, _ *OverlaySpec) { d.failCreate = "banger-0a1b2c" }, "dmsetup create failed"},
		{"origin create fails", func(_ *fakeLoops, d *fakeDM, _ *OverlaySpec) { d.failCreate = "banger-0a1b2c-origin" }, "dmsetup create failed"},
		{"cow attach fails", func(l *fakeLoops, _ *fakeDM, s *OverlaySpec) { l.failOn = s.COW }, "attach failed"},
		{"disk smaller than image", func(_ *fakeLoops, _ *fakeDM, s *OverlaySpec) { s.SizeBytes = 1 << 20 }, "smaller than the image"},
		{"missing base", func(_ *fakeLoops, _ *fakeDM, s *OverlaySpec) { s.Base += ".missing" }, "no such file"},
		{"bad id", func(_ *fakeLoops, _ *fakeDM, s *OverlaySpec) { s.ID = "../x" }, "lowercase letters and digits"},
		{"unaligned size", func(_ *fakeLoops, _ *fakeDM, s *OverlaySpec) { s.SizeBytes = 4<<30 + 1 }, "multiple of 512"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ov, loops, dm, spec := overlayFixture(t, 1<<30)
			tc.setup(loops, dm, &spec)
			_, err := ov.Create(context.Background(), spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if len(dm.devices) != 0 || len(loops.attached) != 0 {
				t.Fatalf("left dm %v, loops %v", dm.devices, loops.attached)
			}
			if _, err := os.Stat(spec.COW); !os.IsNotExist(err) {
				t.Fatal("left the COW file it created")
			}
		})
	}
}

func TestCleanupOrphansWithFakes(t *testing.T) {
	ov, loops, dm, spec := overlayFixture(t, 1<<30)
	ctx := context.Background()
	if _, err := ov.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	live := spec
	live.ID, live.COW = "feed", filepath.Join(filepath.Dir(spec.COW), COWFileName("feed"))
	if _, err := ov.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
	// Foreign devices are never touched.
	dm.devices["vg-root"] = []DMTarget{{0, 8, "zero", nil}}
	loops.attached["/dev/loop99"] = Loop{Device: "/dev/loop99", Name: "/var/lib/snapd/core.snap"}

	got, err := ov.CleanupOrphans(ctx, func(id string) bool { return id == "feed" }, filepath.Join(filepath.Dir(spec.COW), "*"))
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot goes before the origin it sits on.
	if !slices.Equal(got.DMDevices, []string{"banger-0a1b2c", "banger-0a1b2c-origin"}) {
		t.Fatalf("removed dm %v", got.DMDevices)
	}
	if len(got.Loops) != 2 || len(got.COWFiles) != 1 || got.COWFiles[0] != spec.COW {
		t.Fatalf("cleanup %+v", got)
	}
	for _, keep := range []string{"vg-root", "banger-feed", "banger-feed-origin"} {
		if _, ok := dm.devices[keep]; !ok {
			t.Errorf("%s was removed", keep)
		}
	}
	if _, ok := loops.attached["/dev/loop99"]; !ok {
		t.Error("foreign loop detached")
	}
	if _, err := os.Stat(live.COW); err != nil {
		t.Error("live COW removed")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(spec.COW), "rootfs.ext4")); err != nil {
		t.Error("non-COW file removed")
	}
}

// TestProbeOnThisHost: no device-mapper here, so DMSnapshot must be
// reported missing with the reason, and sparse copy is always offered.
func TestProbeOnThisHost(t *testing.T) {
	methods, missing := Probe(ProbeSpec{Dir: t.TempDir(), Privileged: os.Geteuid() == 0, DM: HostDMSetup(ExecRunner{}), Loops: HostLoops()})
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
