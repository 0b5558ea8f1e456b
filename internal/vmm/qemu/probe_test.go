package qemu

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
)

// fakeHost builds a /proc, /sys and /dev tree in a temp dir. files maps
// paths relative to the root ("dev/kvm", "sys/module/kvm_pvm/") to
// contents; a trailing slash makes a directory.
func fakeHost(t *testing.T, files map[string]string) Host {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"proc", "sys/module", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Host{
		ProcRoot: filepath.Join(root, "proc"),
		SysRoot:  filepath.Join(root, "sys"),
		DevRoot:  filepath.Join(root, "dev"),
		CheckKVM: func(string) error { return nil },
		LookPath: func(string) (string, error) { return "", exec.ErrNotFound },
	}
}

const cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2596.148\ncache size\t: 36608 KB\n\nprocessor\t: 1\ncpu MHz\t\t: 2000.000\n"

func TestKVMDetection(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		check    error
		usable   bool
		reason   string
		accel    Accel
		accelWhy string
	}{
		{"no device", nil, nil, false, "kvm does not exist", AccelTCG, "TCG (software emulation, slow): "},
		{"pvm flavour", map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/": "", "sys/module/kvm/": ""}, nil,
			false, "PVM flavour (kvm_pvm is loaded)", AccelTCG, "TCG"},
		{"no permission", map[string]string{"dev/kvm": ""}, &fs.PathError{Op: "open", Path: "/dev/kvm", Err: fs.ErrPermission},
			false, "add it to the kvm group", AccelTCG, "TCG"},
		{"broken device", map[string]string{"dev/kvm": ""}, errors.New("KVM API version 11, want 12"),
			false, "does not answer: KVM API version 11", AccelTCG, "TCG"},
		{"intel", map[string]string{"dev/kvm": "", "sys/module/kvm_intel/": ""}, nil, true, "usable (kvm_intel)", AccelKVM, "KVM: "},
		{"amd", map[string]string{"dev/kvm": "", "sys/module/kvm_amd/": ""}, nil, true, "usable (kvm_amd)", AccelKVM, "KVM: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fakeHost(t, tt.files)
			h.CheckKVM = func(string) error { return tt.check }
			usable, reason := h.KVM()
			if usable != tt.usable || !strings.Contains(reason, tt.reason) {
				t.Errorf("KVM() = %v, %q; want %v and a reason containing %q", usable, reason, tt.usable, tt.reason)
			}
			accel, why := h.DetectAccel()
			if accel != tt.accel || !strings.HasPrefix(why, tt.accelWhy) {
				t.Errorf("DetectAccel() = %s, %q; want %s, %q...", accel, why, tt.accel, tt.accelWhy)
			}
		})
	}
}

func TestDetectTransport(t *testing.T) {
	if tr, why := fakeHost(t, nil).DetectTransport(); tr != TransportSerial || !strings.Contains(why, "vhost-vsock is missing") {
		t.Errorf("without /dev/vhost-vsock: %s, %q", tr, why)
	}
	if tr, _ := fakeHost(t, map[string]string{"dev/vhost-vsock": ""}).DetectTransport(); tr != TransportVsock {
		t.Errorf("with /dev/vhost-vsock: %s, want %s", tr, TransportVsock)
	}
}

