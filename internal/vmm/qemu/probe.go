package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/system"
)

// Host is the machine the driver runs on, as seen through /proc, /sys and
// /dev. The zero value looks at the real host; tests point the roots at a
// temporary tree and replace the functions.
type Host struct {
	// ProcRoot, SysRoot and DevRoot default to /proc, /sys and /dev.
	ProcRoot, SysRoot, DevRoot string
	// LookPath finds the QEMU binary; default exec.LookPath.
	LookPath func(file string) (string, error)
	// Runner runs `qemu-system-x86_64 --version`; default system.ExecRunner.
	Runner system.Runner
	// CheckKVM opens the KVM device and asks its API version; the default
	// does the real ioctl. It returns nil when the device answers.
	CheckKVM func(devPath string) error
}

// proc, sys and dev join p under the (possibly fake) roots.
func (h Host) proc(p ...string) string { return under(h.ProcRoot, "/proc", p) }

func (h Host) sys(p ...string) string { return under(h.SysRoot, "/sys", p) }

func (h Host) dev(p ...string) string { return under(h.DevRoot, "/dev", p) }

func under(root, def string, p []string) string {
	return filepath.Join(append([]string{orDefault(root, def)}, p...)...)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// KVM reports whether KVM can run an ordinary guest kernel here, and why
// (or why not) in one sentence a person can act on.
func (h Host) KVM() (usable bool, reason string) {
	dev := h.dev("kvm")
	if _, err := os.Stat(dev); err != nil {
		return false, fmt.Sprintf("%s does not exist: the CPU lacks virtualization or the kvm module is not loaded", dev)
	}
	// The PVM flavour of KVM (used inside cloud VMs without nested
	// virtualization) creates VMs fine but only runs PVM-enabled guest
	// kernels: an ordinary kernel hangs in its decompressor or dies with an
	// emulation failure. Nothing short of a test boot would show that, so
	// the loaded module decides.
	if _, err := os.Stat(h.sys("module", "kvm_pvm")); err == nil {
		return false, "the host's KVM is the PVM flavour (kvm_pvm is loaded), which cannot run ordinary guest kernels"
	}
	check := h.CheckKVM
	if check == nil {
		check = checkKVMDevice
	}
	if err := check(dev); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return false, fmt.Sprintf("%s is not accessible to this user: add it to the kvm group", dev)
		}
		return false, fmt.Sprintf("%s does not answer: %v", dev, err)
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat(h.sys("module", m)); err == nil {
			return true, fmt.Sprintf("%s is usable (%s)", dev, m)
		}
	}
	return true, dev + " is usable"
}

// kvmAPIVersion is KVM_API_VERSION, stable since Linux 2.6.22.
const kvmAPIVersion = 12

// checkKVMDevice opens dev and asks KVM_GET_API_VERSION.
func checkKVMDevice(dev string) error {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(fd)
	const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil {
		return fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("KVM API version %d, want %d", v, kvmAPIVersion)
	}
	return nil
}

// DetectAccel picks KVM when it is usable, else TCG, with the reason.
func (h Host) DetectAccel() (Accel, string) {
	ok, why := h.KVM()
	if ok {
		return AccelKVM, "KVM: " + why
	}
	return AccelTCG, "TCG (software emulation, slow): " + why
}

// DetectTransport picks vhost-vsock when /dev/vhost-vsock exists, else
// virtio-serial, with the reason.
func (h Host) DetectTransport() (Transport, string) {
	dev := h.dev("vhost-vsock")
	if _, err := os.Stat(dev); err == nil {
		return TransportVsock, "agent over vhost-vsock (" + dev + " exists)"
	}
	return TransportSerial, "agent over virtio-serial (" + dev + " is missing; load the vhost_vsock module for vsock)"
}

// TSCKHz reads the host TSC frequency from the first "cpu MHz" line of
// /proc/cpuinfo. Under TCG the guest's TSC runs at the host's rate.
func (h Host) TSCKHz() (int, error) {
	f, err := os.Open(h.proc("cpuinfo"))
	if err != nil {
		return 0, fmt.Errorf("read cpu frequency: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("%s has an unreadable cpu MHz %q", h.proc("cpuinfo"), strings.TrimSpace(v))
		}
		return int(mhz*1000 + 0.5), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read cpu frequency: %w", err)
	}
	return 0, fmt.Errorf("%s has no cpu MHz line", h.proc("cpuinfo"))
}

