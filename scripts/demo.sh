#!/usr/bin/env bash
# The README's first command. On a fresh Debian machine (as root) it installs
# what banger needs, builds it, and walks through a VM's life. Until the real
# boot path lands, the VMM is the fake Firecracker hosting the real agent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "==> installing build and runtime packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends make git e2fsprogs ca-certificates >/dev/null
fi
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

echo "==> building"
make -s build-test

demo=$(mktemp -d /tmp/banger-demo.XXXXXX)
export XDG_CONFIG_HOME=$demo/config XDG_STATE_HOME=$demo/state XDG_RUNTIME_DIR=$demo/run
export BANGER_FAKE_GUEST=$PWD/bin/banger-vsock-agent
export BANGER_FC_SPEC=${BANGER_FC_SPEC:-$PWD/../shared/firecracker/firecracker-api.yaml}
b=$PWD/bin/banger
cleanup() { "$b" vm delete --force dev >/dev/null 2>&1 || true; "$b" daemon stop >/dev/null 2>&1 || true; rm -rf "$demo"; }
trap cleanup EXIT

mkdir -p "$XDG_CONFIG_HOME/banger"
printf 'vmm = "firecracker"\n[firecracker]\nbinary = "%s"\n' "$PWD/bin/fake-firecracker" >"$XDG_CONFIG_HOME/banger/config.toml"
mkfs.ext4 -q -F "$demo/rootfs.ext4" 64M

run() { echo; echo "\$ banger $*"; "$b" "$@"; }
run --version
run image import default --kernel "$PWD/bin/banger-vsock-agent" --rootfs "$demo/rootfs.ext4"
run vm create --name dev --disk 256M
run vm list
run vm stop dev
run vm start dev
run daemon status
run doctor || true
run vm delete --force dev
echo
echo "demo finished: the VM ran on the fake Firecracker (real boots arrive with the QEMU driver)."
