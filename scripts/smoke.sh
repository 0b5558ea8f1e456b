#!/usr/bin/env bash
# Smoke test against a real VMM. The real-boot suite (QEMU microvm under TCG
# here, Firecracker on a KVM host) is not written yet: this says so instead of
# pretending.
set -euo pipefail
echo "make smoke: not yet — the real-boot end-to-end suite lands with the QEMU driver issue (#7)."
echo "Until then: make test runs the fake-Firecracker daemon flows."
