#!/usr/bin/env bash
# The README's first command: `sudo make demo`. On a fresh Debian machine, as
# root, it
#   1. installs the Debian packages banger uses (apt-get),
#   2. builds banger (Go >= 1.21 on PATH; the toolchain go.mod names is then
#      fetched through the Go module proxy),
#   3. installs it at the canonical paths: /usr/local/bin/banger,
#      /usr/local/bin/bangerd, /usr/local/lib/banger/banger-vsock-agent,
#   4. builds the default image unless it exists (busybox: a few seconds),
#   5. creates the VM "demo" (or starts it), runs a command in it with
#      `banger vm exec` and prints the output, and leaves it running.
#
# Mode: user mode, as root. The CLI starts bangerd on demand; as root it does
# VM networking in-process. `banger system install` is the mode for daily use
# by a normal user, but it needs systemd as PID 1 and a non-root owner, which
# a fresh server, container or CI machine may not have; the demo then tells
# you the command.
#
# As root, the daemon creates banger's bridge (banger0), NAT and DNS resolver
# in THIS machine's network namespace: that is what a demo on your machine is
# for, and why no test ever runs this script.
#
#   DEMO_IMAGE=debian  build the full Debian image instead (about a minute:
#                      systemd and sshd, so `banger vm ssh demo` works)
#   DEMO_VM=NAME       the VM's name (default demo)
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${DEMO_IMAGE:-busybox}
vm=${DEMO_VM:-demo}
case "$kind" in
busybox) image=default ;;
debian) image=debian ;;
*)
	echo "demo: DEMO_IMAGE must be busybox or debian, not \"$kind\"" >&2
	exit 2
	;;
esac

say() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "run it as root (sudo make demo): it installs packages, and banger's VM networking needs root in user mode"
command -v apt-get >/dev/null || die "this demo needs a Debian-family system (apt-get)"

say "installing Debian packages"
export DEBIAN_FRONTEND=noninteractive
pkgs=(make git ca-certificates e2fsprogs busybox-static kmod cpio iproute2 nftables openssh-client qemu-system-x86)
[ "$kind" = debian ] && pkgs+=(debootstrap)
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "${pkgs[*]}"

command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null ||
	die "Go is not installed: install Go 1.21 or newer from https://go.dev/dl/ (Debian 12's golang-go is 1.19, too old) and run this again"
minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
[ "${minor:-0}" -ge 21 ] || die "$(go env GOVERSION) is too old: install Go 1.21 or newer from https://go.dev/dl/"

say "building banger"
make -s build

say "installing to /usr/local"
install -D -m 0755 bin/banger /usr/local/bin/banger
install -D -m 0755 bin/bangerd /usr/local/bin/bangerd
install -D -m 0755 bin/banger-vsock-agent /usr/local/lib/banger/banger-vsock-agent
echo "/usr/local/bin/banger /usr/local/bin/bangerd /usr/local/lib/banger/banger-vsock-agent"
b=/usr/local/bin/banger
run() {
	printf '\n$ banger %s\n' "$*"
	"$b" "$@"
}

run --version

if ! "$b" image show "$image" >/dev/null 2>&1; then
	run image build "$image" --from "$kind"
fi
state=$("$b" vm show "$vm" --json 2>/dev/null | sed -n 's/^ *"state": *"\([a-z]*\)".*/\1/p' || true)
case "$state" in
"") run vm create --name "$vm" --image "$image" ;;
running) echo "vm $vm is already running" ;;
*) run vm start "$vm" ;;
esac

run vm exec "$vm" -- uname -a
run vm exec "$vm" -- ip -4 addr show dev eth0
if [ "$kind" = debian ]; then
	# sshd starts after the agent answers: wait for the boot to finish.
	"$b" vm exec "$vm" -- systemctl is-system-running --wait >/dev/null || true
	run vm ssh "$vm" -- uname -a
fi
run vm list
# doctor says which VMM runs the VMs and why (QEMU under TCG when there is no
# Firecracker or no usable KVM); its warnings are not fatal here.
run doctor || true

cat <<EOF

The VM "$vm" is running. Try:
  banger vm exec $vm -- uname -a       run a command
  banger vm exec -t $vm                 a shell in it
  banger vm cp ./file $vm:/root/        copy files in (and $vm:PATH . out)
EOF
if [ "$kind" = debian ]; then
	echo "  banger vm ssh $vm                     ssh in (the Debian image runs sshd)"
else
	echo "  DEMO_IMAGE=debian make demo           a Debian VM (systemd, sshd) for banger vm ssh"
fi
cat <<EOF
  banger vm stop $vm; banger vm delete $vm
For daily use as yourself rather than root: sudo banger system install --owner YOUR_USER
EOF
