#!/usr/bin/env bash
# make smoke: the real-boot end-to-end suite (test/e2e, TestRealBoot) against
# a real VMM: Firecracker when its binary is installed and KVM is usable,
# QEMU otherwise (KVM when usable, else TCG software emulation). Then the
# create-to-agent-ready benchmark, whose numbers go in docs/performance.md.
#
# Needs root (the suite builds its network namespaces, bridge, taps and NAT
# inside them; the host's own namespace is never touched), apt access for
# Debian's kernel, busybox-static, and for the Debian/ssh flow debootstrap and
# openssh-client. BANGER_E2E_VMM=qemu|firecracker forces a VMM;
# BANGER_E2E_DEBIAN=0 skips the Debian image flow (about two minutes);
# SMOKE_BENCH=0 skips the benchmark.
#
# Then the system tier (test/system, TestSystemMode): `banger system install`
# in a systemd container (systemd-nspawn, package systemd-container), VMs as
# the unprivileged owner through bangerd.service and the root helper, a
# daemon restart that keeps VMs, uninstall. Always QEMU (KVM when usable,
# else TCG); the container tree is debootstrapped once and cached in
# ~/.cache/banger-test/system. SMOKE_SYSTEM=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" != 0 ]; then
	echo "make smoke needs root: the suite creates network namespaces with a bridge, taps and NAT (sudo make smoke)" >&2
	exit 1
fi

# Usable KVM: the device answers, and it is not the PVM flavour (kvm_pvm),
# which cannot run ordinary guest kernels (see docs/qemu.md).
kvm_usable() { [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; }

vmm=${BANGER_E2E_VMM:-}
if [ -z "$vmm" ]; then
	if command -v firecracker >/dev/null && kvm_usable; then
		vmm=firecracker
	else
		vmm=qemu
	fi
fi
why="firecracker binary $(command -v firecracker >/dev/null && echo present || echo absent), KVM $(kvm_usable && echo usable || echo unusable)"
echo "make smoke: real-boot suite on $vmm ($why)"
export BANGER_E2E_VMM=$vmm

log=$(mktemp /tmp/banger-smoke.XXXXXX)
trap 'rm -f "$log"' EXIT
set +e
go test -count=1 -v -timeout 30m -run '^TestRealBoot$' ./test/e2e 2>&1 | tee "$log" | grep -E '^(=== RUN|\s*--- |\s+realboot|PASS|FAIL|ok )'
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
	echo "make smoke: FAILED; full output in $log" >&2
	trap - EXIT
	exit "$status"
fi
# A suite that skipped proves nothing: say why and fail.
if grep -q -- '--- SKIP: TestRealBoot ' "$log"; then
	echo "make smoke: the suite skipped on this host:" >&2
	grep -A2 -- '--- SKIP: TestRealBoot ' "$log" >&2
	exit 1
fi

if [ "${SMOKE_BENCH:-1}" != 0 ]; then
	echo
	echo "make smoke: create → agent-ready benchmark on $vmm (docs/performance.md)"
	go test -count=1 -run '^$' -bench '^BenchmarkCreateToAgentReady$' -benchtime 5x ./test/e2e 2>&1 | grep -E '^(Benchmark|ok|FAIL|PASS)'
fi

if [ "${SMOKE_SYSTEM:-1}" != 0 ]; then
	echo
	echo "make smoke: system tier: system mode under systemd (systemd-nspawn), VMM qemu ($(kvm_usable && echo KVM || echo TCG))"
	syslog=$(mktemp /tmp/banger-smoke-system.XXXXXX)
	set +e
	go test -count=1 -v -timeout 30m -run '^TestSystemMode$' ./test/system 2>&1 | tee "$syslog" | grep -E '^(=== RUN|\s*--- |\s+system_test|\s+container_test|PASS|FAIL|ok )'
	status=${PIPESTATUS[0]}
	set -e
	if [ "$status" != 0 ]; then
		echo "make smoke: system tier FAILED; full output in $syslog" >&2
		exit "$status"
	fi
	if grep -q -- '--- SKIP: TestSystemMode ' "$syslog"; then
		echo "make smoke: the system tier skipped on this host (SMOKE_SYSTEM=0 to leave it out):" >&2
		grep -A2 -- '--- SKIP: TestSystemMode ' "$syslog" >&2
		rm -f "$syslog"
		exit 1
	fi
	rm -f "$syslog"
fi
echo "make smoke: passed on $vmm"