func TestTSCKHz(t *testing.T) {
	tests := []struct {
		name, cpuinfo string
		want          int
		err           string
	}{
		{"first cpu", cpuinfo, 2596148, ""},
		{"rounding", "cpu MHz : 2999.9996\n", 3000000, ""},
		{"missing", "processor : 0\n", 0, "no cpu MHz line"},
		{"garbage", "cpu MHz : fast\n", 0, `unreadable cpu MHz "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fakeHost(t, map[string]string{"proc/cpuinfo": tt.cpuinfo}).TSCKHz()
			if got != tt.want || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("TSCKHz() = %d, %v; want %d, %q", got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := fakeHost(t, nil).TSCKHz(); err == nil {
		t.Error("TSCKHz without /proc/cpuinfo succeeded")
	}
}

// versionRunner answers --version like QEMU does.
type versionRunner struct {
	out string
	err error
	got []system.Command
}

func (r *versionRunner) Run(_ context.Context, c system.Command) (system.Output, error) {
	r.got = append(r.got, c)
	return system.Output{Stdout: []byte(r.out)}, r.err
}

func TestProbe(t *testing.T) {
	h := fakeHost(t, map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/": ""})
	p := h.Probe(context.Background(), "")
	if p.Usable() || !strings.Contains(p.Err, "qemu-system-x86_64 is not installed") || p.Accel != AccelTCG || p.KVMUsable {
		t.Errorf("probe without qemu = %+v", p)
	}

	r := &versionRunner{out: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n"}
	h.Runner = r
	h.LookPath = func(f string) (string, error) { return "/usr/bin/" + f, nil }
	p = h.Probe(context.Background(), "")
	if !p.Usable() || p.QEMUPath != "/usr/bin/qemu-system-x86_64" || p.Version != "7.2.22" || p.Transport != TransportSerial {
		t.Fatalf("probe = %+v", p)
	}
	if len(r.got) != 1 || r.got[0].String() != "/usr/bin/qemu-system-x86_64 --version" {
		t.Errorf("ran %v", r.got)
	}
	want := "qemu 7.2.22 at /usr/bin/qemu-system-x86_64 using TCG software emulation, because the host's KVM is the PVM flavour (kvm_pvm is loaded), which cannot run ordinary guest kernels; agent over virtio-serial"
	if s := p.Summary(); s != want {
		t.Errorf("Summary() =\n%q\nwant\n%q", s, want)
	}

	h.Runner = &versionRunner{err: errors.New("exit status 1")}
	if p := h.Probe(context.Background(), "qemu-kvm"); p.Usable() || !strings.Contains(p.Err, "/usr/bin/qemu-kvm does not run") {
		t.Errorf("probe of a broken qemu = %+v", p)
	}
}

func TestChooseAuto(t *testing.T) {
	qemuOK := Probe{QEMUPath: "/usr/bin/qemu-system-x86_64", Version: "7.2.22", KVMUsable: true, KVMReason: "/dev/kvm is usable (kvm_intel)", Accel: AccelKVM, Transport: TransportVsock}
	noKVM := Probe{QEMUPath: "/usr/bin/qemu-system-x86_64", Version: "7.2.22", KVMReason: "the host's KVM is the PVM flavour", Accel: AccelTCG, Transport: TransportSerial}
	noQEMU := noKVM
	noQEMU.QEMUPath, noQEMU.Err = "", "qemu-system-x86_64 is not installed"
	tests := []struct {
		name, fc string
		p        Probe
		vmm      string
		reason   string
	}{
		{"firecracker with kvm", "/usr/local/bin/firecracker", qemuOK, "firecracker", "firecracker at /usr/local/bin/firecracker and /dev/kvm is usable"},
		{"no firecracker", "", qemuOK, "qemu", "firecracker is not installed; qemu 7.2.22"},
		{"firecracker without kvm", "/usr/local/bin/firecracker", noKVM, "qemu", "firecracker needs KVM, but the host's KVM is the PVM flavour; qemu 7.2.22 at /usr/bin/qemu-system-x86_64 using TCG"},
		{"nothing works", "/usr/local/bin/firecracker", noQEMU, "", "firecracker needs KVM, but the host's KVM is the PVM flavour, and qemu-system-x86_64 is not installed"},
		{"nothing installed", "", noQEMU, "", "neither VMM can run: firecracker is not installed and qemu-system-x86_64 is not installed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ChooseAuto(tt.fc, tt.p)
			if c.VMM != tt.vmm || !strings.Contains(c.Reason, tt.reason) {
				t.Errorf("ChooseAuto = %+v, want %q with reason containing %q", c, tt.vmm, tt.reason)
			}
		})
	}
}

// TestRealHostProbe runs the probe against this machine, so doctor's view
// of a host is visible in the test log.
func TestRealHostProbe(t *testing.T) {
	p := Host{}.Probe(context.Background(), "")
	t.Logf("probe: %s", p.Summary())
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && p.KVMUsable {
		t.Errorf("kvm_pvm is loaded but the probe calls KVM usable: %+v", p)
	}
}

func TestCheckKVMDevice(t *testing.T) {
	notKVM := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(notKVM, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkKVMDevice(notKVM); err == nil || !strings.Contains(err.Error(), "KVM_GET_API_VERSION") {
		t.Errorf("checkKVMDevice(regular file) = %v, want an ioctl error", err)
	}
	if err := checkKVMDevice(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("checkKVMDevice(missing) = %v, want not exist", err)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no accessible /dev/kvm to check for real: %v", err)
	}
	f.Close()
	if err := checkKVMDevice("/dev/kvm"); err != nil {
		t.Errorf("checkKVMDevice(/dev/kvm) = %v", err)
	}
}
