#!/usr/bin/env bash
# Write the commits of a QEMU tree since its base tag back to its queue
# with stable names (git format-patch numbering, zero From-hash, no
# version signature) and regenerate the queue's series file.  The
# hand-written cover letter 0000-cover-letter.patch is kept.
#
# Usage: qemu-submodule/export.sh [PINFILE]
#   qemu-submodule/pin (default): ./qemu -> patches/
#   qemu-submodule/pin-upstream:  ./qemu-upstream -> patches/upstream/
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
pinfile=${1:-$top/qemu-submodule/pin}
PIN_TREE=qemu
PIN_PATCHES=patches
# shellcheck source=pin
. "$pinfile"
tree="$top/$PIN_TREE"
patches="$top/$PIN_PATCHES"
target=export-patches${PIN_TREE#qemu}
die() { echo "make $target: $*" >&2; exit 1; }
[ -d "$tree/.git" ] || die "./$PIN_TREE does not exist; run 'make $PIN_TREE'"
if [ -n "$(git -C "$tree" status --porcelain --untracked-files=no)" ]; then
    die "./$PIN_TREE has uncommitted changes; commit them first (git commit -s)"
fi
git -C "$tree" rev-parse -q --verify base >/dev/null ||
    die "./$PIN_TREE has no 'base' tag; re-create it with 'make $PIN_TREE'"
mkdir -p "$patches"
find "$patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' \
     ! -name '0000-cover-letter.patch' -delete
n=$(git -C "$tree" rev-list --count base..HEAD)
if [ "$n" -gt 0 ]; then
    git -C "$tree" format-patch -q --zero-commit --no-signature \
        --subject-prefix=PATCH -o "$patches" base..HEAD
fi
(cd "$patches" && ls [0-9][0-9][0-9][0-9]-*.patch 2>/dev/null |
     grep -v '^0000-cover-letter.patch$' || true) > "$patches/series"
# The tree now matches the queue: record that, so 'make qemu' leaves it
# alone (the same stamp as fetch.sh's queue_stamp).
stamp=$({ cat "$pinfile"; (cd "$patches" && xargs -r cat < series); } |
        sha256sum | cut -d' ' -f1)
git -C "$tree" config queue.stamp "$stamp"
git -C "$tree" config queue.head "$(git -C "$tree" rev-parse HEAD)"
echo "[export] $n patches written to $PIN_PATCHES/ (series regenerated); commit them in this repo"
