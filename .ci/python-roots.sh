#!/usr/bin/env bash
# Builds the root directory the Python tests run CPython 3.13, 3.14 and 3.15 in (as
# `chroot ROOT python3.X ...`): a Debian `sid` minbase with each interpreter and its `-dbg`
# package (the build-id debug file whose DWARF `pyro-python/tests/offsets_dwarf.rs` checks the
# offset table against). Nothing is cached across CI runs: the root is built fresh, once per run.
#
#   .ci/python-roots.sh [ROOT]   (default: $PYRO_PYTHON_ROOT, else /tmp/pyro-python-roots/sid)
#
# About 40 s and 1.4 GB here (measured 2026-12-01, deb.debian.org).
set -euo pipefail

root="${1:-${PYRO_PYTHON_ROOT:-/tmp/pyro-python-roots/sid}}"
mirror="${PYRO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
versions=(3.13 3.14 3.15)

if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

include=""
for v in "${versions[@]}"; do
    include+="python$v,python$v-dbg,"
done

rm -rf "$root"
mkdir -p "$(dirname "$root")"
start=$(date +%s)
if ! debootstrap --variant=minbase --include="${include%,}" sid "$root" "$mirror" >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    echo "python-roots.sh: debootstrap of sid failed (log: $root.log)" >&2
    exit 1
fi
echo "python-roots.sh: sid root in $root built in $(($(date +%s) - start)) s ($(du -sh "$root" | cut -f1))"

for v in "${versions[@]}"; do
    chroot "$root" "python$v" -c 'import sys; print("python-roots.sh:", sys.executable, sys.version.split()[0])'
done
