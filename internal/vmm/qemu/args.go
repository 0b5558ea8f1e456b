package qemu

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
)

// Accel is how QEMU runs guest code.
type Accel string

// Accelerations the driver uses.
const (
	// AccelKVM runs the guest on the host CPU through /dev/kvm.
	AccelKVM Accel = "kvm"
	// AccelTCG emulates the guest CPU in software: slow (a busybox guest
	// boots in seconds, a systemd one in tens of seconds) but needs nothing
	// from the host kernel.
	AccelTCG Accel = "tcg"
)

// Transport is the device that carries the guest agent's stream.
type Transport string

// Agent transports.
const (
	// TransportVsock is vhost-vsock: the host dials AF_VSOCK to the guest's
	// CID. It needs /dev/vhost-vsock on the host and supports any number of
	// concurrent connections.
	TransportVsock Transport = "vhost-vsock"
	// TransportSerial is one virtio-serial port, exposed on the host as a
	// Unix socket QEMU listens on. It is a single stream: see
	// Instance.DialAgent.
	TransportSerial Transport = "virtio-serial"
)

// AgentPortName is the virtio-serial port name. Inside the guest it is
// /sys/class/virtio-ports/vportNpM/name, and /dev/virtio-ports/banger
// under udev.
const AgentPortName = "banger"

// AgentChannelBootArg tells the guest agent which channel to serve. With
// TransportSerial the driver appends "banger.agent_channel=serial" to the
// kernel command line (the agent then opens /dev/virtio-ports/banger, the
// link udev makes from the port name), since only the driver knows which
// transport this host allowed. With vhost-vsock nothing is added: vsock is
// the agent's default. The name and values are internal/agent's
// ParamAgentChannel contract.
const AgentChannelBootArg = "banger.agent_channel"

// Options are the decisions Launch made about the host that shape the
// command line, kept apart from LaunchSpec so Args stays a pure function.
type Options struct {
	Accel     Accel
	Transport Transport
	// TSCKHz is the host TSC frequency. Under TCG it is passed to the guest
	// as tsc_early_khz, without which the guest sometimes hangs calibrating
	// its TSC. Zero leaves it out.
	TSCKHz int
	// QMPSocket is the Unix socket QEMU serves QMP on.
	QMPSocket string
	// AgentSocket is the Unix socket QEMU serves the virtio-serial agent
	// port on (TransportSerial only).
	AgentSocket string
	// Incoming, when set, is QEMU's -incoming value: the guest is not
	// booted but loaded from a migration stream. Restore uses "defer" and
	// hands the stream over QMP (migrate-incoming), so no path or shell
	// command is ever on the command line.
	Incoming string
}

// Args returns QEMU's argument list (without the program name) for spec.
// It is a pure function of its inputs, so the command line can be checked
// by golden files without QEMU.
//
// Option values are escaped for QEMU's key=value parser (a comma in a path
// is doubled), and disks use -blockdev with file.filename so a path is
// never read as a protocol prefix such as "nbd:".
func Args(spec vmm.LaunchSpec, o Options) ([]string, error) {
	if err := checkArgsInput(spec, o); err != nil {
		return nil, err
	}
	a := []string{
		"-name", "guest=" + esc(spec.VMID),
		// ACPI stays on: with acpi=off Debian's kernel finds no
		// virtio-mmio devices, as it expects them in the DSDT.
		"-machine", "microvm,acpi=on",
	}
	switch o.Accel {
	case AccelKVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	case AccelTCG:
		a = append(a, "-accel", "tcg", "-cpu", "max")
	}
	a = append(a,
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.VCPUs),
		// No default devices, no host config files, no window: the VM is
		// exactly the devices below. -no-reboot makes a guest reboot end
		// QEMU, as it ends Firecracker, so the supervisor sees one exit.
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", spec.KernelPath,
	)
	if spec.InitrdPath != "" {
		a = append(a, "-initrd", spec.InitrdPath)
	}
	a = append(a, "-append", KernelCmdline(spec.BootArgs, o))

	// The serial log is appended to, so an earlier boot's console survives
	// for `banger vm logs`, as it does under Firecracker.
	a = append(a,
		"-chardev", "file,id=console,path="+esc(spec.SerialLogPath)+",append=on",
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,path="+esc(o.QMPSocket)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	)

	// The root drive comes first so the guest sees it as /dev/vda.
	for _, d := range append([]vmm.Drive{rootDrive(spec.RootDrive)}, spec.ExtraDrives...) {
		node := esc(d.ID)
		bd := "driver=raw,node-name=" + node + ",discard=unmap,file.driver=file,file.filename=" + esc(d.Path)
		if d.ReadOnly {
			bd += ",read-only=on"
		}
		a = append(a, "-blockdev", bd, "-device", "virtio-blk-device,drive="+node)
	}
	for _, n := range spec.Network {
		id := esc(n.ID)
		dev := "virtio-net-device,netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a,
			"-netdev", "tap,id="+id+",ifname="+esc(n.TapName)+",script=no,downscript=no",
			"-device", dev,
		)
	}
	switch o.Transport {
	case TransportVsock:
		a = append(a, "-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(spec.Agent.GuestCID), 10))
	case TransportSerial:
		a = append(a,
			"-chardev", "socket,id=agent,path="+esc(o.AgentSocket)+",server=on,wait=off",
			"-device", "virtio-serial-device",
			"-device", "virtserialport,chardev=agent,name="+AgentPortName,
		)
	}
	// A guest without an entropy source can stall for minutes in early
	// userspace (sshd, TLS) waiting for the CRNG to initialize.
	a = append(a,
		"-object", "rng-random,id=rng,filename=/dev/urandom",
		"-device", "virtio-rng-device,rng=rng",
	)
	if o.Incoming != "" {
		a = append(a, "-incoming", o.Incoming)
	}
	return a, nil
}

