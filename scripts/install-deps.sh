#!/usr/bin/env bash
# Install the Debian packages the build and the tests need.  Idempotent:
# does nothing when they are all installed already.
set -euo pipefail
pkgs=(
    # build
    build-essential pkg-config meson ninja-build python3 python3-venv
    python3-pip
    libglib2.0-dev libpixman-1-dev libseccomp-dev libcap-ng-dev libfdt-dev
    zlib1g-dev flex bison ccache dpkg-dev git
    # runtime firmware for the guest and for qtests
    seabios qemu-system-data ipxe-qemu
    # guest image
    cpio xz-utils kmod
    # checkpatch
    perl
    # fuzz targets (libFuzzer)
    clang-14 libclang-rt-14-dev
    # make bench: plots, and syscalls per operation
    gnuplot-nox strace
)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "make deps: missing Debian packages (${missing[*]}) and not root; install them with apt-get as root" >&2
    exit 1
fi
echo "[deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || { echo "make deps: apt-get update failed: is Debian's archive reachable?" >&2; exit 1; }
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /tmp/qemu-reconnect-deps.log 2>&1 || {
    tail -n 5 /tmp/qemu-reconnect-deps.log >&2
    echo "make deps: apt-get install failed (log: /tmp/qemu-reconnect-deps.log)" >&2
    exit 1
}
echo "[deps] done"
