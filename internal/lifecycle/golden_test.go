package lifecycle

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// goldens lists the golden snapshots in w.
func goldens(w *world) []Snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Snapshot
	for _, s := range w.snaps {
		if s.Golden {
			out = append(out, s)
		}
	}
	return out
}

func TestColdCreateMakesTheGoldenSnapshotBeforeTheGuestSetup(t *testing.T) {
	w := newWorld(t)
	w.goldenKey = "0123abcd4567"
	m := w.manager()
	vm, err := m.Create(context.Background(), CreateRequest{Name: "web", Network: []byte(`{"forwards":[1]}`)}, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	calls := w.log()
	agent, setup := slices.Index(calls, "agent.wait"), slices.Index(calls, "guest.setup")
	want := []string{"agent.wait", "snapfiles.fits", "snapstore.insert", "snapfiles.make", "inst.pause", "inst.snapshot",
		"snapfiles.savedisk", "inst.resume", "snapstore.save:ready", "guest.setup"}
	if agent < 0 || setup < 0 || !slices.Equal(calls[agent:setup+1], want) {
		t.Errorf("calls %v: want %v between the agent's answer and the guest setup", calls, want)
	}
	g := goldens(w)
	if len(g) != 1 || g[0].Name != "golden-base-0123abcd" || g[0].Key != "0123abcd4567" || g[0].State != SnapshotReady ||
		g[0].Network != nil || g[0].ImageID != "img1" {
		t.Fatalf("golden snapshots %+v", g)
	}
	if got := w.vm(vm.ID); got.State != Running || instOf(t, m, vm.ID).isPaused() {
		t.Errorf("the VM is %s", got.State)
	}
}

func TestWarmOrColdCreate(t *testing.T) {
	cases := []struct {
		name   string
		key    string
		golden bool // a golden snapshot with key "k1" exists
		cold   bool
		edit   func(w *world, m *Manager)
		warm   bool // started from the golden snapshot
		makes  bool // made a golden snapshot
	}{
		{"no key: cold, nothing made", "", false, false, nil, false, false},
		{"no golden yet: cold, golden made", "k1", false, false, nil, false, true},
		{"golden: warm", "k1", true, false, nil, true, false},
		{"golden but --cold", "k1", true, true, nil, false, false},
		{"other key: cold, golden made", "k2", true, false, nil, false, true},
		{"driver cannot restore", "k1", true, false, func(w *world, m *Manager) { m.ports.Driver = bootOnlyDriver{fakeDriver{w}} }, false, false},
		{"no identity", "k1", true, false, func(_ *world, m *Manager) { m.ports.Identity = nil }, false, false},
		{"no golden keys", "k1", true, false, func(_ *world, m *Manager) { m.ports.Golden = nil }, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			if c.golden {
				w.goldenKey = "k1"
				create(t, w, m, "first", false)
				if len(goldens(w)) != 1 {
					t.Fatal("no golden snapshot to start from")
				}
			}
			w.goldenKey = c.key
			if c.edit != nil {
				c.edit(w, m)
			}
			before, had := len(w.log()), len(goldens(w))
			vm, err := m.Create(context.Background(), CreateRequest{Name: "web", Cold: c.cold}, noProgress)
			if err != nil {
				t.Fatal(err)
			}
			calls := since(w, before)
			warm := slices.Contains(calls, "driver.restore") && slices.Contains(calls, "identity.reidentify")
			cold := slices.Contains(calls, "files.prepare") && slices.Contains(calls, "driver.launch") && slices.Contains(calls, "guest.setup")
			if warm != c.warm || cold == c.warm {
				t.Errorf("warm %v cold %v, want warm %v (calls %v)", warm, cold, c.warm, calls)
			}
			if made := slices.Contains(calls, "inst.snapshot"); made != c.makes {
				t.Errorf("made a golden snapshot: %v, want %v", made, c.makes)
			}
			if got := w.vm(vm.ID); got.State != Running || m.Instance(vm.ID) == nil {
				t.Errorf("the VM is %s", got.State)
			}
			if c.warm && w.disks[vm.ID] != goldens(w)[0].ID {
				t.Errorf("warm VM's disk is from %q", w.disks[vm.ID])
			}
			// A restored disk is a started guest's: no first-boot resize.
			if first := w.firstBoots[len(w.firstBoots)-1]; first == c.warm {
				t.Errorf("overlay attached as a first boot: %v, warm %v", first, c.warm)
			}
			if c.makes && c.golden && len(goldens(w)) != had {
				t.Errorf("the stale golden snapshot was not replaced: %+v", goldens(w))
			}
		})
	}
}

