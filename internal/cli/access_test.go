package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
)

func TestRemoteSpec(t *testing.T) {
	tests := []struct {
		in         string
		name, path string
	}{
		{"dev:/tmp/x", "dev", "/tmp/x"},
		{"dev:", "dev", ""},
		{"my-vm-2:rel/p", "my-vm-2", "rel/p"},
		{"./dev:x", "", ""},
		{"/abs/dev:x", "", ""},
		{"Dev:x", "", ""},
		{"plain", "", ""},
	}
	for _, tt := range tests {
		m := remoteSpec.FindStringSubmatch(tt.in)
		if tt.name == "" {
			if m != nil {
				t.Errorf("%q parsed as remote %q", tt.in, m)
			}
			continue
		}
		if m == nil || m[1] != tt.name || m[2] != tt.path {
			t.Errorf("%q: %q, want %s + %s", tt.in, m, tt.name, tt.path)
		}
	}
}

func TestSSHCommand(t *testing.T) {
	info := api.VMSSHInfo{Name: "dev", IP: "172.30.0.5", DNSName: "dev.banger", User: "alice", KeyPath: "/c/ssh/id_ed25519", KnownHostsPath: "/c/known_hosts"}
	got := sshCommand(info, []string{"uname", "-a"})
	want := []string{
		"-i", "/c/ssh/id_ed25519", "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=/c/known_hosts",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=dev.banger",
		"alice@172.30.0.5", "--", "uname", "-a",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ssh args\n got %q\nwant %q", got, want)
	}
	info.User = ""
	if got := sshCommand(info, nil); got[len(got)-1] != "root@172.30.0.5" {
		t.Fatalf("without a login user: %q", got)
	}
}

func TestSSHPreconditionNeverTriesSSHWithoutSSHD(t *testing.T) {
	yes, no := true, false
	running := api.VMSSHInfo{Name: "dev", State: api.VMRunning, IP: "172.30.0.5"}
	for _, tt := range []struct {
		name string
		info func(api.VMSSHInfo) api.VMSSHInfo
		want string // "" means ssh runs
	}{
		{"sshd pinned", func(i api.VMSSHInfo) api.VMSSHInfo { i.SSHServer = &yes; return i }, ""},
		{"older daemon does not say", func(i api.VMSSHInfo) api.VMSSHInfo { return i }, ""},
		{"no sshd", func(i api.VMSSHInfo) api.VMSSHInfo { i.SSHServer = &no; return i },
			`vm "dev" runs no SSH server (its image has no sshd); ` + "`banger vm exec -t dev` opens a shell through the guest agent"},
		{"no address", func(i api.VMSSHInfo) api.VMSSHInfo { i.IP = ""; i.SSHServer = &no; return i }, `vm "dev" has no IP address yet`},
		{"stopped", func(i api.VMSSHInfo) api.VMSSHInfo { i.State = api.VMStopped; return i }, "start it with `banger vm start dev`"},
		{"paused", func(i api.VMSSHInfo) api.VMSSHInfo { i.State = api.VMPaused; return i }, `vm "dev" is paused; ` + "`banger vm resume dev` resumes it"},
	} {
		err := sshPrecondition("dev", tt.info(running))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestDescribeCopy(t *testing.T) {
	got := describeCopy(agent.CopyResult{Files: 3, Dirs: 1, Links: 2, Bytes: 3 << 20, Skipped: 1})
	want := "3 files, 1 directory, 2 symlinks (3M); skipped 1 special file (sockets, devices or FIFOs)"
	if got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := describeCopy(agent.CopyResult{Files: 1, Dirs: 2, Bytes: 27}); !strings.HasPrefix(got, "1 file, 2 directories (27B)") {
		t.Fatalf("%q", got)
	}
}
