package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/system"
)

// Host is how the host checks see the machine. RealHost reads the real one;
// tests point Root at a scratch tree and replace the functions.
type Host struct {
	// Root prefixes /dev, /sys, /proc and /run ("" for the real ones).
	Root string
	// KVMAPIVersion opens the KVM device and returns KVM_GET_API_VERSION.
	KVMAPIVersion func(dev string) (int, error)
	LookPath      func(name string) (string, error)
	// Runner runs `<vmm> --version` and `systemctl is-active`.
	Runner system.Runner
	// FreeBytes is the space available to unprivileged users on the file
	// system holding path.
	FreeBytes func(path string) (uint64, error)
	// Trusted says whether only root can change the binary at path
	// (privileged.TrustedBinary).
	Trusted func(path string) error
}

// RealHost is this machine.
func RealHost() Host {
	return Host{
		KVMAPIVersion: kvmAPIVersion,
		LookPath:      exec.LookPath,
		Runner:        system.ExecRunner{},
		FreeBytes:     freeBytes,
		Trusted:       privileged.TrustedBinary,
	}
}

func (h Host) at(p string) string {
	if h.Root == "" {
		return p
	}
	return filepath.Join(h.Root, p)
}

func (h Host) exists(p string) bool {
	_, err := os.Stat(h.at(p))
	return err == nil
}

// kvmAPIVersion is the one KVM ioctl every KVM user starts with; it proves
// the device opens and speaks the stable API (12).
func kvmAPIVersion(dev string) (int, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer func() { _ = unix.Close(fd) }()
	const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	return unix.IoctlRetInt(fd, kvmGetAPIVersion)
}

func freeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// KVMCheck says whether VMs can use hardware virtualisation. A host whose
// KVM module is the PVM flavour (kvm_pvm) opens /dev/kvm fine but cannot run
// ordinary guest kernels, so it is reported as unusable with the reason.
func KVMCheck(h Host) Check {
	return Check{Name: "kvm", Run: func(context.Context) Result {
		dev := h.at("/dev/kvm")
		if !h.exists("/dev/kvm") {
			return Result{Status: Warn, Summary: "no /dev/kvm",
				Details: []string{"Firecracker needs KVM; the QEMU driver runs guests under TCG emulation (much slower)",
					"load kvm_intel or kvm_amd, or enable nested virtualisation for this machine"}}
		}
		v, err := h.KVMAPIVersion(dev)
		switch {
		case errors.Is(err, fs.ErrPermission):
			return Result{Status: Fail, Summary: "/dev/kvm is not accessible to you",
				Details: []string{err.Error(), "add yourself to the kvm group (`sudo usermod -aG kvm $USER`, then log in again)"}}
		case err != nil:
			return Result{Status: Fail, Summary: "/dev/kvm does not answer", Details: []string{err.Error()}}
		case v != 12:
			return Result{Status: Fail, Summary: fmt.Sprintf("/dev/kvm speaks API %d, not 12", v)}
		}
		if h.exists("/sys/module/kvm_pvm") {
			return Result{Status: Warn, Summary: "KVM is the PVM flavour (kvm_pvm): ordinary guest kernels cannot run under it",
				Details: []string{"Firecracker cannot boot banger's guests on this host",
					"the QEMU driver falls back to TCG emulation (qemu.accel = \"auto\" or \"tcg\")"}}
		}
		return Result{Status: Pass, Summary: "usable (KVM API 12)"}
	}}
}

// VMMCheck finds the VMM binaries and their versions. Either is enough to run
// VMs; neither is a failure.
func VMMCheck(h Host, firecracker, qemu string) Check {
	return Check{Name: "VMM binaries", Run: func(ctx context.Context) Result {
		type found struct{ name, path, version string }
		var have []found
		var missing []string
		for _, name := range []string{firecracker, qemu} {
			p, err := h.LookPath(name)
			if err != nil {
				missing = append(missing, name)
				continue
			}
			have = append(have, found{name, p, firstLine(ctx, h.Runner, p, "--version")})
		}
		r := Result{Status: Pass}
		for _, f := range have {
			r.Details = append(r.Details, fmt.Sprintf("%s: %s", f.path, f.version))
		}
		switch {
		case len(have) == 0:
			r.Status = Fail
			r.Summary = "neither " + firecracker + " nor " + qemu + " found"
			r.Details = append(r.Details, "install Firecracker (firecracker.binary in config.toml) or QEMU (`apt-get install qemu-system-x86`)")
		case len(missing) > 0 && missing[0] == firecracker:
			r.Status = Warn
			r.Summary = firecracker + " not found; only the QEMU driver works"
			r.Details = append(r.Details, "install Firecracker or set firecracker.binary in config.toml")
		default:
			names := []string{}
			for _, f := range have {
				names = append(names, filepath.Base(f.path))
			}
			r.Summary = strings.Join(names, " and ") + " found"
			if len(missing) > 0 {
				r.Details = append(r.Details, missing[0]+" not found (optional)")
			}
		}
		return r
	}}
}

