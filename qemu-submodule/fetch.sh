#!/usr/bin/env bash
# Materialise a QEMU tree from a pin: Debian's qemu source package,
# unpacked with Debian's patches, committed as one base commit tagged
# "base", then the pin's queue applied with git am.
#
#   qemu-submodule/pin           QEMU 7.2 (Debian 12): ./qemu, patches/
#   qemu-submodule/pin-upstream  the newest QEMU Debian serves (sid):
#                                ./qemu-upstream, patches/upstream/
#
# Usage: qemu-submodule/fetch.sh [TOPDIR [PINFILE]]
#
# Re-running is cheap: if the tree already holds exactly the current queue,
# nothing happens.  If it holds work that is not in the queue (commits
# or uncommitted changes), it refuses to touch it.
set -euo pipefail

top=$(cd "${1:-$(dirname "$0")/..}" && pwd)
here="$top/qemu-submodule"
pinfile=${2:-$here/pin}
# Defaults for a pin that does not say (the 7.2 pin's values)
PIN_LINE=7.2
PIN_TREE=qemu
PIN_PATCHES=patches
PIN_SUITES=
PIN_HINT="point apt at bookworm"
# shellcheck source=pin
. "$pinfile"
tree="$top/$PIN_TREE"
patches="$top/$PIN_PATCHES"
cache="$top/.cache/src"
name=./$PIN_TREE
pin=qemu-submodule/${pinfile##*/}
export_target=export-patches${PIN_TREE#qemu}
# Versions of the pin's line: 1:7.2+dfsg-..., 1:10.2.2+ds-...
line_re="^1:${PIN_LINE//./\\.}[.+]"

say() { printf '[%s] %s\n' "$PIN_TREE" "$*"; }
die() { printf 'make %s: %s\n' "${PIN_TREE}" "$*" >&2; exit 1; }

# The patch files the series names, in order
queue_files() {
    local p
    [ -f "$patches/series" ] || return 0
    while read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        printf '%s\n' "$patches/$p"
    done < "$patches/series"
}

# Each of them must exist.  The loop runs in the main shell: die() in a
# subshell would not stop the script.
check_series() {
    local f
    while read -r f; do
        [ -f "$f" ] || die "$PIN_PATCHES/series names ${f##*/}, which is missing"
    done < <(queue_files)
}

# The versions of the source package that apt knows; empty when there is
# no deb-src entry (apt-cache then exits 100).
source_versions() {
    { apt-cache showsrc "$PIN_PACKAGE" 2>/dev/null || true; } | sed -n 's/^Version: //p'
}

# check_sum SHA256 FILE: FILE in the cache matches the pin.
check_sum() {
    local got
    got=$(sha256sum "$cache/$2" 2>/dev/null | cut -d' ' -f1)
    [ "$got" = "$1" ] ||
        die "checksum of $2 does not match $pin (got ${got:-no file}): remove .cache/src to download it again, or check the pin"
}

queue_stamp() {
    { cat "$pinfile"; queue_files | xargs -r cat; } | sha256sum | cut -d' ' -f1
}

check_series

# --- Is ./qemu already what the queue says? -------------------------------
if [ -d "$tree/.git" ]; then
    stamp=$(queue_stamp)
    have=$(git -C "$tree" config --get queue.stamp || true)
    applied=$(git -C "$tree" config --get queue.head || true)
    head=$(git -C "$tree" rev-parse HEAD)
    if [ "$have" = "$stamp" ] && [ "$applied" = "$head" ]; then
        say "$name is up to date with $PIN_PATCHES/ ($(git -C "$tree" rev-list --count base..HEAD) patches on base)"
        exit 0
    fi
    if [ -n "$(git -C "$tree" status --porcelain --untracked-files=no)" ]; then
        die "$name has uncommitted changes; commit them there and run 'make $export_target', or remove $name"
    fi
    if [ "$applied" != "$head" ]; then
        if [ "$have" = "$stamp" ]; then
            say "$name has commits not yet exported; run 'make $export_target' to write them to $PIN_PATCHES/"
            exit 0
        fi
        die "$name has commits that are not in $PIN_PATCHES/ and $PIN_PATCHES/ changed too; export or drop one side (make $export_target, or rm -rf $PIN_TREE)"
    fi
    say "$PIN_PATCHES/ changed: re-applying the queue on base"
    git -C "$tree" checkout -q --detach base
    git -C "$tree" branch -q -f queue base
    git -C "$tree" checkout -q queue
else
    # --- Fetch the pinned source package -----------------------------------
    command -v apt-get >/dev/null || die "apt-get not found: this needs a Debian 12 (bookworm) machine"
    command -v dpkg-source >/dev/null || die "dpkg-source not found: run 'make deps' (package dpkg-dev)"
    mkdir -p "$cache"
    # apt-cache exits 100 when no deb-src entry exists: that is the
    # question asked here, not an error (set -e and pipefail must not see it).
    srcs=$(source_versions)
    if ! printf '%s\n' "$srcs" | grep -qE "$line_re"; then
        [ "$(id -u)" = 0 ] ||
            die "no deb-src entry for Debian's archive${PIN_SUITES:+ ($PIN_SUITES)}, and not root to add one: run as root, or add 'Types: deb deb-src' to /etc/apt/sources.list.d/debian.sources and run 'apt-get update'"
        say "no deb-src entry${PIN_SUITES:+ for $PIN_SUITES}: adding one for the machine's Debian archive"
        # shellcheck disable=SC2086
        "$top/scripts/add-deb-src.sh" $PIN_SUITES >/dev/null ||
            die "could not add a deb-src entry (scripts/add-deb-src.sh failed); add 'Types: deb deb-src' for Debian's archive by hand"
        say "apt-get update"
        apt-get update -qq >"$cache/apt-update.log" 2>&1 ||
            die "apt-get update failed: is Debian's archive reachable? (log: .cache/src/apt-update.log)"
        srcs=$(source_versions)
        [ -n "$srcs" ] ||
            die "Debian's archive lists no '$PIN_PACKAGE' source package even with a deb-src entry; check /etc/apt/sources.list.d"
    fi
    version=$PIN_VERSION
    if ! printf '%s\n' "$srcs" | grep -qxF "$version"; then
        version=$(printf '%s\n' "$srcs" | grep -E "$line_re" | sort -V | tail -n 1 || true)
        [ -n "$version" ] ||
            die "Debian's archive offers no qemu $PIN_LINE source (it has: $(printf '%s\n' "$srcs" | sort -V | paste -sd' ')); the series needs $PIN_LINE: $PIN_HINT"
        say "pinned $PIN_VERSION has left the archive; using the newest $PIN_LINE revision, $version (update $pin)"
    fi
    upver=${version#*:}
    upver=${upver%-*}
    dsc="${PIN_PACKAGE}_${version#*:}.dsc"
    if [ ! -f "$cache/$dsc" ]; then
        say "downloading source package $PIN_PACKAGE=$version"
        (cd "$cache" && apt-get source -qq -o APT::Sandbox::User=root --download-only "$PIN_PACKAGE=$version") \
            >"$cache/apt-source.log" 2>&1 ||
            die "apt-get source $PIN_PACKAGE=$version failed: is Debian's archive reachable? (log: .cache/src/apt-source.log)"
    fi
    if [ "$version" = "$PIN_VERSION" ]; then
        check_sum "$PIN_SHA256_orig" "${PIN_PACKAGE}_${upver}.orig.tar.xz"
        check_sum "$PIN_SHA256_debian" "${dsc%.dsc}.debian.tar.xz"
        say "checksums match the pin"
    fi
    # dpkg-source checks every file against the .dsc's checksums (which
    # apt checked against the archive's signed index); the .dsc's own
    # signature is not checked, as that needs the debian-keyring package.
    # dpkg-source copies the tarballs next to the directory it unpacks
    # into: unpack in the cache, so that they never land beside ./qemu
    # (where 'git add' would find them), then move the tree into place.
    unpack="$cache/unpack"
    rm -rf "$unpack" "$tree.tmp"
    mkdir -p "$unpack"
    say "unpacking with dpkg-source (applies Debian's patches)"
    dpkg-source -q -x "$cache/$dsc" "$unpack/src" >"$cache/dpkg-source.log" 2>&1 ||
        { rm -rf "$unpack"; die "dpkg-source -x $dsc failed (log: .cache/src/dpkg-source.log); remove .cache/src to download it again"; }
    mv "$unpack/src" "$tree.tmp"
    rm -rf "$unpack"
    qver=$(cat "$tree.tmp/VERSION")
    case "$qver" in
    "$PIN_LINE".*) ;;
    *) rm -rf "$tree.tmp"; die "the unpacked tree is QEMU $qver, not $PIN_LINE.x; this series needs $PIN_LINE" ;;
    esac
    # Packaging is not part of the tree the series patches.
    rm -rf "$tree.tmp/debian" "$tree.tmp/.pc"
    mv "$tree.tmp" "$tree"

    say "committing the pristine tree as the base"
    export GIT_AUTHOR_NAME="Debian QEMU source" GIT_AUTHOR_EMAIL="pkg-qemu-devel@lists.alioth.debian.org"
    export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
    export GIT_AUTHOR_DATE="$PIN_COMMIT_DATE" GIT_COMMITTER_DATE="$PIN_COMMIT_DATE"
    git -C "$tree" init -q -b queue
    git -C "$tree" config core.autocrlf false
    git -C "$tree" add -A -f .
    git -C "$tree" commit -q -m "QEMU $qver as in Debian's qemu $version" \
        -m "Unpacked with dpkg-source -x (Debian's patches applied); debian/ removed."
    git -C "$tree" tag -f base >/dev/null
    unset GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL
    unset GIT_AUTHOR_DATE GIT_COMMITTER_DATE
fi

# --- Apply the queue ------------------------------------------------------
git -C "$tree" config user.name >/dev/null ||
    git -C "$tree" config user.name "$(git -C "$top" config user.name || echo 'QEMU developer')"
git -C "$tree" config user.email >/dev/null ||
    git -C "$tree" config user.email "$(git -C "$top" config user.email || echo 'developer@localhost')"
n=0
while read -r patch; do
    [ -n "$patch" ] || continue
    if ! git -C "$tree" am -q --keep-cr "$patch" >/dev/null 2>&1; then
        git -C "$tree" am --abort >/dev/null 2>&1 || true
        die "patch ${patch##*/} does not apply on $(git -C "$tree" describe --tags --always HEAD); fix it in $PIN_PATCHES/ (or rebase in $name and make $export_target)"
    fi
    n=$((n + 1))
done < <(queue_files)
git -C "$tree" config queue.stamp "$(queue_stamp)"
git -C "$tree" config queue.head "$(git -C "$tree" rev-parse HEAD)"
say "$name ready: base $(git -C "$tree" rev-parse --short base) + $n patches"
