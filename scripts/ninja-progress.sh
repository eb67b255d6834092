#!/usr/bin/env bash
# Run ninja, printing a progress line every 5% and every failure in full;
# the complete log goes to BUILDDIR/ninja.log.
set -uo pipefail
build=$1; shift
log="$build/ninja.log"
ninja -C "$build" "$@" 2>&1 | tee "$log" | awk '
    /^\[[0-9]+\/[0-9]+\]/ {
        split(substr($1, 2), a, "/"); pct = int(a[1] * 100 / a[2])
        if (pct >= next_pct || a[1] == a[2]) { printf "[build] %3d%% (%s)\n", pct, substr($1, 2, length($1) - 2); fflush(); next_pct = pct + 5 }
        next }
    /^FAILED|error:|^ninja: error/ { show = 1 }
    show { print; fflush() }'
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || echo "make build: ninja failed in $build (full log: $log)" >&2
exit "$rc"