func TestAStaleGoldenSnapshotIsReplacedAndOtherShapesStay(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	w.goldenKey = "old1"
	create(t, w, m, "a", false)
	w.goldenKey = "old2" // keys hash the shape too
	if _, err := m.Create(context.Background(), CreateRequest{Name: "big", MemoryMiB: 512}, noProgress); err != nil {
		t.Fatal(err)
	}
	w.goldenKey = "new1" // say, the agent was upgraded
	create(t, w, m, "b", false)
	var names []string
	for _, g := range goldens(w) {
		names = append(names, g.Name+"/"+g.Key)
	}
	slices.Sort(names)
	// The 512 MiB one is of another shape: the new key does not replace it.
	if want := []string{"golden-base-new1/new1", "golden-base-old2/old2"}; !slices.Equal(names, want) {
		t.Errorf("golden snapshots %v, want %v", names, want)
	}
}

func TestAFailedWarmStartBootsCold(t *testing.T) {
	for _, fail := range []string{"snapfiles.restoredisk", "driver.restore", "agent.wait", "identity.reidentify"} {
		t.Run(fail, func(t *testing.T) {
			w := newWorld(t)
			w.goldenKey = "k1"
			m := w.manager()
			create(t, w, m, "first", false)
			golden := goldens(w)[0]
			w.failOn[fail] = w.count(fail) + 1
			before := len(w.log())
			var reports []string
			vm, err := m.Create(context.Background(), CreateRequest{Name: "web"}, func(r Report) { reports = append(reports, r.Stage+": "+r.Message) })
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			calls := since(w, before)
			rmall, prepare := slices.Index(calls, "files.rmall"), slices.Index(calls, "files.prepare")
			if rmall < 0 || prepare < rmall || !slices.Contains(calls[prepare:], "driver.launch") || !slices.Contains(calls[prepare:], "guest.setup") {
				t.Errorf("calls %v: want the warm start's files removed, then a cold boot", calls)
			}
			if slices.Contains(calls, "inst.snapshot") {
				t.Error("a whole golden snapshot was replaced after one VM's restore failed")
			}
			// The cold boot is the VM's first: its disk is the image's, to grow.
			if !w.firstBoots[len(w.firstBoots)-1] {
				t.Error("the cold boot after a failed warm start was not taken for a first boot")
			}
			if got := w.vm(vm.ID); got.State != Running || got.LastError != "" || m.Instance(vm.ID) == nil || len(m.instances) != 2 {
				t.Errorf("the VM is %+v, %d VMMs", got, len(m.instances))
			}
			if _, ok := w.snaps[golden.ID]; !ok {
				t.Error("the golden snapshot is gone")
			}
			if !slices.ContainsFunc(reports, func(r string) bool { return strings.HasPrefix(r, "warm: warm start failed") }) {
				t.Errorf("the fallback was not reported: %v", reports)
			}
		})
	}
}

func TestABrokenGoldenSnapshotIsReplacedByTheColdBoot(t *testing.T) {
	w := newWorld(t)
	w.goldenKey = "k1"
	m := w.manager()
	create(t, w, m, "first", false)
	broken := goldens(w)[0]
	delete(w.snapDirs, broken.ID) // its files are gone
	vm := create(t, w, m, "web", false)
	g := goldens(w)
	if len(g) != 1 || g[0].ID == broken.ID || !w.snapDirs[g[0].ID] {
		t.Errorf("golden snapshots %+v (broken %s)", g, broken.ID)
	}
	if w.vm(vm.ID).State != Running {
		t.Error("the VM does not run")
	}
}

