package tui

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/banger-dev/banger/internal/api"
)

// fixture is a daemon with three VMs in different states and two images.
func fixture() *fakeClient {
	f := newFake()
	started := epoch().Add(-3*time.Hour - 12*time.Minute)
	stopped := epoch().Add(-2 * time.Hour)
	f.vms = []api.VM{
		{ID: "01HX0DEV", Name: "dev", State: api.VMRunning, Image: "debian", VCPUs: 2, MemoryMiB: 1024, DiskSizeBytes: 8 << 30,
			IP: "172.30.0.2", MAC: "06:00:ac:1e:00:02", DNSName: "dev.banger", VMM: "firecracker", PID: 4242,
			CreatedAt: epoch().Add(-26 * time.Hour), StartedAt: &started, Autostart: true,
			SerialLog: "/home/me/.local/state/banger/vms/dev/serial.log"},
		{ID: "01HX0BLD", Name: "build", State: api.VMStopped, Image: "debian", VCPUs: 4, MemoryMiB: 4096, DiskSizeBytes: 20 << 30,
			IP: "172.30.0.3", MAC: "06:00:ac:1e:00:03", DNSName: "build.banger", VMM: "firecracker",
			CreatedAt: epoch().Add(-5 * 24 * time.Hour), StoppedAt: &stopped, ExitStatus: "shutdown"},
		{ID: "01HX0BRK", Name: "broken", State: api.VMFailed, Image: "alpine", VCPUs: 1, MemoryMiB: 256, DiskSizeBytes: 1 << 30,
			VMM: "firecracker", CreatedAt: epoch().Add(-40 * time.Minute),
			LastError: "start vm \"broken\": wait for agent: no answer within 30s; serial console tail: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"},
	}
	f.images = []api.Image{
		{ID: "01HXIMGDEB", Name: "debian", Kernel: "/var/lib/banger/images/debian/vmlinux", Rootfs: "/var/lib/banger/images/debian/rootfs.ext4",
			SizeBytes: 2 << 30, Source: "build", CreatedAt: epoch().Add(-10 * 24 * time.Hour)},
		{ID: "01HXIMGALP", Name: "alpine", Kernel: "/var/lib/banger/images/alpine/vmlinux", Initrd: "/var/lib/banger/images/alpine/initrd.img",
			Rootfs: "/var/lib/banger/images/alpine/rootfs.ext4", SizeBytes: 64 << 20, Source: "import", CreatedAt: epoch().Add(-3 * time.Hour)},
	}
	f.logs["dev"] = "[    0.000000] Linux version 6.1.0-28-amd64\r\n" +
		"[    0.412000] virtio_blk virtio0: [vda] 16777216 512-byte logical blocks\r\n" +
		"\x1b[0;32m[  OK  ]\x1b[0m Started \x1b[0;1;39mbanger-vsock-agent.service\x1b[0m.\r\n" +
		"progress 10%\rprogress 100%\r\n" +
		"\tDebian GNU/Linux 12 dev ttyS0\r\n" +
		"dev login: \n"
	f.logs["broken"] = "[    1.200000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
	return f
}

