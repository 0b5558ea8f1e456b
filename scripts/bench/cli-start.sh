#!/usr/bin/env bash
# CLI start-up benchmark: wall time of `banger --version` and of `banger vm
# list` against a daemon holding N VMs (created with --no-start, so no VMM
# runs), each command run RUNS times; prints p50/p90/min in ms and the
# package-init total from GODEBUG=inittrace=1. Needs mkfs.ext4; builds the
# binaries like `make build` into a temporary directory and runs a private
# daemon under temporary XDG directories (VM networking off), removed after.
#
#   bash scripts/bench/cli-start.sh            # N=100 RUNS=50
#   N=20 RUNS=20 bash scripts/bench/cli-start.sh
#   BIN=bin bash scripts/bench/cli-start.sh   # use already built binaries
set -euo pipefail

N=${N:-100}
RUNS=${RUNS:-50}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/bgcli.XXXXXX)
bin=${BIN:+$(cd "$BIN" && pwd)}
bin=${bin:-$tmp/bin}
banger=$bin/banger
cleanup() {
	"$banger" daemon stop >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# Build first, with the caller's HOME (Go's module and build caches).
if [ -z "${BIN:-}" ]; then
	echo "building (make build flags) ..." >&2
	make -s -C "$root" build BIN="$bin" >/dev/null
fi

export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/config XDG_STATE_HOME=$tmp/state XDG_RUNTIME_DIR=$tmp/run
export BANGER_SYSTEM_ROOT=$tmp/root BANGER_DAEMON=$bin/bangerd
mkdir -p "$HOME" "$XDG_CONFIG_HOME/banger" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
printf '[network]\nenabled = "off"\n' >"$XDG_CONFIG_HOME/banger/config.toml"

# ms_stats CMD...: runs CMD $RUNS times, prints "p50 p90 min" in ms.
ms_stats() {
	local i t0 t1
	for ((i = 0; i < RUNS; i++)); do
		t0=$EPOCHREALTIME
		"$@" >/dev/null
		t1=$EPOCHREALTIME
		echo "$t0 $t1"
	done | awk '{ print ($2 - $1) * 1000 }' | sort -n |
		awk '{ v[NR] = $1 } END { printf "p50 %.1f  p90 %.1f  min %.1f ms\n", v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1], v[1] }'
}

# init_ms CMD...: the sum of package init clock times of one run.
init_ms() {
	GODEBUG=inittrace=1 "$@" 2>&1 >/dev/null | awk '/^init / { s += $5 } END { printf "%.2f ms\n", s }'
}

mkfs.ext4 -q -F "$tmp/rootfs.ext4" 64M 2>/dev/null
"$banger" image import default --kernel "$bin/banger-vsock-agent" --rootfs "$tmp/rootfs.ext4" >/dev/null 2>&1
echo "creating $N VMs (--no-start) ..." >&2
for ((i = 0; i < N; i++)); do
	"$banger" vm create --name "vm$i" --no-start >/dev/null 2>&1
done
[ "$("$banger" vm list | tail -n +2 | wc -l)" -eq "$N" ] || { echo "vm list does not show $N VMs" >&2; exit 1; }

echo "banger --version:      $(ms_stats "$banger" --version)   init $(init_ms "$banger" --version)"
echo "banger vm list ($N VMs): $(ms_stats "$banger" vm list)   init $(init_ms "$banger" vm list)"
echo "banger vm list --json: $(ms_stats "$banger" vm list --json)"
