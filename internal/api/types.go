package api

import (
	"time"

	"github.com/banger-dev/banger/internal/buildinfo"
)

// Method names. Part of the wire contract.
const (
	MethodDaemonInfo     = "daemon.info"
	MethodDaemonShutdown = "daemon.shutdown"
	MethodDaemonReload   = "daemon.reload"
	MethodVMCreate       = "vm.create"
	MethodVMList         = "vm.list"
	MethodVMShow         = "vm.show"
	MethodVMStart        = "vm.start"
	MethodVMStop         = "vm.stop"
	MethodVMRestart      = "vm.restart"
	MethodVMDelete       = "vm.delete"
	MethodVMLogs         = "vm.logs"
	MethodVMPortForward  = "vm.port_forward"
	MethodEventsWatch    = "events.watch"
	MethodImageList      = "image.list"
	MethodImageImport    = "image.import"
	MethodImageDelete    = "image.delete"
)

// DaemonInfo describes the running daemon.
type DaemonInfo struct {
	Build     buildinfo.Info `json:"build"`
	PID       int            `json:"pid"`
	Mode      string         `json:"mode"`
	StartedAt time.Time      `json:"started_at"`
	Socket    string         `json:"socket"`
	Database  string         `json:"database"`
	Schema    string         `json:"schema"`
	VMM       string         `json:"vmm"`
	Methods   []string       `json:"methods"`
	// ConfigFile is the configuration file the daemon loaded at start, and
	// ConfigFingerprint its values' config.Fingerprint: the CLI compares
	// them with the file as it is now to spot edits not yet applied.
	ConfigFile        string `json:"config_file,omitempty"`
	ConfigFingerprint string `json:"config_fingerprint,omitempty"`
	// OwnerConfigFile is the owner's layer over ConfigFile (system mode),
	// and ConfigWarning why the daemon left it out, when it did.
	OwnerConfigFile string `json:"owner_config_file,omitempty"`
	ConfigWarning   string `json:"config_warning,omitempty"`
	// Orphans are live VMM processes that belong to no VM; reported, not killed.
	Orphans []OrphanVMM `json:"orphans,omitempty"`
}

// OrphanVMM is a VMM process launched from banger's runtime dir for a VM the
// database does not know.
type OrphanVMM struct {
	PID     int    `json:"pid"`
	VMID    string `json:"vm_id"`
	Cmdline string `json:"cmdline"`
}

// ReloadResponse answers daemon.reload: Restarting says the configuration
// changed and the daemon is restarting (under systemd) to apply it; PID is
// the daemon that answered, so the caller can wait for its successor.
type ReloadResponse struct {
	Restarting  bool   `json:"restarting"`
	PID         int    `json:"pid"`
	Fingerprint string `json:"fingerprint"`
}

// ShutdownResponse acknowledges daemon.shutdown; the daemon exits after replying.
type ShutdownResponse struct {
	PID int `json:"pid"`
}

// VMState is a VM's lifecycle state.
type VMState string

// VM states. A VM is only "running" once its guest agent answered.
const (
	VMCreating VMState = "creating"
	VMStarting VMState = "starting"
	VMRunning  VMState = "running"
	VMStopping VMState = "stopping"
	VMStopped  VMState = "stopped"
	VMFailed   VMState = "failed"
	VMDeleting VMState = "deleting"
)

// VM is the full VM object: what vm.create returns and the CLI and TUI render.
type VM struct {
	ID            string     `json:"id"`
	Name          string     `json:"name"`
	State         VMState    `json:"state"`
	Image         string     `json:"image"`
	VCPUs         int        `json:"vcpus"`
	MemoryMiB     int        `json:"memory_mib"`
	DiskSizeBytes int64      `json:"disk_size_bytes"`
	Autostart     bool       `json:"autostart"`
	IP            string     `json:"ip,omitempty"`
	MAC           string     `json:"mac,omitempty"`
	DNSName       string     `json:"dns_name,omitempty"`
	VMM           string     `json:"vmm,omitempty"`
	PID           int        `json:"pid,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	StoppedAt     *time.Time `json:"stopped_at,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	ExitStatus    string     `json:"exit_status,omitempty"`
	SerialLog     string     `json:"serial_log,omitempty"`
	// Forwards are host→guest TCP forwards, "HOSTADDR:HOSTPORT:GUESTPORT".
	Forwards []string `json:"forwards,omitempty"`
	// Isolated VMs cannot reach other VMs.
	Isolated bool `json:"isolated,omitempty"`
	// Labels are the VM's key=value tags ("creator" names the MCP agent
	// that made it).
	Labels map[string]string `json:"labels,omitempty"`
	// Egress is what the VM may connect to outside the bridge.
	Egress *EgressPolicy `json:"egress,omitempty"`
	// Lifetime is when the daemon deletes or stops the VM; nil for never.
	Lifetime *Lifetime `json:"lifetime,omitempty"`
}

