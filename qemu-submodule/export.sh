#!/usr/bin/env bash
# Write the commits of ./qemu since the base tag back to patches/ with
# stable names (git format-patch numbering, zero From-hash, no version
# signature) and regenerate patches/series.  The hand-written cover letter
# patches/0000-cover-letter.patch is kept.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tree="$top/qemu"
[ -d "$tree/.git" ] || { echo "make export-patches: ./qemu does not exist; run 'make qemu'" >&2; exit 1; }
if [ -n "$(git -C "$tree" status --porcelain --untracked-files=no)" ]; then
    echo "make export-patches: ./qemu has uncommitted changes; commit them first (git commit -s)" >&2
    exit 1
fi
git -C "$tree" rev-parse -q --verify base >/dev/null ||
    { echo "make export-patches: ./qemu has no 'base' tag; re-create it with 'make qemu'" >&2; exit 1; }
mkdir -p "$top/patches"
find "$top/patches" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' \
     ! -name '0000-cover-letter.patch' -delete
n=$(git -C "$tree" rev-list --count base..HEAD)
if [ "$n" -gt 0 ]; then
    git -C "$tree" format-patch -q --zero-commit --no-signature \
        --subject-prefix=PATCH -o "$top/patches" base..HEAD
fi
(cd "$top/patches" && ls [0-9][0-9][0-9][0-9]-*.patch 2>/dev/null |
     grep -v '^0000-cover-letter.patch$' || true) > "$top/patches/series"
# ./qemu now matches the queue: record that, so 'make qemu' leaves it alone.
stamp=$({ cat "$top/qemu-submodule/pin"; (cd "$top/patches" && xargs -r cat < series); } |
        sha256sum | cut -d' ' -f1)
git -C "$tree" config queue.stamp "$stamp"
git -C "$tree" config queue.head "$(git -C "$tree" rev-parse HEAD)"
echo "[export] $n patches written to patches/ (series regenerated); commit them in this repo"
