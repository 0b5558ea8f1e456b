package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func baseSpec() vmm.LaunchSpec {
	return vmm.LaunchSpec{
		VMID:          "0123abcd",
		Name:          "dev",
		KernelPath:    "/var/lib/banger/images/debian/vmlinux",
		InitrdPath:    "/var/lib/banger/images/debian/initrd.img",
		BootArgs:      "console=ttyS0 reboot=k panic=1 pci=off banger.name=dev banger.agent_port=1024",
		RootDrive:     vmm.Drive{ID: "rootfs", Path: "/var/lib/banger/vms/0123abcd/rootfs.ext4"},
		Network:       []vmm.NetInterface{{ID: "eth0", TapName: "bgr-0123abcd", MAC: "02:aa:bb:cc:dd:ee"}},
		VCPUs:         2,
		MemoryMiB:     1024,
		Agent:         vmm.AgentChannel{GuestCID: 3, UDSPath: "/run/banger/vms/0123abcd/vsock.sock", Port: 1024},
		RunDir:        "/run/banger/vms/0123abcd",
		SerialLogPath: "/var/lib/banger/vms/0123abcd/serial.log",
		VMMLogPath:    "/var/lib/banger/vms/0123abcd/vmm.log",
	}
}

func TestArgsGolden(t *testing.T) {
	serial := Options{Accel: AccelTCG, Transport: TransportSerial, TSCKHz: 2596148,
		QMPSocket: "/run/banger/vms/0123abcd/qmp.sock", AgentSocket: "/run/banger/vms/0123abcd/vsock.sock"}
	vsock := Options{Accel: AccelKVM, Transport: TransportVsock, TSCKHz: 2596148,
		QMPSocket: "/run/banger/vms/0123abcd/qmp.sock"}
	tests := []struct {
		name string
		spec func(*vmm.LaunchSpec)
		opts Options
	}{
		{name: "tcg-serial", opts: serial},
		{name: "kvm-vsock", opts: vsock},
		{name: "tcg-serial-restore", opts: func() Options { o := serial; o.Incoming = "defer"; return o }()},
		{
			name: "minimal",
			spec: func(s *vmm.LaunchSpec) {
				s.InitrdPath, s.BootArgs, s.Network = "", "", nil
				s.RootDrive.ID = ""
				s.VCPUs, s.MemoryMiB = 1, 128
			},
			opts: serial,
		},
		{
			name: "drives-and-awkward-paths",
			spec: func(s *vmm.LaunchSpec) {
				s.RootDrive.Path = "/srv/vm,disks/nbd:root.img"
				s.ExtraDrives = []vmm.Drive{
					{ID: "data", Path: "/srv/data.img"},
					{ID: "seed", Path: "/srv/seed.iso", ReadOnly: true},
				}
				s.Network = append(s.Network, vmm.NetInterface{ID: "eth1", TapName: "tap,1"})
				s.SerialLogPath = "/logs/a,b/serial.log"
			},
			opts: Options{Accel: AccelTCG, Transport: TransportSerial,
				QMPSocket: "/run/x,y/qmp.sock", AgentSocket: "/run/x,y/agent.sock"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := baseSpec()
			if tt.spec != nil {
				tt.spec(&spec)
			}
			args, err := Args(spec, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := renderArgs(args)
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestArgsGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("command line differs from %s (rerun with -update if intended):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// renderArgs puts each flag on a line with its value, so golden diffs read
// like the command line.
func renderArgs(args []string) string {
	var b strings.Builder
	b.WriteString(DefaultBinary)
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			b.WriteString(" \\\n  ")
		} else {
			b.WriteString(" ")
		}
		b.WriteString(a)
	}
	b.WriteString("\n")
	return b.String()
}

func TestKernelCmdline(t *testing.T) {
	tcg := Options{Accel: AccelTCG, Transport: TransportSerial, TSCKHz: 2000000}
	tests := []struct {
		name, boot string
		opts       Options
		want       string
	}{
		{"adds what is missing", "root=/dev/vda", tcg,
			"root=/dev/vda console=ttyS0 panic=-1 tsc_early_khz=2000000 banger.agent_channel=serial"},
		{"keeps what is given", "console=hvc0 panic=5 tsc_early_khz=1 banger.agent_channel=x", tcg,
			"console=hvc0 panic=5 tsc_early_khz=1 banger.agent_channel=x"},
		{"kvm and vsock need neither hint", "  quiet  ", Options{Accel: AccelKVM, Transport: TransportVsock, TSCKHz: 2000000},
			"quiet console=ttyS0 panic=-1"},
		{"unknown tsc is left out", "", Options{Accel: AccelTCG, Transport: TransportVsock},
			"console=ttyS0 panic=-1"},
		{"a flag without value counts", "panic", Options{Accel: AccelKVM, Transport: TransportVsock},
			"panic console=ttyS0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KernelCmdline(tt.boot, tt.opts); got != tt.want {
				t.Errorf("KernelCmdline(%q) = %q, want %q", tt.boot, got, tt.want)
			}
		})
	}
}

func TestArgsRejects(t *testing.T) {
	ok := Options{Accel: AccelTCG, Transport: TransportSerial, QMPSocket: "/r/q", AgentSocket: "/r/a"}
	tests := []struct {
		name string
		spec func(*vmm.LaunchSpec)
		opts func(*Options)
		want string
	}{
		{"bad accel", nil, func(o *Options) { o.Accel = "hvf" }, `acceleration "hvf" is not kvm or tcg`},
		{"bad transport", nil, func(o *Options) { o.Transport = "vsock" }, `agent transport "vsock"`},
		{"low cid", func(s *vmm.LaunchSpec) { s.Agent.GuestCID = 2 }, func(o *Options) { o.Transport = TransportVsock },
			"guest CID of at least 3"},
		{"serial without socket", nil, func(o *Options) { o.AgentSocket = "" }, "needs a socket path"},
		{"no qmp", nil, func(o *Options) { o.QMPSocket = "" }, "no QMP socket"},
		{"duplicate drive id", func(s *vmm.LaunchSpec) { s.ExtraDrives = []vmm.Drive{{ID: "rootfs", Path: "/x"}} }, nil,
			`drive id "rootfs" is already used by another drive`},
		{"reserved id", func(s *vmm.LaunchSpec) { s.Network[0].ID = "qmp" }, nil,
			`network interface id "qmp" is already used by another object`},
		{"bad id", func(s *vmm.LaunchSpec) { s.ExtraDrives = []vmm.Drive{{ID: "1data", Path: "/x"}} }, nil,
			`drive id "1data" must start with a letter`},
		{"drive without path", func(s *vmm.LaunchSpec) { s.ExtraDrives = []vmm.Drive{{ID: "data"}} }, nil,
			`drive "data" has no path`},
		{"no tap", func(s *vmm.LaunchSpec) { s.Network[0].TapName = "" }, nil, `network interface "eth0" has no tap device`},
		{"bad mac", func(s *vmm.LaunchSpec) { s.Network[0].MAC = "02:aa:bb:cc:dd:ee:ff:00" }, nil,
			`has MAC "02:aa:bb:cc:dd:ee:ff:00"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, o := baseSpec(), ok
			if tt.spec != nil {
				tt.spec(&spec)
			}
			if tt.opts != nil {
				tt.opts(&o)
			}
			_, err := Args(spec, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Args error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSplitOptsRoundTripsEscaping(t *testing.T) {
	in := "socket,id=qmp,path=" + esc("/a,b,,c/q.sock") + ",server=on"
	got := splitOpts(in)
	want := []string{"socket", "id=qmp", "path=/a,b,,c/q.sock", "server=on"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("splitOpts(%q) = %q, want %q", in, got, want)
	}
}