// VMCreateRequest asks for a new VM; zero values take the configured defaults.
type VMCreateRequest struct {
	Name          string `json:"name"`
	Image         string `json:"image,omitempty"`
	VCPUs         int    `json:"vcpus,omitempty"`
	MemoryMiB     int    `json:"memory_mib,omitempty"`
	DiskSizeBytes int64  `json:"disk_size_bytes,omitempty"`
	Autostart     bool   `json:"autostart,omitempty"`
	// NoStart creates the VM stopped.
	NoStart bool `json:"no_start,omitempty"`
	// Publish are port forwards, "[HOSTADDR:]HOSTPORT:GUESTPORT".
	Publish []string `json:"publish,omitempty"`
	// Isolated cuts the VM off from other VMs (host and NAT still work).
	Isolated bool `json:"isolated,omitempty"`
	// Cold boots the VM even when a golden snapshot of its image and shape
	// would let it start warm.
	Cold bool `json:"cold,omitempty"`
	// Labels tag the VM: keys of 1-63 lowercase letters, digits and
	// ". _ / -", values of printable text.
	Labels map[string]string `json:"labels,omitempty"`
	// Egress is "allow", "deny" or "allowlist" (empty: network.egress, or
	// allowlist when Allow is given); Allow its HOST|CIDR[:PORT] entries.
	Egress string   `json:"egress,omitempty"`
	Allow  []string `json:"allow,omitempty"`
	// TTLSeconds and IdleTTLSeconds limit the VM's life (0: no limit);
	// TTLAction is "delete" (default) or "stop".
	TTLSeconds     int64  `json:"ttl_seconds,omitempty"`
	IdleTTLSeconds int64  `json:"idle_ttl_seconds,omitempty"`
	TTLAction      string `json:"ttl_action,omitempty"`
}

// VMPortForwardRequest adds (or removes) a persistent TCP forward from the
// host to a VM.
type VMPortForwardRequest struct {
	Name string `json:"name"`
	// Spec is "[HOSTADDR:]HOSTPORT:GUESTPORT"; HOSTADDR defaults to 127.0.0.1.
	Spec   string `json:"spec"`
	Remove bool   `json:"remove,omitempty"`
}

// VMRef names one VM by name or ID.
type VMRef struct {
	Name string `json:"name"`
}

// VMStopRequest stops a VM; Force kills the VMM without asking the guest.
type VMStopRequest struct {
	Name           string `json:"name"`
	Force          bool   `json:"force,omitempty"`
	TimeoutSeconds int    `json:"timeout_seconds,omitempty"`
}

// VMList is the result of vm.list.
type VMList struct {
	VMs []VM `json:"vms"`
}

// VMLogsRequest asks for the tail of a VM's serial console log.
type VMLogsRequest struct {
	Name string `json:"name"`
	// Lines is how many trailing lines to return; 0 means 200.
	Lines int `json:"lines,omitempty"`
}

// VMLogs is the result of vm.logs.
type VMLogs struct {
	Path string `json:"path"`
	Text string `json:"text"`
}

// Image is a bootable image.
type Image struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Kernel    string    `json:"kernel"`
	Initrd    string    `json:"initrd,omitempty"`
	Rootfs    string    `json:"rootfs"`
	SizeBytes int64     `json:"size_bytes"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	// Origin is set for images made from container images.
	Origin *ImageOrigin `json:"origin,omitempty"`
}

// ImageList is the result of image.list.
type ImageList struct {
	Images []Image `json:"images"`
}

// ImageImportRequest registers an existing kernel, optional initrd and ext4
// root filesystem as an image. Paths are read by the daemon, so they must be
// absolute and readable by the owner.
type ImageImportRequest struct {
	Name   string `json:"name"`
	Kernel string `json:"kernel"`
	Rootfs string `json:"rootfs"`
	Initrd string `json:"initrd,omitempty"`
	// Modules is the kernel's lib/modules/<release> (with depmod output),
	// for building an initrd when the kernel needs one and Initrd is empty.
	Modules string `json:"modules,omitempty"`
}

// ImageRef names one image.
type ImageRef struct {
	Name string `json:"name"`
}