// Probe is what doctor and the daemon's vmm = "auto" need to know about
// running QEMU here.
type Probe struct {
	// QEMUPath is the resolved binary; empty when it is not installed.
	QEMUPath string `json:"qemu_path,omitempty"`
	// Version is QEMU's version, e.g. "7.2.22"; empty if unknown.
	Version string `json:"version,omitempty"`
	// KVMUsable says whether KVM can run an ordinary guest kernel; KVMReason
	// says why or why not. Firecracker needs KVMUsable too.
	KVMUsable bool   `json:"kvm_usable"`
	KVMReason string `json:"kvm_reason"`
	// Accel and Transport are what a launch would use.
	Accel     Accel     `json:"accel"`
	Transport Transport `json:"transport"`
	// Err says why QEMU cannot be used at all; empty when it can.
	Err string `json:"err,omitempty"`
}

// Usable reports whether QEMU can launch VMs here.
func (p Probe) Usable() bool { return p.Err == "" }

// Summary is one line for doctor: which binary, which acceleration and
// agent channel, and why.
func (p Probe) Summary() string {
	if p.Err != "" {
		return p.Err
	}
	v := p.Version
	if v == "" {
		v = "(unknown version)"
	}
	accel := "KVM"
	if p.Accel == AccelTCG {
		accel = "TCG software emulation, because " + p.KVMReason
	}
	return fmt.Sprintf("qemu %s at %s using %s; agent over %s", v, p.QEMUPath, accel, p.Transport)
}

var versionPattern = regexp.MustCompile(`version (\d+\.\d+(?:\.\d+)?)`)

// Probe finds binary (default qemu-system-x86_64), asks its version and
// decides acceleration and agent transport.
func (h Host) Probe(ctx context.Context, binary string) Probe {
	binary = orDefault(binary, DefaultBinary)
	p := Probe{}
	p.KVMUsable, p.KVMReason = h.KVM()
	p.Accel, _ = h.DetectAccel()
	p.Transport, _ = h.DetectTransport()
	look := h.LookPath
	if look == nil {
		look = exec.LookPath
	}
	path, err := look(binary)
	if err != nil {
		p.Err = fmt.Sprintf("%s is not installed (on Debian: apt-get install --no-install-recommends qemu-system-x86)", binary)
		return p
	}
	p.QEMUPath = path
	r := h.Runner
	if r == nil {
		r = system.ExecRunner{}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := system.RunChecked(ctx, r, system.Command{Path: path, Args: []string{"--version"}})
	if err != nil {
		p.Err = fmt.Sprintf("%s does not run: %v", path, err)
		return p
	}
	if m := versionPattern.FindSubmatch(out.Stdout); m != nil {
		p.Version = string(m[1])
	}
	return p
}

// Choice is the VMM that vmm = "auto" picks, and why.
type Choice struct {
	// VMM is "firecracker" or "qemu"; empty when neither can run.
	VMM    string `json:"vmm"`
	Reason string `json:"reason"`
}

// ChooseAuto decides vmm = "auto": Firecracker when its binary was found
// (firecrackerPath non-empty) and KVM is usable, else QEMU when it is
// usable, else nothing, with a reason naming what is missing.
func ChooseAuto(firecrackerPath string, p Probe) Choice {
	switch {
	case firecrackerPath != "" && p.KVMUsable:
		return Choice{VMM: "firecracker", Reason: fmt.Sprintf("firecracker at %s and %s", firecrackerPath, p.KVMReason)}
	case p.Usable():
		why := "firecracker is not installed"
		if firecrackerPath != "" {
			why = "firecracker needs KVM, but " + p.KVMReason
		}
		return Choice{VMM: "qemu", Reason: why + "; " + p.Summary()}
	case firecrackerPath != "":
		return Choice{Reason: "firecracker needs KVM, but " + p.KVMReason + ", and " + p.Err}
	default:
		return Choice{Reason: "neither VMM can run: firecracker is not installed and " + p.Err}
	}
}
