#!/usr/bin/env bash
# Add deb-src entries mirroring the machine's Debian 'deb' entries, so that
# 'apt-get source' reaches the same archive.  With SUITE arguments (e.g.
# sid, for the newest QEMU Debian serves), write instead one deb-src entry
# for those suites of the machine's Debian archive.  Writes one file and
# nothing else; only source indexes are added, so no binary package ever
# comes from another suite.
#
# Usage: add-deb-src.sh [SUITE...]
# APT_ETC (default /etc/apt) is for tests/workspace.
set -euo pipefail
etc=${APT_ETC:-/etc/apt}
suites="$*"
out=$etc/sources.list.d/qemu-reconnect-deb-src${suites:+-${suites// /-}}.sources
tmp=$(mktemp)
shopt -s nullglob
for f in "$etc"/sources.list.d/*.sources; do
    case "$f" in "$etc"/sources.list.d/qemu-reconnect-deb-src*) continue ;; esac
    # deb822 stanzas: keep those whose URIs are a Debian archive.
    awk -v RS= -v ORS='\n\n' '/URIs:[^\n]*debian/ && /Types:[^\n]*deb/ {
        sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" >> "$tmp"
done
for f in "$etc"/sources.list "$etc"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $0 ~ /debian/ {
        sub(/^deb /, ""); opts = ""
        if ($1 ~ /^\[/) { opts = $1; sub(/^\[[^]]*\] /, "") }
        printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $1, $2
        for (i = 3; i <= NF; i++) printf " %s", $i
        printf "\n\n" }' "$f" >> "$tmp"
done
if [ ! -s "$tmp" ]; then
    rm -f "$tmp"
    echo "add-deb-src: no Debian 'deb' entry found in $etc to mirror; add a deb-src entry for Debian's archive by hand" >&2
    exit 1
fi
if [ -n "$suites" ]; then
    # The first mirrored entry that is not the security archive gives the
    # archive's URI and key.
    awk -v RS= -v suites="$suites" '!/URIs:[^\n]*-security/ {
        uri = $0; sub(/.*URIs: */, "", uri); sub(/\n.*/, "", uri)
        key = ""
        if (match($0, /Signed-By:[^\n]*/)) key = substr($0, RSTART, RLENGTH) "\n"
        printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\n%s\n", uri, suites, key
        exit }' "$tmp" > "$tmp.suites"
    mv "$tmp.suites" "$tmp"
fi
install -m 0644 "$tmp" "$out"
rm -f "$tmp"
echo "add-deb-src: wrote $out"
