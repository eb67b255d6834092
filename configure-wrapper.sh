#!/usr/bin/env bash
# Configure ./qemu/build with the smallest configuration that builds and
# tests everything this series touches: x86_64-softmmu (TCG and KVM),
# vhost-user including the vhost-user netdev (QEMU's existing vhost-user
# qtests are virtio-net based), virtiofsd with the crash points its tests
# need (--enable-virtiofsd-crash-points), seccomp, libcap-ng, tools and
# qtests.  Docs off; ROM blobs come from Debian's seabios, qemu-system-data
# and ipxe-qemu at run time.  ccache comes from the Makefile, which puts
# its masquerade directory (/usr/lib/ccache) first on PATH.
# Debian's meson is used (the source package has no meson submodule); it
# runs on Debian's python3, which configure then picks up from PATH first.
#
# Usage: configure-wrapper.sh [SRCDIR [BUILDDIR]]
set -euo pipefail
top=$(cd "$(dirname "$0")" && pwd)
src=${1:-$top/qemu}
build=${2:-$src/build}

[ -x "$src/configure" ] || { echo "configure-wrapper: $src/configure missing; run 'make qemu' first" >&2; exit 1; }

qver=$(cat "$src/VERSION")
case "$qver" in
7.2.*)
    opts=(
        --target-list=x86_64-softmmu
        --without-default-features
        --enable-kvm --enable-tcg
        --enable-vhost-user --enable-vhost-net --enable-vhost-kernel
        --enable-virtiofsd --enable-seccomp --enable-cap-ng
        --enable-tools
        --enable-fdt=system
        --disable-docs --disable-install-blobs
        --with-git-submodules=ignore
        --meson=/usr/bin/meson
    )
    # The series' tree has the option; the unpatched base (make bench)
    # does not
    if grep -q "^option('virtiofsd_crash_points'" "$src/meson_options.txt"; then
        opts+=(--enable-virtiofsd-crash-points)
    fi
    ;;
*)
    # The upstream tree (qemu-submodule/pin-upstream): only what its
    # vhost-user qtests need.  It wants meson >= 1.5, newer than Debian
    # 12's: configure installs the wheel from python/wheels into its own
    # venv (the +ds tarball ships none, so it comes from PyPI, cached).
    opts=(
        --target-list=x86_64-softmmu
        --without-default-features
        --enable-kvm --enable-tcg
        --enable-vhost-user --enable-vhost-net --enable-vhost-kernel
        --enable-fdt=system
        --disable-docs --disable-install-blobs --disable-rust
        --disable-download
    )
    meson_whl=meson-1.9.0-py3-none-any.whl
    wheels="$top/.cache/wheels"
    if [ ! -f "$src/python/wheels/$meson_whl" ]; then
        if [ ! -f "$wheels/$meson_whl" ]; then
            echo "[configure] downloading $meson_whl from PyPI"
            python3 -m pip download -q --no-deps --only-binary=:all: \
                -d "$wheels" meson==1.9.0 >/dev/null 2>&1 ||
                { echo "configure-wrapper: 'pip download meson==1.9.0' failed: is PyPI reachable? (package python3-pip: make deps)" >&2; exit 1; }
        fi
        mkdir -p "$src/python/wheels"
        cp "$wheels/$meson_whl" "$src/python/wheels/"
    fi
    ;;
esac

# Reconfigure only when the options changed: meson regenerates by itself
# when meson.build files change.
stamp="$build/.configure-wrapper-opts"
want=$(printf '%s\n' "${opts[@]}")
if [ -f "$build/build.ninja" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
mkdir -p "$build"
echo "[configure] $src -> $build"
(cd "$build" && PATH=/usr/bin:$PATH "$src/configure" "${opts[@]}") > "$build/configure.log" 2>&1 || {
    tail -n 20 "$build/configure.log" >&2
    echo "configure-wrapper: configure failed (log: $build/configure.log); a missing -dev package? run 'make deps'" >&2
    exit 1
}
printf '%s\n' "$want" > "$stamp"

# qtests look for firmware in the build tree's bundle directory.
fw="$build/qemu-bundle/usr/local/share/qemu"
mkdir -p "$fw"
for f in /usr/share/seabios/*.bin /usr/share/qemu/*.bin /usr/lib/ipxe/qemu/*.rom; do
    [ -e "$f" ] && ln -sf "$f" "$fw/"
done
echo "[configure] done"