func TestGoldenScreens(t *testing.T) {
	hint := api.Errorf(api.CodeFailedPrecondition, "start vm \"build\": tap device busy").WithHint("run `banger doctor`")
	tests := []struct {
		name string
		w, h int
		fake func() *fakeClient
		// agent serves a real guest agent behind the fake's VMExec.
		agent bool
		act   func(h *harness)
	}{
		{name: "vms", w: 80, h: 24},
		{name: "vms_wide", w: 120, h: 30},
		{name: "vms_narrow", w: 50, h: 16},
		{name: "too_small", w: 30, h: 8},
		{name: "empty", w: 80, h: 24, fake: newFake},
		{name: "filter", w: 80, h: 24, act: func(h *harness) {
			h.keys("/")
			h.typeText("bu")
		}},
		{name: "sort_state_desc", w: 80, h: 24, act: func(h *harness) { h.keys("o", "O") }},
		{name: "details_failed", w: 80, h: 24, act: func(h *harness) { h.keys("j") }},
		{name: "create_form", w: 80, h: 24, act: func(h *harness) {
			h.keys("n")
			h.typeText("web")
			h.keys("tab", "right", "right", "tab")
			h.typeText("2")
			h.keys("tab")
			h.typeText("2G")
		}},
		{name: "create_form_invalid", w: 80, h: 24, act: func(h *harness) {
			h.keys("n")
			h.typeText("web")
			h.keys("tab", "tab")
			h.typeText("two")
			h.keys("enter")
		}},
		{name: "confirm_delete", w: 80, h: 24, act: func(h *harness) { h.keys("d") }},
		{name: "vms_paused", w: 80, h: 24, fake: func() *fakeClient {
			f := fixture()
			f.info.Methods = append(f.info.Methods, api.MethodVMPause)
			return f
		}, act: func(h *harness) { h.keys("G", "p") }},
		{name: "progress", w: 80, h: 24, act: func(h *harness) {
			h.fake.progress[api.MethodVMStart] = []api.Event{{Stage: "rootfs", Message: "cloning the root disk", Done: 3 << 20, Total: 8 << 20}}
			h.fake.hold(api.MethodVMStart)
			h.keys("j", "s")
			h.now = h.now.Add(3 * time.Second)
		}},
		{name: "error_inline", w: 80, h: 24, act: func(h *harness) {
			h.fake.errs[api.MethodVMStart] = hint
			h.keys("j", "s")
		}},
		{name: "images", w: 80, h: 24, act: func(h *harness) { h.keys("tab") }},
		{name: "image_build_progress", w: 80, h: 24, fake: func() *fakeClient {
			f := fixture()
			f.info.Methods = append(f.info.Methods, api.MethodImageBuild)
			f.progress[api.MethodImageBuild] = []api.Event{{Stage: "debootstrap", Message: "debootstrap trixie", Done: 120, Total: 300}}
			f.hold(api.MethodImageBuild)
			return f
		}, act: func(h *harness) {
			h.keys("tab", "b")
			h.typeText("tools")
			h.keys("tab")
			h.typeText("debian:trixie")
			h.keys("enter")
			h.now = h.now.Add(95 * time.Second)
		}},
		{name: "image_build_form", w: 80, h: 24, fake: func() *fakeClient {
			f := fixture()
			f.info.Methods = append(f.info.Methods, api.MethodImageBuild)
			return f
		}, act: func(h *harness) {
			h.keys("2", "b")
			h.typeText("tools")
			h.keys("tab", "tab")
			h.typeText("4G")
			h.keys("tab")
			h.typeText("git, make")
		}},
		{name: "images_delete_in_use", w: 80, h: 24, act: func(h *harness) { h.keys("2", "j", "d") }},
		{name: "help", w: 80, h: 24, act: func(h *harness) { h.keys("?") }},
		{name: "exec_output", w: 80, h: 24, agent: true, fake: func() *fakeClient {
			f := fixture()
			f.info.Methods = append(f.info.Methods, api.MethodVMExec)
			return f
		}, act: func(h *harness) {
			h.keys("G", "e")
			h.typeText("echo Linux dev 6.1.0-28-amd64; echo oops >&2; exit 3")
			h.keys("enter")
		}},
		{name: "exec_prompt", w: 80, h: 24, fake: func() *fakeClient {
			f := fixture()
			f.info.Methods = append(f.info.Methods, api.MethodVMExec)
			return f
		}, act: func(h *harness) {
			h.keys("G", "e")
			h.typeText("df -h /")
		}},
		{name: "reconnecting", w: 80, h: 24, act: func(h *harness) {
			h.endWatch(api.ErrDaemonUnreachable)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mk := fixture
			if tc.fake != nil {
				mk = tc.fake
			}
			f := mk()
			if tc.agent {
				f.startAgent(t)
			}
			h := newHarness(t, f, tc.w, tc.h)
			if tc.act != nil {
				tc.act(h)
			}
			h.golden(tc.name)
		})
	}
}

func TestLiveStateComesFromEvents(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	if n := f.called(api.MethodVMList); n != 1 {
		t.Fatalf("watch.started should load the list once, got %d vm.list calls", n)
	}
	f.vms[1].State = api.VMStarting
	h.event(api.Event{Kind: kindVMState, VM: "build", State: api.VMStarting})
	if vm, _ := h.m.vm("build"); vm.State != api.VMStarting {
		t.Errorf("build is %s after a vm.state event, want starting", vm.State)
	}
	if f.called(api.MethodVMShow+" build") != 1 {
		t.Errorf("a state change should fetch that VM once; calls: %v", f.calls)
	}

	// A VM created by someone else appears from its first event.
	f.vms = append(f.vms, api.VM{ID: "x", Name: "other", State: api.VMCreating, CreatedAt: epoch()})
	h.event(api.Event{Kind: kindVMState, VM: "other", State: api.VMCreating})
	h.contains("other", "creating")

	h.event(api.Event{Kind: kindVMDeleted, VM: "broken"})
	if _, ok := h.m.vm("broken"); ok {
		t.Error("broken still listed after vm.deleted")
	}
	if n := f.called(api.MethodVMList); n != 1 {
		t.Errorf("events must not cause list reloads (no polling); got %d vm.list calls", n)
	}
	if len(slices.DeleteFunc(slices.Clone(h.timers), func(m tea.Msg) bool { _, ok := m.(watchRetryMsg); return !ok })) != 0 {
		t.Error("a live stream scheduled a reconnect")
	}
}

func TestReconnectRefreshesEverything(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	h.endWatch(errors.New("stream broken"))
	h.contains("reconnecting: stream broken")
	if h.m.live {
		t.Fatal("still live after the stream ended")
	}
	// While away, dev stopped and broken was deleted.
	f.vms[0].State = api.VMStopped
	f.vms = f.vms[:2]
	if !h.fire(func(m tea.Msg) bool { _, ok := m.(watchRetryMsg); return ok }) {
		t.Fatal("no reconnect scheduled")
	}
	if n := f.called(api.MethodEventsWatch); n != 2 {
		t.Fatalf("events.watch called %d times, want 2", n)
	}
	if n := f.called(api.MethodVMList); n != 2 {
		t.Fatalf("the reconnect's watch.started should reload the list; %d vm.list calls", n)
	}
	if vm, _ := h.m.vm("dev"); vm.State != api.VMStopped {
		t.Errorf("dev is %s after reconnect, want stopped", vm.State)
	}
	if _, ok := h.m.vm("broken"); ok {
		t.Error("broken survived the refresh")
	}
	h.contains("● live")
}

