#!/bin/busybox sh
# banger initrd /init: load the guest drivers the kernel has as modules,
# mount the root device named by root= on the kernel command line and hand
# over to the real init with switch_root.
#
# Kernel command line parameters read here:
#   root=DEV|UUID=..|LABEL=..  root device (default /dev/vda)
#   rootfstype=TYPE            default ext4
#   rootflags=OPTS             extra mount options
#   ro | rw                    mount mode (default rw: a VM's disk is its own)
#   init=PATH                  default /sbin/init
#   rootwait=SECONDS           how long to wait for the device (banger: 60)
#   banger.initrd_shell        drop to a shell instead of failing
#   MODULE.PARAM=VALUE         passed to insmod, as modprobe would

/bin/busybox mkdir -p /proc /sys /dev /run /tmp /newroot
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

say() { echo "banger-initrd: $*"; }

fail() {
	say "$*"
	if grep -qw banger.initrd_shell /proc/cmdline; then
		say "starting a shell (banger.initrd_shell)"
		exec sh
	fi
	# Exiting makes the kernel panic; with panic=N on the command line the
	# VM stops and the host sees a failed boot instead of a hung one.
	exit 1
}

cmdline=$(cat /proc/cmdline)

# Parameters for one module from the command line ("mod.param=value", with
# dashes and underscores in the module name treated alike).
module_params() {
	for arg in $cmdline; do
		case "$arg" in
		*.*=*)
			mod=${arg%%.*}
			if [ "$(echo "$mod" | tr - _)" = "$1" ]; then
				printf '%s ' "${arg#*.}"
			fi
			;;
		esac
	done
}

while read -r name file; do
	[ -n "$name" ] || continue
	# shellcheck disable=SC2046 # word splitting of the params is intended
	if ! out=$(insmod "$file" $(module_params "$name") 2>&1); then
		case "$out" in
		*"File exists"*) ;; # already loaded
		*) say "loading $name failed: $out" ;;
		esac
	fi
done </etc/banger/modules

root=/dev/vda
fstype=ext4
flags=
mode=rw
init=/sbin/init
wait=60
for arg in $cmdline; do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	rootflags=*) flags=${arg#rootflags=} ;;
	rootwait=*) wait=${arg#rootwait=} ;;
	init=*) init=${arg#init=} ;;
	ro) mode=ro ;;
	rw) mode=rw ;;
	esac
done

# Drivers probe asynchronously: wait for the device node to appear.
tries=$((wait * 10))
while :; do
	case "$root" in
	UUID=* | LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
	*) dev=$root ;;
	esac
	[ -n "$dev" ] && [ -b "$dev" ] && break
	tries=$((tries - 1))
	[ "$tries" -gt 0 ] || fail "root device $root did not appear within ${wait}s"
	usleep 100000
done

opts=$mode
[ -n "$flags" ] && opts="$opts,$flags"
mount -t "$fstype" -o "$opts" "$dev" /newroot || fail "cannot mount $dev ($fstype, $opts) on /newroot"

if [ ! -x "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
	fail "$init does not exist on the root file system $dev"
fi

mount --move /dev /newroot/dev 2>/dev/null || umount /dev 2>/dev/null
umount /sys /proc
exec switch_root /newroot "$init" "$@"