func firstLine(ctx context.Context, r system.Runner, bin string, args ...string) string {
	out, err := r.Run(ctx, system.Command{Path: bin, Args: args})
	if err != nil {
		return "version unknown (" + err.Error() + ")"
	}
	text := strings.TrimSpace(string(out.Stdout))
	if text == "" {
		text = strings.TrimSpace(string(out.Stderr))
	}
	line, _, _ := strings.Cut(text, "\n")
	if line == "" || out.ExitCode != 0 {
		return fmt.Sprintf("version unknown (exit %d)", out.ExitCode)
	}
	return line
}

// JailerCheck reports on firecracker.jailer when it is set: the binary and
// its version, that only root can change it (the helper runs it as root and
// refuses otherwise), and, on a system install, that the running helper
// launches it. info is nil in user mode.
func JailerCheck(h Host, jailer string, info HelperInfoFunc) Check {
	return Check{Name: "jailer", Run: func(ctx context.Context) Result {
		if jailer == "" {
			return Result{Status: Pass, Summary: "not used (firecracker.jailer unset)"}
		}
		p, err := h.LookPath(jailer)
		if err != nil {
			return Result{Status: Fail, Summary: jailer + " not found",
				Details: []string{"install Firecracker's jailer or unset firecracker.jailer in config.toml"}}
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		r := Result{Status: Pass, Summary: p + ": " + firstLine(ctx, h.Runner, p, "--version")}
		if err := h.Trusted(p); err != nil {
			r.Status = Fail
			r.Details = append(r.Details, err.Error(), "the jailer runs as root: install it root-owned, e.g. `sudo install -o root -m 0755 jailer /usr/local/bin/`")
		}
		if info == nil {
			return r
		}
		hi, err := info(ctx)
		switch {
		case err != nil:
			r.Status = Fail
			r.Details = append(r.Details, "cannot ask the root helper, which launches it: "+err.Error())
		case hi.Jailer == "":
			r.Status = Fail
			r.Details = append(r.Details, "the root helper launches no jailer: it started before firecracker.jailer was set, or could not use it (`journalctl -u banger-root-helper`); `sudo banger system restart`")
		case hi.Jailer != p:
			r.Status = Warn
			r.Details = append(r.Details, fmt.Sprintf("the root helper launches %s, not %s: `sudo banger system restart`", hi.Jailer, p))
		}
		return r
	}}
}

// HelperInfoFunc asks the root helper who it is (privileged.Client.Info).
type HelperInfoFunc func(ctx context.Context) (privileged.HelperInfo, error)

// HelperCheck says whether the root helper answers and serves the install
// owner, and whether the caller is that owner. In user mode (no install) it
// passes: privileged steps then run in a root daemon or not at all.
func HelperCheck(metaPath string, callerUID int, info HelperInfoFunc) Check {
	return Check{Name: "root helper", Run: func(ctx context.Context) Result {
		meta, err := installmeta.Read(metaPath)
		if errors.Is(err, installmeta.ErrNotInstalled) {
			return Result{Status: Pass, Summary: "not installed (user mode)",
				Details: []string{"privileged steps (bridge, taps, loop devices) work only when the daemon runs as root",
					"for daily use: `sudo banger system install --owner $USER`"}}
		}
		if err != nil {
			return Result{Status: Fail, Summary: "install metadata unreadable", Details: []string{err.Error()}}
		}
		hi, err := info(ctx)
		switch {
		case errors.Is(err, privileged.ErrRefused):
			return Result{Status: Fail, Summary: "refuses you",
				Details: []string{err.Error(), fmt.Sprintf("banger is installed for %s (uid %d); run banger as that user, or reinstall with --owner", meta.OwnerUser, meta.OwnerUID)}}
		case err != nil:
			return Result{Status: Fail, Summary: "not reachable",
				Details: []string{err.Error(), "`sudo banger system restart`, then `journalctl -u banger-root-helper`"}}
		}
		r := Result{Status: Pass, Summary: fmt.Sprintf("reachable, serves uid %d (%s), pid %d, %s", hi.OwnerUID, meta.OwnerUser, hi.PID, hi.Version)}
		if hi.OwnerUID != meta.OwnerUID {
			r.Status = Fail
			r.Summary = fmt.Sprintf("serves uid %d but the install owner is uid %d", hi.OwnerUID, meta.OwnerUID)
			r.Details = append(r.Details, "it is running from an older install: `sudo banger system restart`")
			return r
		}
		if callerUID != meta.OwnerUID && callerUID != 0 {
			r.Status = Warn
			r.Details = append(r.Details, fmt.Sprintf("you are uid %d, not the install owner (uid %d): the helper will refuse a daemon of yours", callerUID, meta.OwnerUID))
		}
		if hi.Version != meta.Version || hi.Commit != meta.Commit {
			r.Status = Warn
			r.Details = append(r.Details, fmt.Sprintf("the helper runs %s (commit %.8s) but %s is installed: `sudo banger system restart`", hi.Version, hi.Commit, meta.Version))
		}
		return r
	}}
}

// UnitsCheck says whether both units are active on a system install.
func UnitsCheck(h Host, metaPath string, units []string) Check {
	return Check{Name: "systemd units", Run: func(ctx context.Context) Result {
		if _, err := installmeta.Read(metaPath); err != nil {
			return Result{Status: Pass, Summary: "not installed (user mode)"}
		}
		if !h.exists("/run/systemd/system") {
			return Result{Status: Warn, Summary: "systemd is not running here; units not checked"}
		}
		r := Result{Status: Pass, Summary: strings.Join(units, " and ") + " active"}
		for _, u := range units {
			state := "unknown"
			if out, err := h.Runner.Run(ctx, system.Command{Path: "systemctl", Args: []string{"is-active", u}}); err == nil {
				if s := strings.TrimSpace(string(out.Stdout)); s != "" {
					state = s
				}
			}
			if state != "active" {
				r.Status = Fail
				r.Summary = u + " is " + state
				r.Details = append(r.Details, fmt.Sprintf("%s is %s: `sudo banger system restart`, then `journalctl -u %s`", u, state, u))
			}
		}
		return r
	}}
}

// NetworkProbe is one optional network fact, supplied by the package that
// owns it (NAT rules, resolver configuration).
type NetworkProbe struct {
	Name    string
	Present func(ctx context.Context) (bool, error)
}

// NetworkCheck reports banger's bridge, IPv4 forwarding and any extra
// probes. A missing bridge is a warning: the daemon creates it when the
// first VM starts.
func NetworkCheck(h Host, bridge string, probes ...NetworkProbe) Check {
	return Check{Name: "bridge and NAT", Run: func(ctx context.Context) Result {
		r := Result{Status: Pass}
		var present []string
		if h.exists(filepath.Join("/sys/class/net", bridge, "bridge")) {
			present = append(present, "bridge "+bridge)
		} else {
			r.Status = Warn
			r.Details = append(r.Details, "bridge "+bridge+" is not present (the daemon creates it when a VM starts)")
		}
		fwd, err := os.ReadFile(h.at("/proc/sys/net/ipv4/ip_forward"))
		switch {
		case err != nil:
			r.Details = append(r.Details, "ip_forward unknown: "+err.Error())
		case strings.TrimSpace(string(fwd)) == "1":
			present = append(present, "ip_forward")
		default:
			r.Status = Warn
			r.Details = append(r.Details, "net.ipv4.ip_forward is 0: VMs cannot reach the network (the system install's sysctl drop-in turns it on)")
		}
		for _, p := range probes {
			ok, err := p.Present(ctx)
			switch {
			case err != nil:
				r.Details = append(r.Details, p.Name+" not checked: "+err.Error())
			case ok:
				present = append(present, p.Name)
			default:
				r.Status = Warn
				r.Details = append(r.Details, p.Name+" is not present")
			}
		}
		if len(probes) == 0 {
			r.Details = append(r.Details, "NAT and resolver not checked in this build")
		}
		r.Summary = "present: " + strings.Join(present, ", ")
		if len(present) == 0 {
			r.Summary = "nothing set up yet"
		}
		return r
	}}
}

// Disk space thresholds: an image plus a VM disk need a few GiB.
const (
	diskFailBytes = 2 << 30
	diskWarnBytes = 10 << 30
)

// DiskSpaceCheck reports free space where banger keeps images and disks.
func DiskSpaceCheck(h Host, stateDir string) Check {
	return Check{Name: "disk space", Run: func(context.Context) Result {
		dir := stateDir
		for !h.exists(dir) && dir != "/" && dir != "." {
			dir = filepath.Dir(dir)
		}
		free, err := h.FreeBytes(h.at(dir))
		if err != nil {
			return Result{Status: Warn, Summary: "cannot tell free space on " + dir, Details: []string{err.Error()}}
		}
		r := Result{Status: Pass, Summary: fmt.Sprintf("%.1f GiB free on %s", float64(free)/(1<<30), dir)}
		switch {
		case free < diskFailBytes:
			r.Status = Fail
			r.Details = []string{"images and VM disks need several GiB; free space or move the state dir"}
		case free < diskWarnBytes:
			r.Status = Warn
			r.Details = []string{"less than 10 GiB: a few images and VMs will fill it"}
		}
		return r
	}}
}
