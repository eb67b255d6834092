#!/usr/bin/env bash
# Build the test guest from Debian packages: the kernel that
# linux-image-amd64 depends on today, busybox-static as init, the modules
# virtio-fs needs (in dependency order) and our static workload program.
#
# Usage: tests/guest/build-image.sh OUTDIR
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/image.info.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:?usage: build-image.sh OUTDIR}
debs="$top/.cache/debs"
die() { printf 'guest image: %s\n' "$*" >&2; exit 1; }
say() { printf '[guest] %s\n' "$*"; }

# The modules the guest needs; their dependencies are added in order.
want_modules="virtio_pci virtiofs"

mkdir -p "$out" "$debs"
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
       sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (run 'apt-get update'?)"
for p in "$kpkg" busybox-static; do
    if ! ls "$debs/${p}_"*.deb >/dev/null 2>&1; then
        say "downloading $p"
        (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$p") ||
            die "apt-get download $p failed: is Debian's archive reachable?"
    fi
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dpkg-deb -x "$(ls "$debs/${kpkg}_"*.deb | tail -n 1)" "$stage/kernel"
dpkg-deb -x "$(ls "$debs/busybox-static_"*.deb | tail -n 1)" "$stage/busybox"
kver=$(ls "$stage/kernel/lib/modules")
moddir="$stage/kernel/lib/modules/$kver"

# Resolve module dependencies depth first, so each module follows its deps.
declare -A seen=()
order=()
modpath() {
    local f
    f=$(find "$moddir/kernel" -name "$1.ko" -o -name "$1.ko.xz" | head -n 1)
    [ -n "$f" ] || f=$(find "$moddir/kernel" -name "${1//_/-}.ko" | head -n 1)
    [ -n "$f" ] || die "module $1 not found in $kpkg"
    printf '%s' "$f"
}
visit() {
    local m=$1 f d
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    f=$(modpath "$m")
    for d in $(/sbin/modinfo -F depends "$f" | tr ',' ' '); do
        visit "$d"
    done
    order+=("$m")
}
for m in $want_modules; do
    visit "$m"
done

root="$stage/root"
mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
cp "$stage/busybox/bin/busybox" "$root/bin/busybox"
for m in "${order[@]}"; do
    f=$(modpath "$m")
    case "$f" in
    *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done
printf '%s\n' "${order[@]}" > "$root/lib/modules/order"
install -m 0755 "$here/init.sh" "$root/init"
make -s -C "$here" workload
install -m 0755 "$here/workload" "$root/bin/workload"

cp "$stage/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
(cd "$root" && find . | sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out/initrd.img.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
printf 'kernel=%s\nkver=%s\nmodules=%s\n' "$kpkg" "$kver" "${order[*]}" > "$out/image.info"
say "kernel $kver, modules: ${order[*]}"
say "wrote $out/vmlinuz and $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
