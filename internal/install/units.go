package install

import (
	"bytes"
	"fmt"
	"text/template"
)

// Unit names.
const (
	DaemonUnit = "bangerd.service"
	HelperUnit = "banger-root-helper.service"
)

// unitParams is what the unit and drop-in templates fill in.
type unitParams struct {
	Owner   Owner
	Bangerd string
	Runtime string
	// Jails is the jailer's chroot base (paths.Layout.JailDir).
	Jails string
	// RestartStatus is the exit status bangerd restarts with
	// (sdnotify.RestartExitStatus).
	RestartStatus int
}

// The daemon unit. Every line that weakens the sandbox says why; the test
// holds `systemd-analyze security` exposure at or below 2.5.
const daemonUnitTemplate = `# Written by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# The banger daemon for {{.Owner.User}}: VM and image lifecycle, state, VMM
# processes. It runs as the owner with no capabilities; privileged steps go
# through banger-root-helper.service.
[Unit]
Description=banger daemon (microVMs for {{.Owner.User}})
Documentation=https://github.com/banger-dev/banger/blob/main/docs/privileges.md
Wants=banger-root-helper.service
After=network.target banger-root-helper.service

[Service]
# bangerd says READY=1 once its API answers, so "active" means usable.
Type=notify
User={{.Owner.User}}
Group={{.Owner.Group}}
ExecStart={{.Bangerd}} --system
Restart=on-failure
RestartSec=2s
# Exit status {{.RestartStatus}}: the owner changed their config (` + "`banger config set`" + `,
# daemon.reload) and bangerd exited for systemd to start it again with it.
SuccessExitStatus={{.RestartStatus}}
RestartForceExitStatus={{.RestartStatus}}
# VMs outlive the daemon: a restart (banger update, a crash) must not take
# running VMs down, and the next daemon adopts them. So only the daemon's own
# process is signalled; "banger system uninstall" stops VMs explicitly.
KillMode=process
TimeoutStopSec=60s
UMask=0077

NoNewPrivileges=yes
# The one capability: the VM resolver answers on the bridge address, port 53.
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
ProtectSystem=strict
StateDirectory=banger
StateDirectoryMode=0700
CacheDirectory=banger
CacheDirectoryMode=0700
# /run/banger is shared with the root helper (created by tmpfiles.d).
ReadWritePaths={{.Runtime}}
# file sync and SSH material are read from the owner's home; nothing else
# of /home is visible and nothing in it is writable.
ProtectHome=tmpfs
BindReadOnlyPaths=-{{.Owner.Home}}
PrivateTmp=yes
PrivateMounts=yes
PrivateIPC=yes
# The VMM needs KVM, taps, and dm-snapshot disks the helper hands over.
DevicePolicy=closed
DeviceAllow=/dev/kvm rw
DeviceAllow=/dev/net/tun rw
DeviceAllow=/dev/vhost-vsock rw
DeviceAllow=block-device-mapper rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Not ProcSubset=pid: the daemon reads /proc/cpuinfo (guest TSC frequency).
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# Not MemoryDenyWriteExecute: QEMU's TCG fallback generates code at run time.
RemoveIPC=yes
KeyringMode=private
# Unix: API, helper, hybrid vsock. Inet: downloads, guest DNS. Netlink:
# reading interfaces. Vsock: QEMU's vhost-vsock agent channel.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_VSOCK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @mount @obsolete @debug @cpu-emulation @clock @module @raw-io @reboot @swap
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`

// The helper unit; exposure held at or below 3.5 by the test.
const helperUnitTemplate = `# Written by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# The banger root helper: the fixed menu of privileged operations (bridge,
# taps, NAT, resolver, loop and device-mapper, socket ownership, launching
# Firecracker's jailer when firecracker.jailer is set) for uid
# {{.Owner.UID}} ({{.Owner.User}}) only, on {{.Runtime}}/root-helper.sock.
[Unit]
Description=banger root helper (privileged operations for {{.Owner.User}})
Documentation=https://github.com/banger-dev/banger/blob/main/docs/privileges.md
Before=bangerd.service

[Service]
# The helper says READY=1 once its socket listens.
Type=notify
ExecStart={{.Bangerd}} --root-helper
Restart=on-failure
RestartSec=2s
UMask=0077
# Jailed Firecrackers are the helper's children, in its cgroup: a restart of
# the helper must not take the VMs with it (bangerd.service does the same).
KillMode=process

NoNewPrivileges=yes
# NET_ADMIN: bridge, taps, nftables. SYS_ADMIN: loop and device-mapper
# ioctls; the jailer's mount namespace and pivot_root. CHOWN, FOWNER: hand
# sockets, taps, devices and jails to the owner. DAC_READ_SEARCH: resolve
# targets beneath the owner's 0700 run directories (read and search only;
# the helper never returns file contents). The jailer, and nothing else,
# also needs: MKNOD (/dev/kvm, /dev/net/tun and disk nodes in the jail),
# SYS_CHROOT (its chroot), SETUID and SETGID (dropping to the owner), and
# the helper KILL (stopping a jailed VMM that already runs as the owner).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_CHOWN CAP_FOWNER CAP_DAC_READ_SEARCH CAP_MKNOD CAP_SYS_CHROOT CAP_SETUID CAP_SETGID CAP_KILL
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths={{.Runtime}}
# Jails: root's, beside the state dir (see paths.Layout.JailDir).
ReadWritePaths={{.Jails}}
# ip_forward and per-interface sysctls.
ReadWritePaths=/proc/sys/net
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
PrivateIPC=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
DeviceAllow=/dev/loop-control rw
DeviceAllow=block-loop rw
DeviceAllow=/dev/mapper/control rw
DeviceAllow=block-device-mapper rw
# A jailed Firecracker runs in this unit's cgroup and opens KVM.
DeviceAllow=/dev/kvm rw
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# The jailer unshares a mount namespace for each jail; nothing else.
RestrictNamespaces=mnt
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
KeyringMode=private
# Unix: its socket and D-Bus (systemd-resolved). Netlink: rtnetlink,
# nftables. No IP at all.
RestrictAddressFamilies=AF_UNIX AF_NETLINK
IPAddressDeny=any
SystemCallArchitectures=native
# @mount: the jailer's bind mount, pivot_root and chroot. @resources stays
# allowed: the jailer bounds the VMM's open files with setrlimit.
SystemCallFilter=@system-service @mount
SystemCallFilter=~@obsolete @debug @cpu-emulation @clock @module @raw-io @reboot @swap
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`

const sysctlTemplate = `# Written by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# VMs reach the network through NAT from banger's bridge.
net.ipv4.ip_forward = 1
`

const modulesTemplate = `# Written by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# Taps for VM networking, loop devices and dm-snapshot for VM disks.
tun
loop
dm_snapshot
`

// The runtime dir is root's and sticky, so the owner's group can create
// sockets there but nobody but root can replace the helper's socket.
const tmpfilesTemplate = `# Written by ` + "`banger system install`" + `; ` + "`banger system uninstall`" + ` removes it.
# banger's runtime dir: root-owned and sticky so only root can replace the
# helper's socket; the owner's group creates the daemon's sockets.
d {{.Runtime}} 1770 root {{.Owner.Group}} -
`

func render(name, text string, p unitParams) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}