func TestAGoldenSnapshotThatFailsOnlyLogs(t *testing.T) {
	for _, fail := range []string{"snapfiles.fits", "inst.pause", "inst.snapshot", "snapfiles.savedisk"} {
		t.Run(fail, func(t *testing.T) {
			w := newWorld(t)
			w.goldenKey = "k1"
			w.failOn[fail] = 1
			m := w.manager()
			vm := create(t, w, m, "web", false)
			if len(w.snaps) != 0 || len(w.snapDirs) != 0 {
				t.Errorf("left %v %v", w.snaps, w.snapDirs)
			}
			if got := w.vm(vm.ID); got.State != Running || instOf(t, m, vm.ID).isPaused() || !slices.Contains(w.log(), "guest.setup") {
				t.Errorf("the VM is %s", got.State)
			}
		})
	}
}

func TestWarmMakesTheGoldenSnapshotWithAThrowawayVM(t *testing.T) {
	w := newWorld(t)
	w.goldenKey = "k1"
	m := w.manager()
	ctx := context.Background()
	s, err := m.Warm(ctx, WarmRequest{Image: "base", MemoryMiB: 512}, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Golden || s.Key != "k1" || s.MemoryMiB != 512 || s.State != SnapshotReady || w.snaps[s.ID].ID != s.ID {
		t.Errorf("golden snapshot %+v", s)
	}
	if len(w.vms) != 0 || len(m.instances) != 0 {
		t.Errorf("the throwaway VM is still there: %v", w.vms)
	}
	// The current one is returned as it is.
	launches := w.count("driver.launch")
	again, err := m.Warm(ctx, WarmRequest{Image: "base", MemoryMiB: 512}, noProgress)
	if err != nil || again.ID != s.ID || w.count("driver.launch") != launches {
		t.Errorf("second warm: %+v %v, %d boots", again, err, w.count("driver.launch")-launches)
	}
	// A broken one is replaced.
	delete(w.snapDirs, s.ID)
	fixed, err := m.Warm(ctx, WarmRequest{Image: "base", MemoryMiB: 512}, noProgress)
	if err != nil || fixed.ID == s.ID || !w.snapDirs[fixed.ID] || len(goldens(w)) != 1 {
		t.Fatalf("warm over a broken golden snapshot: %+v %v, goldens %+v", fixed, err, goldens(w))
	}
	s = fixed
	// And a create of that shape starts warm from it.
	vm, err := m.Create(ctx, CreateRequest{Name: "web", MemoryMiB: 512}, noProgress)
	if err != nil || w.disks[vm.ID] != s.ID {
		t.Errorf("create after warm: %v, disk from %q", err, w.disks[vm.ID])
	}
}

func TestWarmFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("golden not made", func(t *testing.T) {
		w := newWorld(t)
		w.goldenKey = "k1"
		w.failOn["inst.snapshot"] = 1
		m := w.manager()
		_, err := m.Warm(ctx, WarmRequest{}, noProgress)
		if !errors.Is(err, errInjected) {
			t.Fatalf("warm: %v", err)
		}
		if len(w.vms) != 0 || len(w.snaps) != 0 || len(m.instances) != 0 {
			t.Errorf("left vms %v, snapshots %v", w.vms, w.snaps)
		}
	})
	t.Run("boot fails", func(t *testing.T) {
		w := newWorld(t)
		w.goldenKey = "k1"
		w.failOn["agent.wait"] = 1
		m := w.manager()
		if _, err := m.Warm(ctx, WarmRequest{}, noProgress); err == nil {
			t.Fatal("warm succeeded")
		}
		if len(w.vms) != 0 || len(w.snaps) != 0 {
			t.Errorf("left vms %v, snapshots %v", w.vms, w.snaps)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		_, err := m.Warm(ctx, WarmRequest{}, noProgress)
		wantKind(t, err, Unavailable, "cannot start warm")
		_, err = m.Warm(ctx, WarmRequest{Image: "nope"}, noProgress)
		wantKind(t, err, NotFound, "no image")
		m.ports.Golden = nil
		_, err = m.Warm(ctx, WarmRequest{}, noProgress)
		wantKind(t, err, Unavailable, "cannot start VMs warm")
		if len(w.vms) != 0 {
			t.Errorf("vms %v", w.vms)
		}
	})
}

func TestGoldenNameFollowsTheNameRule(t *testing.T) {
	for _, c := range []struct{ image, key, want string }{
		{"base", "0123ABCDef99", "golden-base-0123abcd"},
		{"base", "", "golden-base"},
		{strings.Repeat("i", 63), "ffffffffff", "golden-" + strings.Repeat("i", 47) + "-ffffffff"},
	} {
		got := goldenName(c.image, c.key)
		if got != c.want || ValidateSnapshotName(got) != nil {
			t.Errorf("goldenName(%q, %q) = %q, want %q", c.image, c.key, got, c.want)
		}
	}
}

// An image keeps at most GoldenPerImage golden snapshots: making one more
// deletes the least recently used — by its last warm create, else by when
// it was made — and never the one just made.
func TestGoldenSnapshotsPerImageKeepTheMostRecentlyUsed(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	m.cfg.GoldenPerImage = 2
	clock := time.Date(2026, 12, 8, 9, 0, 0, 0, time.UTC)
	m.ports.Now = func() time.Time { return clock }
	step := func(name, key string, mem int) VM {
		t.Helper()
		clock = clock.Add(time.Minute)
		w.goldenKey = key // keys hash the shape
		vm, err := m.Create(context.Background(), CreateRequest{Name: name, MemoryMiB: mem}, noProgress)
		if err != nil {
			t.Fatal(err)
		}
		return vm
	}
	step("a", "small", 256) // makes golden "small" at 09:01
	step("b", "mid", 512)   // makes golden "mid" at 09:02
	before := len(w.log())
	step("c", "small", 256) // warm from "small": used at 09:03
	if !slices.Contains(since(w, before), "driver.restore") {
		t.Fatal("the third create did not start warm")
	}
	step("d", "big", 1024) // makes "big": one too many, "mid" is the least recently used
	keys := map[string]Snapshot{}
	for _, g := range goldens(w) {
		keys[g.Key] = g
	}
	if len(keys) != 2 || keys["small"].ID == "" || keys["big"].ID == "" {
		t.Fatalf("golden snapshots %v, want small and big", slices.Collect(maps.Keys(keys)))
	}
	if want := time.Date(2026, 12, 8, 9, 3, 0, 0, time.UTC); !keys["small"].LastUsedAt.Equal(want) {
		t.Errorf("small's last use %v, want %v", keys["small"].LastUsedAt, want)
	}
	if !keys["big"].LastUsedAt.IsZero() {
		t.Errorf("a golden snapshot no create used has last use %v", keys["big"].LastUsedAt)
	}

	// Without a warm create in between, age decides: "small" (used 09:03)
	// is now older than "big" (made 09:04).
	step("e", "huge", 2048)
	var got []string
	for _, g := range goldens(w) {
		got = append(got, g.Key)
	}
	slices.Sort(got)
	if want := []string{"big", "huge"}; !slices.Equal(got, want) {
		t.Errorf("golden snapshots %v, want %v", got, want)
	}
}

// Negative GoldenPerImage (image.golden_snapshots = 0) turns warm creates
// off: no golden snapshot is made or used, and Warm says how to turn them on.
func TestWarmCreatesOff(t *testing.T) {
	w := newWorld(t)
	w.goldenKey = "k1"
	m := w.manager()
	create(t, w, m, "first", false) // made while on
	m.cfg.GoldenPerImage = -1
	before := len(w.log())
	create(t, w, m, "second", false)
	calls := since(w, before)
	if slices.Contains(calls, "driver.restore") || slices.Contains(calls, "inst.snapshot") {
		t.Errorf("calls %v: want a cold boot that makes no golden snapshot", calls)
	}
	_, err := m.Warm(context.Background(), WarmRequest{}, noProgress)
	wantKind(t, err, Unavailable, "warm starts are off")
	var le *Error
	if !errors.As(err, &le) || !strings.Contains(le.Hint, "image.golden_snapshots") {
		t.Errorf("hint %q does not name the setting", le.Hint)
	}
}
