#!/usr/bin/env bash
# Build banger's microVM guest kernel (banger kernel build --config microvm)
# into the tests' cache, ~/.cache/banger-test/built-kernels ($BANGER_TEST_CACHE
# when set), where internal/vmm/qemu's TestMicroVMKernelBootsBusyboxUnderTCG
# and BenchmarkColdBootTCG look for it. The cache is keyed by the
# linux-source package version and the configuration's hash, so this takes
# minutes once per change of either (docs/kernel.md) and a second otherwise.
# .ci/run runs it before `make test`, whose 30-minute test timeout leaves no
# room for a first build.
#
# Needs: apt-get install linux-source build-essential bc flex bison libelf-dev libssl-dev
# No root needed. BANGER_KERNEL_BUILD=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

if [ "${BANGER_KERNEL_BUILD:-1}" = 0 ]; then
	echo "kernel-build: BANGER_KERNEL_BUILD=0, skipped"
	exit 0
fi
if ! ls /usr/src/linux-source-*.tar.* >/dev/null 2>&1; then
	echo "kernel-build: no /usr/src/linux-source-*.tar.* (apt-get install linux-source); skipped" >&2
	exit 0
fi
cache="${BANGER_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-test}"
start=$(date +%s)
go run ./cmd/banger kernel build --system=false --config microvm --cache-dir "$cache" "$@"
echo "kernel-build: $(($(date +%s) - start)) s"
