#!/bin/sh
# banger busybox guest: /sbin/init (PID 1).
#
# Mounts the kernel file systems, brings up loopback, makes the
# /dev/virtio-ports link udev would make, and runs banger-vsock-agent as the
# one service. The agent configures the address, route, resolver and
# hostname from the banger.* kernel command line parameters. The guest powers
# off when the agent ends, when the ACPI power button is pressed (QEMU's
# system_powerdown; needs the button and evdev modules, which banger's
# initrd loads), or on SIGUSR2/SIGTERM (busybox poweroff/reboot).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022

say() { echo "banger-init: $*"; }

# (Debian's busybox-static has no mountpoint applet.)
mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }

[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc
mounted /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
# The initrd moves its devtmpfs here; a kernel booted without one may not.
mounted /dev || mount -t devtmpfs -o nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mounted /dev/shm || mount -t tmpfs -o nosuid,nodev shm /dev/shm
mounted /run || mount -t tmpfs -o nosuid,nodev,mode=755 run /run
mounted /tmp || mount -t tmpfs -o nosuid,nodev,mode=1777 tmp /tmp
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount -o remount,rw / 2>/dev/null

[ -r /etc/hostname ] && hostname -F /etc/hostname
ip link set lo up

# Without udev nobody names the virtio-serial ports: link the agent's port
# (its name is in sysfs) where the agent looks for it.
agent_port() {
	for d in /sys/class/virtio-ports/*; do
		[ -r "$d/name" ] || continue
		if [ "$(cat "$d/name")" = banger ]; then
			mkdir -p /dev/virtio-ports
			ln -sf "../${d##*/}" /dev/virtio-ports/banger
			return 0
		fi
	done
	return 1
}
if grep -qw banger.agent_channel=serial /proc/cmdline; then
	i=0
	until agent_port; do
		i=$((i + 1))
		[ $i -lt 100 ] || { say "no virtio-serial port named banger"; break; }
		usleep 100000
	done
fi

agent=
shutdown() {
	trap '' USR1 USR2 TERM INT
	say "shutting down"
	[ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null
	kill -TERM -1 2>/dev/null
	usleep 500000
	kill -KILL -1 2>/dev/null
	sync
	umount -a -r 2>/dev/null
	mount -o remount,ro / 2>/dev/null
	sync
	if [ "$1" = reboot ]; then
		reboot -f
	fi
	poweroff -f
}
trap 'shutdown poweroff' USR2 TERM
trap 'shutdown reboot' INT

# Any power button event (QEMU system_powerdown) powers off: signal PID 1.
for ev in /dev/input/event*; do
	[ -e "$ev" ] || continue
	(head -c 1 "$ev" >/dev/null 2>&1 && say "power button pressed" && kill -USR2 1) &
done

say "starting banger-vsock-agent after $(cut -d' ' -f1 /proc/uptime)s"
/usr/local/bin/banger-vsock-agent &
agent=$!
# wait returns early when a trapped signal arrives; the trap powers off.
wait "$agent"
say "banger-vsock-agent exited ($?)"
agent=
shutdown poweroff