// KernelCmdline is bootArgs plus what this driver needs the guest kernel
// to know: the serial console, panic=-1 (a panicking guest reboots at
// once, which ends QEMU, instead of hanging), tsc_early_khz under TCG and
// the agent channel under virtio-serial. A parameter already present in
// bootArgs is left as given.
func KernelCmdline(bootArgs string, o Options) string {
	params := strings.Fields(bootArgs)
	add := func(key, value string) {
		for _, p := range params {
			if k, _, _ := strings.Cut(p, "="); k == key {
				return
			}
		}
		params = append(params, key+"="+value)
	}
	add("console", "ttyS0")
	add("panic", "-1")
	if o.Accel == AccelTCG && o.TSCKHz > 0 {
		add("tsc_early_khz", strconv.Itoa(o.TSCKHz))
	}
	if o.Transport == TransportSerial {
		add(AgentChannelBootArg, "serial")
	}
	return strings.Join(params, " ")
}

// rootDrive names the root drive "rootfs" when the spec leaves its ID empty.
func rootDrive(d vmm.Drive) vmm.Drive {
	if d.ID == "" {
		d.ID = "rootfs"
	}
	return d
}

func checkArgsInput(spec vmm.LaunchSpec, o Options) error {
	switch o.Accel {
	case AccelKVM, AccelTCG:
	default:
		return fmt.Errorf("acceleration %q is not kvm or tcg", o.Accel)
	}
	switch o.Transport {
	case TransportVsock:
		if spec.Agent.GuestCID < 3 {
			return fmt.Errorf("vhost-vsock needs a guest CID of at least 3 (got %d)", spec.Agent.GuestCID)
		}
	case TransportSerial:
		if o.AgentSocket == "" {
			return errors.New("virtio-serial agent channel needs a socket path")
		}
	default:
		return fmt.Errorf("agent transport %q is not %s or %s", o.Transport, TransportVsock, TransportSerial)
	}
	if o.QMPSocket == "" {
		return errors.New("no QMP socket path given")
	}
	// IDs name QEMU objects; the fixed ones are taken and QEMU wants them
	// to start with a letter.
	seen := map[string]string{"console": "object", "qmp": "object", "agent": "object", "rng": "object"}
	for _, d := range append([]vmm.Drive{rootDrive(spec.RootDrive)}, spec.ExtraDrives...) {
		if d.Path == "" {
			return fmt.Errorf("drive %q has no path", d.ID)
		}
		if err := claimID(seen, d.ID, "drive"); err != nil {
			return err
		}
	}
	for _, n := range spec.Network {
		if n.TapName == "" {
			return fmt.Errorf("network interface %q has no tap device", n.ID)
		}
		if n.MAC != "" {
			if _, err := net.ParseMAC(n.MAC); err != nil || strings.Count(n.MAC, ":") != 5 {
				return fmt.Errorf("network interface %q has MAC %q, want six colon-separated hex bytes", n.ID, n.MAC)
			}
		}
		if err := claimID(seen, n.ID, "network interface"); err != nil {
			return err
		}
	}
	return nil
}

func claimID(seen map[string]string, id, kind string) error {
	if !validID(id) {
		return fmt.Errorf("%s id %q must start with a letter and hold only letters, digits, '-', '.' and '_'", kind, id)
	}
	if other, ok := seen[id]; ok {
		return fmt.Errorf("%s id %q is already used by another %s", kind, id, other)
	}
	seen[id] = kind
	return nil
}

// validID is QEMU's rule for object ids (util/id.c: id_wellformed).
func validID(id string) bool {
	if id == "" || !isLetter(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isLetter(c) && !isDigit(c) && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// esc escapes a value for QEMU's option parser, where "," separates keys.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }
