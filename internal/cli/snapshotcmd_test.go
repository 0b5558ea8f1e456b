package cli

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
)

// recorder is a fake daemon's memory of the requests it was sent, as JSON
// by method, so a test compares what the CLI put on the wire.
type recorder struct {
	mu   sync.Mutex
	reqs map[string][]string
}

func (r *recorder) note(method string, req any) {
	b, _ := json.Marshal(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs[method] = append(r.reqs[method], string(b))
}

func (r *recorder) sent(method string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[method]
}

// recorded registers method answering resp after noting its request.
func recorded[Req, Resp any](srv *api.Server, r *recorder, method string, resp Resp) {
	api.Handle(srv, method, func(_ context.Context, req Req, p api.Progress) (Resp, error) {
		r.note(method, req)
		p(api.Event{VM: "dev", Stage: "step", Message: "working on " + method})
		return resp, nil
	})
}

var snapCreated = time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)

// snapshotDaemon is a fake daemon with every snapshot method; VM dev has
// snapshots before and after, and the image a golden one.
func snapshotDaemon(t *testing.T) (*App, *recorder, func() (string, string)) {
	t.Helper()
	r := &recorder{reqs: map[string][]string{}}
	before := api.Snapshot{ID: "s1", Name: "before", VM: "dev", VMID: "id1", Image: "default", VMM: "qemu", VCPUs: 2,
		MemoryMiB: 256, DiskSizeBytes: 8 << 30, State: api.SnapshotReady, SizeBytes: 300 << 20, CreatedAt: snapCreated}
	after := before
	after.ID, after.Name = "s2", "after"
	golden := before
	golden.ID, golden.Name, golden.VM, golden.VMID, golden.Golden = "s3", "golden-default-1a2b", "warm-x", "id9", true
	saving := before
	saving.ID, saving.Name, saving.VM, saving.VMID, saving.State = "s4", "web-20261207-210000", "web", "id2", api.SnapshotSaving
	running := api.VM{ID: "id1", Name: "dev", State: api.VMRunning, Image: "default", VCPUs: 2, MemoryMiB: 256, CreatedAt: snapCreated}
	paused := running
	paused.State = api.VMPaused
	fork1, fork2 := running, running
	fork1.ID, fork1.Name, fork1.IP = "f1", "try-1", "172.30.0.7"
	fork2.ID, fork2.Name, fork2.IP = "f2", "try-2", "172.30.0.8"
	app, stdout, stderr := fakeDaemon(t, func(srv *api.Server) {
		recorded[api.VMRef](srv, r, api.MethodVMPause, paused)
		recorded[api.VMRef](srv, r, api.MethodVMResume, running)
		recorded[api.VMSnapshotRequest](srv, r, api.MethodVMSnapshot, before)
		recorded[api.VMRollbackRequest](srv, r, api.MethodVMRollback, running)
		recorded[api.VMForkRequest](srv, r, api.MethodVMFork, api.VMList{VMs: []api.VM{fork1, fork2}})
		recorded[api.ImageWarmRequest](srv, r, api.MethodImageWarm, golden)
		recorded[api.VMCreateRequest](srv, r, api.MethodVMCreate, running)
		recorded[api.VMDeleteRequest](srv, r, api.MethodVMDelete, struct{}{})
		recorded[struct{}](srv, r, api.MethodSnapshotList, api.SnapshotList{Snapshots: []api.Snapshot{before, after, golden, saving}})
		recorded[api.SnapshotRef](srv, r, api.MethodSnapshotShow, before)
		recorded[api.SnapshotRef](srv, r, api.MethodSnapshotDelete, struct{}{})
	})
	return app, r, func() (string, string) {
		out, errOut := stdout.String(), stderr.String()
		stdout.Reset()
		stderr.Reset()
		return out, errOut
	}
}

