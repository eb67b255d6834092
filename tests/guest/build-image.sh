#!/usr/bin/env bash
# Build the test guest from Debian packages: the kernel that
# linux-image-amd64 depends on today, busybox-static as init, the modules
# virtio-fs needs (in dependency order), our static workload program, and
# Debian's fio and stress-ng (the torture's standard clients) with every
# shared library they load and the dynamic loader.
#
# Usage: tests/guest/build-image.sh OUTDIR
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img, OUTDIR/initrd-clients.img and
# OUTDIR/image.info.  initrd-clients.img is initrd.img followed by a second
# cpio archive with fio, stress-ng and their libraries (about 110 MB
# unpacked, 45 MB compressed): only the torture boots it, so the other
# guests stay small and quick to boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:?usage: build-image.sh OUTDIR}
debs="$top/.cache/debs"
die() { printf 'guest image: %s\n' "$*" >&2; exit 1; }
say() { printf '[guest] %s\n' "$*"; }

# apt's lists may be older than the archive (a package the lists name has
# been replaced, and its file answers 404): on failure, update them once
# (as root) and try again.
apt_updated=
apt_refresh() {
    [ -z "$apt_updated" ] && [ "$(id -u)" = 0 ] || return 1
    apt_updated=1
    say "apt-get update (the package lists may be stale)"
    apt-get update -qq >/dev/null 2>&1
}
apt_download() {
    (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$@") ||
        { apt_refresh && (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$@"); } ||
        die "apt-get download $* failed: is Debian's archive reachable? (as root, 'apt-get update' first)"
}
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1
}

# The modules the guest needs; their dependencies are added in order.
want_modules="virtio_pci virtiofs"

mkdir -p "$out" "$debs"
kpkg=$(kernel_package)
[ -n "$kpkg" ] || { apt_refresh && kpkg=$(kernel_package); }
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package (as root, 'apt-get update' first)"
for p in "$kpkg" busybox-static; do
    if ! ls "$debs/${p}_"*.deb >/dev/null 2>&1; then
        say "downloading $p"
        apt_download "$p"
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

# fio and stress-ng with their shared libraries.  Nothing is installed on
# the host: the packages are downloaded and unpacked, and each library a
# binary needs (readelf's NEEDED) is looked up first in the packages
# unpacked so far, then in the direct Depends of the package that holds
# the binary (dpkg-shlibdeps puts every NEEDED library's package there).
# Only packages that provide a needed library are followed further, so the
# closure stays small (no python3, no mesa drivers, no ceph daemons).
# Libraries go flat into /lib/x86_64-linux-gnu, a system search path of
# Debian's ld.so; the loader itself is also at /lib64, the binaries' PT_INTERP.
# They form a tree of their own, croot, archived after the main one.
clients="fio stress-ng"
pkgs="$stage/pkgs"
croot="$stage/clients"
libdir="$croot/lib/x86_64-linux-gnu"
mkdir -p "$pkgs" "$libdir" "$croot/lib64" "$croot/usr/bin"
: > "$stage/libindex"
declare -A unpacked=() followed=()
fetch() {
    local p missing=()
    for p in "$@"; do
        ls "$debs/${p}_"*.deb >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "downloading ${missing[*]}"
        apt_download "${missing[@]}"
    fi
    for p in "$@"; do
        [ -n "${unpacked[$p]:-}" ] && continue
        unpacked[$p]=1
        dpkg-deb -x "$(ls "$debs/${p}_"*.deb | tail -n 1)" "$pkgs/$p"
        # index: soname, package, path in the package (libraries only)
        (cd "$pkgs/$p" && find . -path '*/x86_64-linux-gnu/*' -name '*.so*' \
                            \( -type f -o -type l \) 2>/dev/null) |
            while read -r f; do
                printf '%s %s %s\n' "${f##*/}" "$p" "${f#./}"
            done >> "$stage/libindex"
    done
}
# The direct Pre-Depends and Depends of a package, from its .deb (first
# alternative of each; versions and architecture qualifiers dropped)
depends_of() {
    dpkg-deb -f "$(ls "$debs/${1}_"*.deb | tail -n 1)" Pre-Depends Depends |
        sed 's/^[A-Za-z-]*: //' | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:.*//' |
        awk 'NF { print $1 }' | sort -u
}
lookup() {      # SONAME -> "PACKAGE PATH" or nothing
    awk -v s="$1" '$1 == s { print $2, $3; exit }' "$stage/libindex"
}
# Copy a file of a package into the image, following symlinks in the package
real_file() {   # PACKAGE PATH -> path on the host
    local f="$pkgs/$1/$2" t n=0
    while [ -L "$f" ] && [ $n -lt 10 ]; do
        t=$(readlink "$f")
        case "$t" in
        /*) f="$pkgs/$1$t" ;;
        *) f="$(dirname "$f")/$t" ;;
        esac
        n=$((n + 1))
    done
    [ -f "$f" ] || die "$2 of $1 is not a file"
    printf '%s' "$f"
}
fetch $clients
queue=()
for c in $clients; do
    f=$(cd "$pkgs/$c" && ls usr/bin/"$c")
    install -m 0755 "$(real_file "$c" "$f")" "$croot/usr/bin/$c"
    queue+=("$c $f")
done
while [ ${#queue[@]} -gt 0 ]; do
    read -r pkg f <<< "${queue[0]}"
    queue=("${queue[@]:1}")
    for so in $(readelf -d "$(real_file "$pkg" "$f")" |
                sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
        [ -e "$libdir/$so" ] && continue
        hit=$(lookup "$so")
        if [ -z "$hit" ] && [ -z "${followed[$pkg]:-}" ]; then
            followed[$pkg]=1
            # shellcheck disable=SC2046
            fetch $(depends_of "$pkg")
            hit=$(lookup "$so")
        fi
        [ -n "$hit" ] || die "$so (needed by $f of $pkg) is in none of $pkg's Depends"
        read -r q qf <<< "$hit"
        cp "$(real_file "$q" "$qf")" "$libdir/$so"
        queue+=("$q $qf")
    done
done
[ -e "$libdir/ld-linux-x86-64.so.2" ] || die "no ld-linux-x86-64.so.2 among the clients' libraries"
ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$croot/lib64/ld-linux-x86-64.so.2"
nlibs=$(ls "$libdir" | wc -l)

cp "$stage/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
(cd "$root" && find . | sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$out/initrd.img.tmp"
# The kernel unpacks concatenated archives one after the other
cp "$out/initrd.img.tmp" "$out/initrd-clients.img.tmp"
(cd "$croot" && find . | sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >> "$out/initrd-clients.img.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd-clients.img.tmp" "$out/initrd-clients.img"
mv "$out/initrd.img.tmp" "$out/initrd.img"
printf 'kernel=%s\nkver=%s\nmodules=%s\nclients=%s\n' "$kpkg" "$kver" "${order[*]}" \
    "$(for c in $clients; do basename "$(ls "$debs/${c}_"*.deb | tail -n 1)" .deb; done | tr "\n" " " | sed "s/ $//")" \
    > "$out/image.info"
say "kernel $kver, modules: ${order[*]}"
say "clients: $clients with $nlibs libraries from ${#unpacked[@]} packages"
say "wrote $out/vmlinuz, $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)) and $out/initrd-clients.img ($(du -h "$out/initrd-clients.img" | cut -f1))"