func TestReconnectBacksOff(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	f.watchErr = api.ErrDaemonUnreachable
	f.watchFirst = nil
	h.endWatch(api.ErrDaemonUnreachable)
	var delays []time.Duration
	for range 6 {
		delays = append(delays, h.m.backoff)
		if !h.fire(func(m tea.Msg) bool { _, ok := m.(watchRetryMsg); return ok }) {
			t.Fatal("no retry scheduled")
		}
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	if !slices.Equal(delays, want) {
		t.Errorf("backoff %v, want %v", delays, want)
	}
}

func TestEventsDuringRefreshAreReplayed(t *testing.T) {
	f := fixture()
	f.watchFirst = nil
	f.hold(api.MethodVMList)
	h := newHarness(t, f, 80, 24)
	h.event(api.Event{Kind: kindWatchStarted})
	// The list call is in flight; meanwhile dev starts stopping. The
	// snapshot, taken before that, still says running.
	h.event(api.Event{Kind: kindVMState, VM: "dev", State: api.VMStopping})
	h.release(api.MethodVMList)
	if vm, _ := h.m.vm("dev"); vm.State != api.VMStopping {
		t.Errorf("dev is %s, want the newer stopping from the replayed event", vm.State)
	}
}

func TestStaleShowIsDropped(t *testing.T) {
	h := newHarness(t, fixture(), 80, 24)
	h.m.seq["dev"] = 2
	stale := api.VM{Name: "dev", State: api.VMStarting}
	h.send(vmShowMsg{name: "dev", seq: 1, vm: stale})
	if vm, _ := h.m.vm("dev"); vm.State != api.VMRunning {
		t.Errorf("an answer older than the last event replaced dev: %s", vm.State)
	}
}

func TestWatchUnavailableFallsBackToRefreshAfterActions(t *testing.T) {
	f := fixture()
	f.watchFirst = nil
	f.errs[api.MethodEventsWatch] = api.Errorf(api.CodeNotFound, "unknown API method %q", api.MethodEventsWatch)
	h := newHarness(t, f, 80, 24)
	h.contains("no live updates", "dev", "build")
	if n := f.called(api.MethodVMList); n != 1 {
		t.Fatalf("vm.list called %d times, want 1", n)
	}
	h.keys("j", "s")
	if n := f.called(api.MethodVMList); n != 2 {
		t.Errorf("without events an action must reload the list; %d vm.list calls", n)
	}
}

func TestCreateFormSendsRequest(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	h.keys("n")
	h.typeText("web")
	h.keys("tab", "right") // images sorted: default, alpine, debian
	h.keys("tab")
	h.typeText("2")
	h.keys("tab")
	h.typeText("2G")
	h.keys("tab")
	h.typeText("10G")
	h.keys("enter")
	want := api.VMCreateRequest{Name: "web", Image: "alpine", VCPUs: 2, MemoryMiB: 2048, DiskSizeBytes: 10 << 30}
	if len(f.created) != 1 || !reflect.DeepEqual(f.created[0], want) {
		t.Fatalf("created %+v, want %+v", f.created, want)
	}
	if h.m.mode != modeNormal || h.m.selVM != "web" {
		t.Errorf("after create: mode %v, selected %q", h.m.mode, h.m.selVM)
	}
	h.contains("web: created")
}

func TestCreateRefusedKeepsForm(t *testing.T) {
	f := fixture()
	f.errs[api.MethodVMCreate] = api.Errorf(api.CodeAlreadyExists, "a VM named \"dev\" already exists")
	h := newHarness(t, f, 80, 24)
	h.keys("n")
	h.typeText("dev")
	h.keys("enter")
	if h.m.mode != modeForm {
		t.Fatal("a refused create should reopen the form")
	}
	h.contains("already exists", "dev")
	if h.m.form.value(fieldName) != "dev" {
		t.Error("the form lost its values")
	}
}

func TestImageBuild(t *testing.T) {
	f := fixture()
	f.info.Methods = append(f.info.Methods, api.MethodImageBuild)
	h := newHarness(t, f, 80, 24)
	h.keys("2", "b")
	h.typeText("tools")
	h.keys("tab")
	h.typeText("debian:trixie")
	h.keys("tab")
	h.typeText("4G")
	h.keys("tab")
	h.typeText("git,make gcc")
	h.keys("enter")
	want := api.ImageBuildRequest{Name: "tools", From: "debian:trixie", SizeBytes: 4 << 30, Packages: []string{"git", "make", "gcc"}}
	if len(f.built) != 1 || f.built[0].Name != want.Name || f.built[0].From != want.From ||
		f.built[0].SizeBytes != want.SizeBytes || !slices.Equal(f.built[0].Packages, want.Packages) {
		t.Fatalf("built %+v, want %+v", f.built, want)
	}
	h.contains("image tools: built", "▸ tools")

	// A daemon without image.build says so instead of opening the form.
	h = newHarness(t, fixture(), 80, 24)
	h.keys("2", "b")
	if h.m.mode != modeNormal {
		t.Fatal("build form opened although the daemon lacks image.build")
	}
	h.contains("image builds are not available yet")
}

func TestDestructiveActionsAsk(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	h.keys("G") // dev: names sort broken, build, dev
	h.keys("d", "n")
	h.keys("X", "esc")
	if f.called(api.MethodVMDelete) != 0 || f.called(api.MethodVMStop) != 0 {
		t.Fatalf("declined actions ran: %v", f.calls)
	}
	h.contains("cancelled")
	h.keys("d", "y")
	if f.called(api.MethodVMDelete+" dev") != 1 {
		t.Fatalf("confirmed delete did not run: %v", f.calls)
	}
	if _, ok := h.m.vm("dev"); ok {
		t.Error("dev still listed after delete")
	}
	h.contains("dev: deleted")
}

func TestLifecycleKeys(t *testing.T) {
	f := fixture()
	h := newHarness(t, f, 80, 24)
	h.keys("G", "x")
	h.keys("r")
	h.keys("k", "s")
	h.keys("X", "y")
	for _, c := range []string{"vm.stop dev", "vm.restart dev", "vm.start build", "vm.stop build force"} {
		if f.called(c) != 1 {
			t.Errorf("%q not called once: %v", c, f.calls)
		}
	}
}

// TestPauseResumeSnapshotKeys: p pauses a running VM and resumes a paused
// one, S snapshots it; neither is sent for a VM that cannot take it, and a
// paused VM's exec and shell say to resume it.
func TestPauseResumeSnapshotKeys(t *testing.T) {
	f := fixture()
	f.info.Methods = append(f.info.Methods, api.MethodVMExec, api.MethodVMPause, api.MethodVMResume, api.MethodVMSnapshot)
	h := newHarness(t, f, 80, 24)
	h.keys("G", "p") // dev, running
	if f.called(api.MethodVMPause+" dev") != 1 {
		t.Fatalf("p on a running VM did not pause it: %v", f.calls)
	}
	h.contains("dev: paused", "3 VMs, 0 running, 1 paused")
	h.keys("e")
	if h.m.mode != modeNormal {
		t.Fatal("exec prompt opened for a paused VM")
	}
	h.contains("dev is paused; resume it first (p)")
	h.keys("S")
	if f.called(api.MethodVMSnapshot+" dev") != 1 {
		t.Fatalf("S on a paused VM did not snapshot it: %v", f.calls)
	}
	h.contains("dev: saved snapshot dev-20261207-210000 (300M)")
	h.keys("p")
	if f.called(api.MethodVMResume+" dev") != 1 {
		t.Fatalf("p on a paused VM did not resume it: %v", f.calls)
	}
	h.contains("dev: running")

	h.keys("k", "p", "S") // build, stopped
	h.contains("build is stopped; only a running or paused VM can be snapshotted")
	if f.called(api.MethodVMPause) != 1 || f.called(api.MethodVMSnapshot) != 1 {
		t.Fatalf("pause or snapshot sent for a stopped VM: %v", f.calls)
	}
	h.keys("p")
	h.contains("build is stopped; only a running VM can be paused")

	// A daemon from before snapshots says so instead of failing the call.
	old := fixture()
	h = newHarness(t, old, 80, 24)
	h.keys("G", "p")
	h.contains("pausing is not available yet: this daemon has no vm.pause")
	h.keys("S")
	h.contains("snapshots are not available yet: this daemon has no vm.snapshot")
	if old.called(api.MethodVMPause) != 0 || old.called(api.MethodVMSnapshot) != 0 {
		t.Fatalf("calls sent to a daemon without the methods: %v", f.calls)
	}
}

// TestPausedHasItsOwnStyle: a paused VM does not look running (or like
// any other state), with color and without.
func TestPausedHasItsOwnStyle(t *testing.T) {
	for _, noColor := range []bool{false, true} {
		st := newStyles(noColor)
		paused := st.stateStyle(api.VMPaused)
		for _, other := range []api.VMState{api.VMRunning, api.VMStopped, api.VMFailed, api.VMStarting} {
			if paused.Render("x") == st.stateStyle(other).Render("x") {
				t.Errorf("noColor=%v: paused renders like %s", noColor, other)
			}
		}
	}
}

func TestExecNotAvailable(t *testing.T) {
	t.Run("daemon says so up front", func(t *testing.T) {
		f := fixture()
		h := newHarness(t, f, 80, 24)
		h.keys("e")
		if h.m.mode != modeNormal {
			t.Fatal("exec prompt opened although the daemon lacks vm.exec")
		}
		h.contains("exec is not available yet")
	})
	t.Run("daemon answers unknown method", func(t *testing.T) {
		f := fixture()
		f.infoErr = errors.New("no info") // methods unknown, so the TUI tries
		h := newHarness(t, f, 80, 24)
		h.keys("G", "e")
		h.typeText("true")
		h.keys("enter")
		if f.called(api.MethodVMExec) != 1 {
			t.Fatalf("exec not attempted: %v", f.calls)
		}
		if h.m.err != nil {
			t.Errorf("unknown method shown as an error: %v", h.m.err)
		}
		h.contains("exec is not available yet")
	})
}

func TestExecRunsThroughShell(t *testing.T) {
	f := fixture()
	f.info.Methods = append(f.info.Methods, api.MethodVMExec)
	f.startAgent(t)
	h := newHarness(t, f, 80, 24)
	h.keys("G", "e")
	h.typeText("echo hi | wc -c; cat; echo done")
	h.keys("enter")
	if f.called("vm.exec dev /bin/sh -c echo hi | wc -c; cat; echo done") != 1 {
		t.Errorf("calls: %v", f.calls)
	}
	// cat sees end of input at once: an exec never waits for a keyboard
	// the TUI does not hand over.
	if h.m.execOut == nil {
		t.Fatalf("no exec output; err %v", h.m.err)
	}
	if got := h.m.execOut.res; got.ExitCode != 0 || got.Stdout != "3\ndone\n" {
		t.Errorf("exec result %+v, want exit 0 and \"3\\ndone\\n\"", got)
	}
	h.keys("esc")
	if h.m.mode != modeNormal {
		t.Error("esc did not close the output")
	}
}

func TestExecOutputIsBounded(t *testing.T) {
	f := fixture()
	f.info.Methods = append(f.info.Methods, api.MethodVMExec)
	f.startAgent(t)
	h := newHarness(t, f, 80, 24)
	h.keys("G", "e")
	// 3 MiB from a chatty (or hostile) guest: the screen keeps 1 MiB.
	h.typeText("head -c 3145728 /dev/zero | tr '\\0' x")
	h.keys("enter")
	if h.m.execOut == nil {
		t.Fatalf("no exec output; err %v", h.m.err)
	}
	out := h.m.execOut.res.Stdout
	if !strings.HasPrefix(out, strings.Repeat("x", maxExecOutput)) || len(out) > maxExecOutput+100 {
		t.Errorf("kept %d bytes, want the first %d and a note", len(out), maxExecOutput)
	}
	if !strings.Contains(out, "[… 2097152 more bytes not shown]") {
		t.Errorf("no note about the dropped bytes: %q", out[maxExecOutput:])
	}
}

// shellHarness records which of the two shell commands Enter runs.
func shellHarness(t *testing.T, f *fakeClient, withSSH bool) (*harness, *[]string) {
	var ran []string
	h := newHarness(t, f, 80, 24, func(o *Options) {
		if withSSH {
			o.SSHCommand = func(name string) *exec.Cmd {
				ran = append(ran, "ssh "+name)
				return exec.Command("true")
			}
		}
		o.ShellCommand = func(name string) *exec.Cmd {
			ran = append(ran, "exec -t "+name)
			return exec.Command("true")
		}
	})
	return h, &ran
}

func TestEnterOpensAShellThatWorks(t *testing.T) {
	pinned := func(t *testing.T, vmID string) string {
		p := filepath.Join(t.TempDir(), "known_hosts")
		line := "dev.banger,172.30.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOTp9qUc5Yx4ZFv9vNqHUgS8y0S1o1v0Zt4J1mJxGk7Q banger-vm=" + vmID + "\n"
		if err := os.WriteFile(p, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		info    func(t *testing.T) api.VMSSHInfo
		withSSH bool
		want    string
	}{
		// The default busybox image: an address, but no sshd, so no pinned key.
		{name: "no sshd", withSSH: true, want: "exec -t dev",
			info: func(t *testing.T) api.VMSSHInfo {
				return api.VMSSHInfo{IP: "172.30.0.2", KnownHostsPath: filepath.Join(t.TempDir(), "known_hosts")}
			}},
		{name: "no network", withSSH: true, want: "exec -t dev",
			info: func(t *testing.T) api.VMSSHInfo { return api.VMSSHInfo{KnownHostsPath: pinned(t, "01HX0DEV")} }},
		{name: "sshd and network", withSSH: true, want: "ssh dev",
			info: func(t *testing.T) api.VMSSHInfo {
				return api.VMSSHInfo{IP: "172.30.0.2", KnownHostsPath: pinned(t, "01HX0DEV")}
			}},
		{name: "another VM's key", withSSH: true, want: "exec -t dev",
			info: func(t *testing.T) api.VMSSHInfo {
				return api.VMSSHInfo{IP: "172.30.0.2", KnownHostsPath: pinned(t, "01HX0OTHER")}
			}},
		{name: "no vm ssh command", withSSH: false, want: "exec -t dev",
			info: func(t *testing.T) api.VMSSHInfo {
				return api.VMSSHInfo{IP: "172.30.0.2", KnownHostsPath: pinned(t, "01HX0DEV")}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fixture()
			f.sshInfo["dev"] = tc.info(t)
			h, ran := shellHarness(t, f, tc.withSSH)
			h.keys("G", "enter")
			if !slices.Equal(*ran, []string{tc.want}) {
				t.Errorf("Enter ran %v, want [%s]", *ran, tc.want)
			}
		})
	}
}

func TestShellRefusedAndReported(t *testing.T) {
	f := fixture()
	h, ran := shellHarness(t, f, true)
	h.keys("G", "k", "enter") // build is stopped
	if len(*ran) != 0 {
		t.Errorf("a shell was opened into a stopped VM: %v", *ran)
	}
	h.contains("build is stopped; start it first")
	h.send(shellDoneMsg{what: "ssh dev", err: errors.New("exit status 255")})
	h.contains("ssh dev: exit status 255")

	// Without `vm ssh` and `vm exec` the key says so instead of failing.
	h = newHarness(t, fixture(), 80, 24)
	h.keys("G", "enter")
	h.contains("shells are not available yet")
}

func TestErrorsStayInline(t *testing.T) {
	f := fixture()
	f.errs[api.MethodVMList] = api.ErrDaemonUnreachable
	f.errs[api.MethodImageList] = errors.New("disk on fire")
	h := newHarness(t, f, 80, 24)
	h.contains("✗")
	if h.quit {
		t.Fatal("an error quit the TUI")
	}
	h.keys("esc")
	if h.m.err != nil {
		t.Error("esc did not clear the error")
	}
}

func TestQuit(t *testing.T) {
	h := newHarness(t, fixture(), 80, 24)
	h.keys("q")
	if !h.quit {
		t.Fatal("q did not quit")
	}

	f := fixture()
	f.hold(api.MethodVMStop)
	h = newHarness(t, f, 80, 24)
	h.keys("G", "x", "q")
	if h.quit {
		t.Fatal("quit without asking while an operation runs")
	}
	h.contains("Quit and cancel stop dev? [y/N]")
	h.keys("y")
	if !h.quit {
		t.Fatal("y did not quit")
	}
}

func TestSortAndFilter(t *testing.T) {
	h := newHarness(t, fixture(), 80, 24)
	names := func() []string {
		var out []string
		for _, vm := range h.m.visibleVMs() {
			out = append(out, vm.Name)
		}
		return out
	}
	if got := names(); !slices.Equal(got, []string{"broken", "build", "dev"}) {
		t.Errorf("by name: %v", got)
	}
	h.keys("o")
	if got := names(); !slices.Equal(got, []string{"dev", "broken", "build"}) {
		t.Errorf("by state: %v", got)
	}
	h.keys("o", "o") // ip: no address sorts last
	if got := names(); !slices.Equal(got, []string{"dev", "build", "broken"}) {
		t.Errorf("by ip: %v", got)
	}
	h.keys("o")
	if got := names(); !slices.Equal(got, []string{"build", "dev", "broken"}) {
		t.Errorf("by age: %v", got)
	}
	h.keys("O")
	if got := names(); !slices.Equal(got, []string{"broken", "dev", "build"}) {
		t.Errorf("by age, reversed: %v", got)
	}
	h.keys("/")
	h.typeText("172.30")
	h.keys("enter")
	if got := names(); len(got) != 2 {
		t.Errorf("filter by address: %v", got)
	}
	if h.m.selVM != "dev" && h.m.selVM != "build" {
		t.Errorf("selection %q is outside the filter", h.m.selVM)
	}
	h.keys("esc")
	if got := names(); len(got) != 3 {
		t.Errorf("esc did not clear the filter: %v", got)
	}
}

func TestMouse(t *testing.T) {
	h := newHarness(t, fixture(), 80, 24)
	h.send(tea.MouseClickMsg{X: 5, Y: listTop + 2, Button: tea.MouseLeft})
	if h.m.selVM != "dev" {
		t.Errorf("click on third row selected %q", h.m.selVM)
	}
	h.send(tea.MouseWheelMsg{Button: tea.MouseWheelUp})
	if h.m.selVM != "build" {
		t.Errorf("wheel up selected %q", h.m.selVM)
	}
	h.send(tea.MouseClickMsg{X: tabSplitX + 2, Y: 0, Button: tea.MouseLeft})
	if h.m.view != viewImages {
		t.Error("click on the Images tab did not switch")
	}
	h.keys("m")
	h.send(tea.MouseClickMsg{X: tabSplitX - 5, Y: 0, Button: tea.MouseLeft})
	if h.m.view != viewImages || h.m.View().MouseMode != tea.MouseModeNone {
		t.Error("m did not turn the mouse off")
	}
}

func TestResizeKeepsFrameExact(t *testing.T) {
	h := newHarness(t, fixture(), 80, 24)
	for _, size := range [][2]int{{120, 40}, {40, 10}, {200, 60}, {20, 5}, {81, 25}, {80, 24}} {
		h.send(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		for _, keys := range [][]string{nil, {"n"}, {"esc", "?"}, {"esc", "tab"}, {"tab"}} {
			h.keys(keys...)
			h.screen() // checks line count and widths
		}
	}
}

func TestLongListScrolls(t *testing.T) {
	f := newFake()
	for i := range 30 {
		f.vms = append(f.vms, api.VM{ID: "id", Name: "vm-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), State: api.VMStopped, CreatedAt: epoch()})
	}
	h := newHarness(t, f, 80, 24)
	h.keys("G")
	h.contains("▸ vm-z")
	if strings.Contains(h.screen(), "vm-ax") {
		t.Error("the top of the list is still shown after G")
	}
	h.keys("g")
	h.contains("▸ vm-a ")
}

func TestNoColorHasNoColorCodes(t *testing.T) {
	sgr := regexp.MustCompile(`\x1b\[([0-9;:]*)m`)
	for _, noColor := range []bool{true, false} {
		h := newHarness(t, fixture(), 80, 24, func(o *Options) { o.NoColor = noColor })
		h.keys("j")
		colors := 0
		for _, m := range sgr.FindAllStringSubmatch(h.m.View().Content, -1) {
			for _, p := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ';' || r == ':' }) {
				if p == "38" || p == "48" || (len(p) == 2 && (p[0] == '3' || p[0] == '4' || p[0] == '9') && p[1] <= '7') {
					colors++
				}
			}
		}
		if noColor && colors > 0 {
			t.Errorf("NO_COLOR frame has %d color codes", colors)
		}
		if !noColor && colors == 0 {
			t.Error("color frame has no colors: the check is broken")
		}
	}
}

func TestFieldEditing(t *testing.T) {
	f := newField("> ", "", newStyles(true))
	f.Focus()
	for _, k := range []string{"a", "b", "c", "left", "left", "X", "end", "d"} {
		f.handleKey(keyMsg(k))
	}
	if f.Value() != "aXbcd" {
		t.Fatalf("value %q", f.Value())
	}
	f.insert("  two words")
	f.handleKey(tea.KeyPressMsg{Code: 'w', Mod: tea.ModCtrl})
	if f.Value() != "aXbcd  two " {
		t.Errorf("ctrl+w left %q", f.Value())
	}
	f.handleKey(keyMsg("backspace"))
	f.Reset()
	f.limit = 4
	f.insert("123456")
	if f.Value() != "1234" {
		t.Errorf("limit not applied: %q", f.Value())
	}
}

func TestConsoleLinesAreSafe(t *testing.T) {
	got := consoleLines("\x1b[1mbold\x1b[0m\r\nbar 10%\rbar 99%\n\ta\x07b\x1b]52;c;ZXZpbA==\x07\r\n")
	// Colours go; a redraw and other controls show, escaped, as in `vm logs`.
	want := []string{"bold", `bar 10%\rbar 99%`, ` a\x07b\x1b]52;c;ZXZpbA==\x07`}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestGuestTextInProgressIsEscaped: an event message may quote the guest
// (its agent's version); the TUI draws it by the CLI's rule.
func TestGuestTextInProgressIsEscaped(t *testing.T) {
	got := progressText(api.Event{Message: "agent 1.0\x1b]52;c;ZXZpbA==\x07\nready"}, 10)
	if want := `agent 1.0\x1b]52;c;ZXZpbA==\x07\nready`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