func TestSnapshotCommands(t *testing.T) {
	tests := []struct {
		args   []string
		method string
		// sent is the request's JSON; stdout and stderr lines it must print.
		sent   string
		stdout []string
		stderr []string
	}{
		{args: []string{"vm", "pause", "dev"}, method: api.MethodVMPause, sent: `{"name":"dev"}`, stdout: []string{"dev: paused\n"}},
		{args: []string{"vm", "resume", "dev"}, method: api.MethodVMResume, sent: `{"name":"dev"}`, stdout: []string{"dev: running\n"}},
		{
			args: []string{"vm", "snapshot", "dev", "--name", "before"}, method: api.MethodVMSnapshot,
			sent: `{"name":"dev","snapshot":"before"}`, stdout: []string{"dev: saved snapshot before (300M)\n"},
			// Progress goes to stderr, so stdout stays the result alone.
			stderr: []string{"dev: working on vm.snapshot\n"},
		},
		{args: []string{"vm", "snapshot", "dev"}, method: api.MethodVMSnapshot, sent: `{"name":"dev"}`},
		{
			args: []string{"vm", "rollback", "dev", "before", "--yes"}, method: api.MethodVMRollback,
			sent: `{"name":"dev","snapshot":"before"}`, stdout: []string{"dev: rolled back to before, running\n"},
		},
		{
			args: []string{"vm", "fork", "before", "--name", "try", "--count", "2"}, method: api.MethodVMFork,
			sent: `{"source":"before","name":"try","count":2}`, stdout: []string{"NAME ", "try-1  running  172.30.0.7", "try-2  running  172.30.0.8"},
		},
		{args: []string{"vm", "fork", "dev", "--name", "dev2"}, method: api.MethodVMFork, sent: `{"source":"dev","name":"dev2","count":1}`},
		{
			args: []string{"image", "warm", "default", "--vcpus", "2", "--memory", "256", "--disk-size", "8G"}, method: api.MethodImageWarm,
			sent:   `{"image":"default","vcpus":2,"memory_mib":256,"disk_size_bytes":8589934592}`,
			stdout: []string{"default: warm (2 vCPU, 256 MiB, 8G disk; snapshot golden-default-1a2b, 300M)\n"},
		},
		{args: []string{"image", "warm", "default", "--disk", "1G"}, method: api.MethodImageWarm, sent: `{"image":"default","disk_size_bytes":1073741824}`},
		{args: []string{"vm", "create", "--name", "fresh", "--cold"}, method: api.MethodVMCreate, sent: `{"name":"fresh","cold":true}`},
		{
			args: []string{"snapshot", "list"}, method: api.MethodSnapshotList, sent: `{}`,
			stdout: []string{
				"NAME                 VM      IMAGE    SIZE    GOLDEN  CREATED\n",
				"before               dev     default  300M    no",
				"golden-default-1a2b  warm-x  default  300M    yes",
				// A snapshot still being written has no size yet.
				"web-20261207-210000  web     default  saving  no",
			},
		},
		{
			args: []string{"snapshot", "show", "before"}, method: api.MethodSnapshotShow, sent: `{"name":"before"}`,
			stdout: []string{"name:     before\n", "vm:       dev\n", "memory:   256 MiB\n", "disk:     8G\n", "size:     300M on disk\n", "golden:   no\n"},
		},
		{args: []string{"snapshot", "rm", "before", "after", "-f"}, method: api.MethodSnapshotDelete, sent: `{"name":"before"}{"name":"after"}`, stdout: []string{"before: deleted\nafter: deleted\n"}},
		{args: []string{"vm", "delete", "dev", "--force"}, method: api.MethodVMDelete, sent: `{"name":"dev","force":true}`, stdout: []string{"dev: deleted\n"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			app, r, output := snapshotDaemon(t)
			if code := Run(context.Background(), app, tt.args); code != 0 {
				_, errOut := output()
				t.Fatalf("exit %d: %s", code, errOut)
			}
			stdout, stderr := output()
			if got := strings.Join(r.sent(tt.method), ""); got != tt.sent {
				t.Errorf("sent %s, want %s", got, tt.sent)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestSnapshotCommandsJSON: --json prints the daemon's object, whole, and
// nothing else on stdout.
func TestSnapshotCommandsJSON(t *testing.T) {
	app, _, output := snapshotDaemon(t)
	if code := Run(context.Background(), app, []string{"snapshot", "list", "--json"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	stdout, _ := output()
	var list api.SnapshotList
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list.Snapshots) != 4 || !list.Snapshots[2].Golden || list.Snapshots[0].SizeBytes != 300<<20 {
		t.Fatalf("snapshot list --json: %v\n%s", err, stdout)
	}
	if code := Run(context.Background(), app, []string{"vm", "fork", "before", "--name", "try", "--count", "2", "--json"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	stdout, _ = output()
	var forks api.VMList
	if err := json.Unmarshal([]byte(stdout), &forks); err != nil || len(forks.VMs) != 2 || forks.VMs[1].Name != "try-2" {
		t.Fatalf("vm fork --json: %v\n%s", err, stdout)
	}
	if code := Run(context.Background(), app, []string{"vm", "snapshot", "dev", "--json"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	stdout, _ = output()
	var s api.Snapshot
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Name != "before" || s.VMID != "id1" {
		t.Fatalf("vm snapshot --json: %v\n%s", err, stdout)
	}
}

// TestSnapshotCommandRefusals: bad input is one sentence saying what to do,
// and nothing reaches the daemon.
func TestSnapshotCommandRefusals(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "rollback", "dev", "before"}, "banger: refusing to roll dev back without confirmation: stdin is not a terminal; pass --yes\n"},
		{[]string{"snapshot", "delete", "before"}, "banger: refusing to delete snapshot before without confirmation: stdin is not a terminal; pass --force\n"},
		{[]string{"vm", "delete", "dev"}, "banger: refusing to delete dev without confirmation: stdin is not a terminal; pass --force\n"},
		{[]string{"vm", "snapshot", "dev", "--name", "Before_Upgrade"}, `banger: invalid snapshot name "Before_Upgrade": use 1-63 lowercase letters`},
		{[]string{"vm", "rollback", "dev", "Nope!", "--yes"}, `banger: invalid snapshot name "Nope!"`},
		{[]string{"vm", "fork", "before", "--name", "try", "--count", "0"}, "banger: --count must be at least 1 (got 0)\n"},
		{[]string{"vm", "fork", "before"}, `banger: required flag(s) "name" not set`},
		// 62 letters are a valid name, but not once "-10" is added.
		{[]string{"vm", "fork", "before", "--name", strings.Repeat("a", 62), "--count", "10"}, `banger: invalid VM name "` + strings.Repeat("a", 62) + `-10"`},
		{[]string{"image", "warm", "default", "--memory", "0"}, "banger: --memory must be a positive number (e.g. --memory 1024); leave it out for the default from config\n"},
		{[]string{"image", "warm", "default", "--disk", "lots"}, `banger: --disk: invalid size "lots"`},
		{[]string{"vm", "pause"}, "banger: requires at least 1 arg(s), only received 0\n"},
		{[]string{"snapshot", "lsit"}, `banger: unknown command "lsit" for "banger snapshot"; did you mean list?`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			app, r, output := snapshotDaemon(t)
			if code := Run(context.Background(), app, tt.args); code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			stdout, stderr := output()
			if !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 || stdout != "" {
				t.Errorf("stderr %q, want one line with %q; stdout %q", stderr, tt.want, stdout)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.reqs) != 0 {
				t.Errorf("the daemon was asked %v", r.reqs)
			}
		})
	}
}

// TestVMDeleteAsksAboutItsSnapshots: on a terminal, vm delete names the
// VM's snapshots (not the image's golden one) in its question, and only a
// yes lets the daemon delete them.
func TestVMDeleteAsksAboutItsSnapshots(t *testing.T) {
	for _, tt := range []struct {
		name, vm, answer string
		question         string
		sent             string
	}{
		{"yes", "dev", "y\n", "Delete dev and their disks, and their snapshots after, before? This cannot be undone. [y/N] ", `{"name":"dev","force":true}`},
		{"by ID", "id1", "yes\n", "Delete id1 and their disks, and their snapshots after, before?", `{"name":"id1","force":true}`},
		{"no", "dev", "n\n", "and their snapshots after, before?", ""},
		// The golden snapshot (of throwaway VM warm-x) is the image's, and
		// other VMs' snapshots are theirs: box has none to ask about.
		{"no snapshots", "box", "y\n", "Delete box and their disks? This cannot be undone. [y/N] ", `{"name":"box"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			app, r, output := snapshotDaemon(t)
			app.IsTerminal = func() bool { return true }
			app.Stdin = strings.NewReader(tt.answer)
			code := Run(context.Background(), app, []string{"vm", "delete", tt.vm})
			_, stderr := output()
			if !strings.Contains(stderr, tt.question) {
				t.Errorf("stderr %q lacks the question %q", stderr, tt.question)
			}
			if got := strings.Join(r.sent(api.MethodVMDelete), ""); got != tt.sent {
				t.Errorf("sent %s, want %s", got, tt.sent)
			}
			if wantCode := map[bool]int{true: 0, false: 1}[tt.sent != ""]; code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
		})
	}
}

// TestUninstallStopsPausedVMs: a paused VM has a VMM that must not outlive
// the uninstall, so it is stopped like a running one; a stopped one is not
// asked.
func TestUninstallStopsPausedVMs(t *testing.T) {
	r := &recorder{reqs: map[string][]string{}}
	app, _, _ := fakeDaemon(t, func(srv *api.Server) {
		vms := []api.VM{{Name: "up", State: api.VMRunning}, {Name: "frozen", State: api.VMPaused}, {Name: "down", State: api.VMStopped}}
		recorded[struct{}](srv, r, api.MethodVMList, api.VMList{VMs: vms})
		recorded[api.VMStopRequest](srv, r, api.MethodVMStop, api.VM{})
	})
	layout, err := app.Layout(false)
	if err != nil {
		t.Fatal(err)
	}
	stopAllVMs(context.Background(), app, layout)
	if got := strings.Join(r.sent(api.MethodVMStop), ""); got != `{"name":"up"}{"name":"frozen"}` {
		t.Fatalf("stopped %s, want up and frozen", got)
	}
}
